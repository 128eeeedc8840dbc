package stamp

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/probed/probed/internal/netlab"
)

// TestNetlabAgents runs a STAMP session between two site agents across the
// WAN emulator (internal/netlab): real addresses end to end, the
// emulator's loss, delay, hops and DSCP re-marking on one direction only.
func TestNetlabAgents(t *testing.T) {
	topo, err := netlab.DefaultTopology().Subset("us-east", "us-central")
	if err != nil {
		t.Fatal(err)
	}
	topo.Seed = 8972
	lab := netlab.StartT(t, topo)
	east, central := lab.Site("us-east"), lab.Site("us-central")
	af21 := uint8(18)
	const (
		fwdDelay = 15 * time.Millisecond
		revDelay = 5 * time.Millisecond
		fwdLoss  = 0.05
	)
	var hops int
	if err := lab.UpdatePath("us-east", "us-central", netlab.PathSiteLink, func(p *netlab.PathParams) {
		p.Delay, p.Jitter, p.Loss, p.DSCP = fwdDelay, 0, fwdLoss, &af21
		for _, h := range p.Hops {
			if h.Is4() {
				hops++
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := lab.UpdatePath("us-central", "us-east", netlab.PathSiteLink, func(p *netlab.PathParams) {
		p.Delay, p.Jitter, p.Loss, p.DSCP = revDelay, 0, 0, nil
	}); err != nil {
		t.Fatal(err)
	}

	// The reflector on us-central's agent address answers the mesh's
	// us-east addresses only.
	refl, err := NewReflector(ReflectorConfig{Allow: allow(t, "10.79.1.1", "10.77.1.1"), Clock: FixedClock{Synced: true, MaxErr: 50 * time.Microsecond}})
	if err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := central.Do(func() error {
		conn, err = Listen(context.Background(), "udp4", "10.79.2.1:862")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go refl.Serve(ctx, conn)

	rec := newRecorder()
	s, err := NewSender(SenderConfig{Target: "10.79.2.1", Source: "10.79.1.1", TOS: 0xb8, Interval: 2 * time.Millisecond,
		Timeout: 300 * time.Millisecond, Clock: FixedClock{Synced: true, MaxErr: 50 * time.Microsecond}, Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	if err := east.Do(func() error { return s.Open(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	if err := s.Run(sctx); err != nil {
		t.Fatal(err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	resolved := rec.replies + rec.fwd + rec.rev + rec.unattributed
	lo, hi := binomial99(resolved, fwdLoss)
	k := max(len(rec.fwdOWD)-200, 0)
	fo, ro := median(rec.fwdOWD[k:]), median(rec.revOWD[k:])
	t.Logf("sent %d, replies %d, lost forward %d (99.9%% interval [%.0f, %.0f]) reverse %d; one-way delay medians forward %v reverse %v; RTT median %v; reflector saw TTL %d (%d hops); DSCP sent 46, reflector got %d, remarked forward %d/%d reverse %d",
		rec.sent, rec.replies, rec.fwd, lo, hi, rec.rev, fo, ro, median(rec.rtts), rec.last.SenderTTL, hops, rec.last.ReflectorDSCP, rec.fwdRemarked, rec.replies, rec.revRemarked)
	if float64(rec.fwd) < lo || float64(rec.fwd) > hi {
		t.Errorf("forward loss %d of %d outside [%.0f, %.0f]", rec.fwd, resolved, lo, hi)
	}
	if rec.rev != 0 {
		t.Errorf("%d losses blamed on the lossless reverse path", rec.rev)
	}
	// The emulator's delay error is well under 1 ms (its own benchmark);
	// 3 ms covers Go timer and scheduling noise on a shared 2-core machine.
	const tol = 3 * time.Millisecond
	if fo < fwdDelay || fo > fwdDelay+tol || ro < revDelay || ro > revDelay+tol {
		t.Errorf("one-way delays %v / %v, want %v / %v (+%v)", fo, ro, fwdDelay, revDelay, tol)
	}
	if rec.fwdRemarked != rec.replies || rec.revRemarked != 0 || rec.last.ReflectorDSCP != af21 {
		t.Errorf("DSCP: forward remarked %d of %d, reverse %d, reflector saw %d", rec.fwdRemarked, rec.replies, rec.revRemarked, rec.last.ReflectorDSCP)
	}
	if int(rec.last.SenderTTL) != 255-hops {
		t.Errorf("reflector saw TTL %d, want %d after %d hops", rec.last.SenderTTL, 255-hops, hops)
	}
}
