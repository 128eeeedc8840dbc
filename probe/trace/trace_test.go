package trace_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/probed/probed/probe/trace"
	"github.com/probed/probed/probe/trace/tracetest"
)

func addrs(p *trace.Path) []netip.Addr {
	var out []netip.Addr
	for _, h := range p.Hops {
		out = append(out, h.Addr)
	}
	return out
}

// traceIn runs one trace from the chain's source namespace.
func traceIn(t *testing.T, c *tracetest.Chain, tr *trace.Tracer, tg trace.Target) *trace.Path {
	t.Helper()
	var p *trace.Path
	err := c.Src.Do(func() error {
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p, err = tr.Trace(ctx, tg)
		return err
	})
	if err != nil {
		t.Fatalf("trace %s %s: %v", tg.Method, tg.Dst, err)
	}
	return p
}

// Every method and family reports the kernel routers' addresses in order,
// ending with the target.
func TestTraceKernelRouters(t *testing.T) {
	c := tracetest.NewChain(t, 3)
	var tr *trace.Tracer
	if err := c.Src.Do(func() (err error) { tr, err = trace.New(0); return err }); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, fam := range []string{"ip4", "ip6"} {
		for _, m := range []string{trace.ICMP, trace.UDP, trace.TCP} {
			t.Run(fam+"/"+m, func(t *testing.T) {
				p := traceIn(t, c, tr, trace.Target{Dst: c.DstAddr(fam), Method: m, ProbesPerHop: 3, Timeout: 500 * time.Millisecond, MaxTTL: 10})
				want := c.Hops(fam)
				if got := addrs(p); !slices.Equal(got, want) {
					t.Fatalf("hops = %v, want %v", got, want)
				}
				if !p.Reached {
					t.Fatal("target not reached")
				}
				for _, h := range p.Hops {
					if h.Received != 3 || h.Sent != 3 || h.Loss() != 0 {
						t.Errorf("hop %d: sent %d received %d, want 3/3", h.TTL, h.Sent, h.Received)
					}
					if h.RTT() <= 0 || h.RTT() > 500*time.Millisecond {
						t.Errorf("hop %d: rtt %v out of range", h.TTL, h.RTT())
					}
				}
				// The window stops sending soon after the target answers.
				if p.Sent > 3*len(want)+3*3 {
					t.Errorf("sent %d probes for a %d-hop path", p.Sent, len(want))
				}
			})
		}
	}
}

// A router that forwards but does not answer shows as a silent hop in the
// middle of an otherwise complete path.
func TestTraceSilentHop(t *testing.T) {
	c := tracetest.NewChain(t, 3)
	if err := c.Silence(2, true); err != nil {
		t.Fatal(err)
	}
	var tr *trace.Tracer
	if err := c.Src.Do(func() (err error) { tr, err = trace.New(0); return err }); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, fam := range []string{"ip4", "ip6"} {
		p := traceIn(t, c, tr, trace.Target{Dst: c.DstAddr(fam), Method: trace.UDP, ProbesPerHop: 2, Timeout: 300 * time.Millisecond, MaxTTL: 10})
		want := c.Hops(fam)
		want[1] = netip.Addr{}
		if got := addrs(p); !slices.Equal(got, want) || !p.Reached || p.Hops[1].Received != 0 || p.Hops[1].Loss() != 1 {
			t.Errorf("%s: hops = %v (reached %v), want %v with hop 2 silent", fam, got, p.Reached, want)
		}
	}
}
