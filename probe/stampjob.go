package probe

import (
	"fmt"
	"net/netip"

	"github.com/probed/probed/probe/stamp"
)

// stampJob is one STAMP session: a socket connected to the reflector,
// opened when the job is bound to an address and sending one test packet
// per slot. A new address, or a re-created interface, opens a new session.
type stampJob struct {
	e   *Engine
	obs stamp.Observer
}

func (j *stampJob) bind(t *target, ip netip.Addr) (*binding, error) {
	s := t.spec
	ifindex := 0
	if s.Interface != "" {
		i, err := j.e.socks.InterfaceIndex(s.Interface)
		if err != nil {
			return nil, fmt.Errorf("interface %s: %w", s.Interface, err)
		}
		ifindex = i
	}
	mode, key := stamp.Unauthenticated, (*stamp.Key)(nil)
	if s.STAMPOpts.Key != nil {
		k, err := stamp.NewKey(s.STAMPOpts.Key)
		if err != nil {
			return nil, fmt.Errorf("STAMP key: %w", err)
		}
		mode, key = stamp.Authenticated, k
	}
	sess, err := j.e.socks.Session(j.e.life, stamp.SenderConfig{
		Target: s.Target, Addr: ip, Port: s.Port, Family: s.Family, Source: s.Source, Interface: s.Interface,
		TOS: s.TOS, Interval: s.Interval, Timeout: s.Timeout, Size: s.Size,
		Mode: mode, Key: key, VariationWindow: s.STAMPOpts.Window, Observer: j.obs,
	})
	if err != nil {
		return nil, err
	}
	return &binding{ip: ip, sess: sess, ifindex: ifindex}, nil
}

func (j *stampJob) unbind(_ *target, b *binding) { _ = b.sess.Close() }

func (j *stampJob) fire(_ *target, b *binding) { b.sess.Send() }

// unsent counts the slot as an error of the session (reason resolve or bind).
func (j *stampJob) unsent(_ *target, r Reason) { j.obs.Error(r.String()) }

func (j *stampJob) stop(*target) {}
