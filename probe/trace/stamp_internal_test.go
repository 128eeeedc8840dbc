package trace

import (
	"context"
	"testing"
	"time"

	"github.com/probed/probed/probe/trace/tracetest"
)

// Every probe of every method and family gets the kernel's transmit
// timestamp: the copy looped back on the error queue (after the veth's
// Ethernet header) is matched to its probe.
func TestEveryProbeGetsATransmitTimestamp(t *testing.T) {
	c := tracetest.NewChain(t, 2)
	var tr *Tracer
	if err := c.Src.Do(func() (err error) { tr, err = New(0); return err }); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, fam := range []string{"ip4", "ip6"} {
		for _, m := range []string{ICMP, UDP, TCP} {
			sent, stamped := tr.PacketsSent(), tr.txStamped.Load()
			var p *Path
			err := c.Src.Do(func() (err error) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				p, err = tr.Trace(ctx, Target{Dst: c.DstAddr(fam), Method: m, ProbesPerHop: 2, Timeout: 500 * time.Millisecond, MaxTTL: 6})
				return err
			})
			if err != nil {
				t.Fatalf("%s/%s: %v", fam, m, err)
			}
			ds, dt := tr.PacketsSent()-sent, tr.txStamped.Load()-stamped
			if !p.Reached || ds == 0 || dt != ds {
				t.Errorf("%s/%s: %d probes sent, %d with a transmit timestamp (reached %v)", fam, m, ds, dt, p.Reached)
			}
		}
	}
}
