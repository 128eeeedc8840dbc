package pmtu_test

import (
	"context"
	"testing"
	"time"

	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/trace/tracetest"
)

func search(t *testing.T, c *tracetest.Chain, p *pmtu.Prober, fam, iface string) pmtu.Result {
	t.Helper()
	var r pmtu.Result
	err := c.Src.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		// 200 ms is ample on a veth chain (replies take microseconds)
		// and keeps a black-hole search (every silent size waits
		// (retries+1) timeouts) to a few seconds.
		r, err = p.Search(ctx, pmtu.Target{Dst: c.DstAddr(fam), Interface: iface, Timeout: 200 * time.Millisecond, Retries: 1})
		return err
	})
	if err != nil {
		t.Fatalf("search %s: %v", c.DstAddr(fam), err)
	}
	return r
}

// The MTU is found exactly, on a path that reports its limit and on one
// that drops big packets silently, and the two are told apart.
func TestSearchKernelRouters(t *testing.T) {
	c := tracetest.NewChain(t, 2)
	var p *pmtu.Prober
	if err := c.Src.Do(func() (err error) { p, err = pmtu.New(); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cases := []struct {
		name      string
		set       func()
		mtu       int
		blackhole bool
	}{
		{"jumbo", func() {}, 9001, false},
		{"frag-needed-1500", func() { c.SetMTU(1, 1500) }, 1500, false},
		{"frag-needed-8500", func() { c.SetMTU(1, 8500) }, 8500, false},
		{"local-interface-4000", func() { c.SetMTU(1, tracetest.JumboMTU); c.SetMTU(0, 4000) }, 4000, false},
		{"blackhole-1500", func() { c.SetMTU(0, tracetest.JumboMTU); c.SetBlackhole(1, 1500) }, 1500, true},
		{"blackhole-8500", func() { c.SetBlackhole(1, 8500) }, 8500, true},
	}
	for _, tc := range cases {
		tc.set()
		for _, fam := range []string{"ip4", "ip6"} {
			t.Run(tc.name+"/"+fam, func(t *testing.T) {
				r := search(t, c, p, fam, "")
				t.Logf("%+v", r)
				if !r.Reached || r.MTU != tc.mtu || r.Blackhole != tc.blackhole {
					t.Errorf("got MTU %d blackhole %v (reached %v), want MTU %d blackhole %v", r.MTU, r.Blackhole, r.Reached, tc.mtu, tc.blackhole)
				}
			})
		}
	}
	// The same through a named interface (IP_PKTINFO / IPV6_PKTINFO).
	c.SetMTU(0, tracetest.JumboMTU)
	c.SetMTU(1, 1500)
	for _, fam := range []string{"ip4", "ip6"} {
		if r := search(t, c, p, fam, "l0"); r.MTU != 1500 || r.Blackhole {
			t.Errorf("%s via l0: %+v, want MTU 1500", fam, r)
		}
	}
}
