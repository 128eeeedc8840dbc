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

// interface: sends leave through the named device: through the chain's link
// the path is complete, through a dead-end device (a veth looping back into
// the same namespace, which does not forward) nothing answers.
func TestTraceInterface(t *testing.T) {
	c := tracetest.NewChain(t, 1)
	c.Src.MustRun(t, "ip", "link", "add", "dead0", "type", "veth", "peer", "name", "dead1")
	c.Src.MustRun(t, "ip", "link", "set", "dead1", "up")
	c.Src.MustRun(t, "ip", "addr", "add", "10.201.0.1/24", "dev", "dead0")
	c.Src.MustRun(t, "ip", "addr", "add", "fd00:201::1/64", "dev", "dead0", "nodad")
	c.Src.MustRun(t, "ip", "link", "set", "dead0", "up")
	var tr *trace.Tracer
	if err := c.Src.Do(func() (err error) { tr, err = trace.New(0); return err }); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, fam := range []string{"ip4", "ip6"} {
		tg := trace.Target{Dst: c.DstAddr(fam), Interface: "l0", ProbesPerHop: 1, Timeout: 300 * time.Millisecond, MaxTTL: 4}
		if p := traceIn(t, c, tr, tg); !slices.Equal(addrs(p), c.Hops(fam)) || !p.Reached {
			t.Errorf("%s via l0: hops %v, want %v", fam, addrs(p), c.Hops(fam))
		}
		// No route there: IPv6 says so at once, IPv4 assumes the
		// target is on the link and hears nothing.
		tg.Interface = "dead0"
		var p *trace.Path
		err := c.Src.Do(func() (err error) { p, err = tr.Trace(context.Background(), tg); return err })
		if err == nil && (len(p.Hops) != 0 || p.Reached) {
			t.Errorf("%s via dead0: hops %v reached %v, want nothing", fam, addrs(p), p.Reached)
		}
	}
}
