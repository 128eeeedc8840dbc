package pmtu_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
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

func searchTo(t *testing.T, c *tracetest.Chain, p *pmtu.Prober, dst netip.Addr) pmtu.Result {
	t.Helper()
	var r pmtu.Result
	err := c.Src.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		r, err = p.Search(ctx, pmtu.Target{Dst: dst, Timeout: 200 * time.Millisecond, Retries: 1})
		return err
	})
	if err != nil {
		t.Fatalf("search %s: %v", dst, err)
	}
	return r
}

// IPv4 paths below 1280 bytes are measured, down to the 68 bytes every
// link must carry (RFC 791): a router's Fragmentation Needed names the
// size and one more probe confirms it; a black hole below 1280 is found by
// searching down from the least MTU. A report equal to a size already
// known to fit (a 1280-byte link) ends the search at once: 2 probes.
func TestSearchBelow1280(t *testing.T) {
	c := tracetest.NewChain(t, 2)
	var p *pmtu.Prober
	if err := c.Src.Do(func() (err error) { p, err = pmtu.New(); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// IPv6 first: a link below 1280 bytes loses its IPv6 addresses.
	c.SetMTU(1, 1280)
	for _, fam := range []string{"ip6", "ip4"} {
		r := search(t, c, p, fam, "")
		t.Logf("link 1280 %s: %+v", fam, r)
		if !r.Reached || r.MTU != 1280 || r.Blackhole || r.Probes > 2 {
			t.Errorf("link 1280 %s: MTU %d blackhole %v reached %v in %d probes, want 1280 in at most 2", fam, r.MTU, r.Blackhole, r.Reached, r.Probes)
		}
	}
	for _, mtu := range []int{1000, 576, 68} {
		c.SetMTU(1, mtu)
		r := search(t, c, p, "ip4", "")
		t.Logf("link %d: %+v", mtu, r)
		if !r.Reached || r.MTU != mtu || r.Blackhole || r.Reported != mtu || r.Probes > 2 {
			t.Errorf("link %d: MTU %d blackhole %v reached %v reported %d in %d probes, want %d reported, in at most 2 probes",
				mtu, r.MTU, r.Blackhole, r.Reached, r.Reported, r.Probes, mtu)
		}
	}
	c.SetMTU(1, tracetest.JumboMTU)
	c.SetBlackhole(1, 1000)
	r := search(t, c, p, "ip4", "")
	t.Logf("black hole 1000: %+v", r)
	if !r.Reached || r.MTU != 1000 || !r.Blackhole {
		t.Errorf("black hole at 1000: MTU %d blackhole %v reached %v, want 1000 and a black hole", r.MTU, r.Blackhole, r.Reached)
	}
	// Nothing answers at all: not reached, no MTU.
	c.Dst.MustRun(t, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
	if r := search(t, c, p, "ip4", ""); r.Reached || r.MTU != 0 {
		t.Errorf("nothing passes: %+v, want not reached", r)
	}
}

// A router older than RFC 1191 answers Fragmentation Needed with next-hop
// MTU 0: the search walks the plateau table (RFC 1191 section 7) and
// confirms the plateau that fits with one probe a byte larger, so a link
// on a plateau costs a handful of probes and one off the table is still
// found exactly.
func TestSearchOldRouterPlateaus(t *testing.T) {
	ns := testutil.NewNetNS(t)
	r := tracetest.NewOldRouter(t, ns, 1500)
	var p *pmtu.Prober
	if err := ns.Do(func() (err error) { p, err = pmtu.New(); return err }); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := &tracetest.Chain{Src: ns}
	for _, tc := range []struct {
		mtu, maxProbes int
	}{
		{1500, 8},  // 1280, 9001, 8500, 8166, 4352, 2002, 1500, 1501
		{1492, 9},  // … 1500, 1492, 1493
		{8166, 5},  // 1280, 9001, 8500, 8166, 8167
		{1000, 16}, // 1280, 1006, 576, 577, then binary search up to 1005
		{576, 4},   // 1280, 1006, 576, 577
	} {
		r.SetMTU(tc.mtu)
		res := searchTo(t, c, p, r.Dst)
		t.Logf("old router, link %d: %+v", tc.mtu, res)
		if !res.Reached || res.MTU != tc.mtu || res.Blackhole || res.Reported != 0 || res.Probes > tc.maxProbes {
			t.Errorf("old router, link %d: MTU %d blackhole %v reached %v reported %d in %d probes, want %d in at most %d probes",
				tc.mtu, res.MTU, res.Blackhole, res.Reached, res.Reported, res.Probes, tc.mtu, tc.maxProbes)
		}
	}
	if r.Refused.Load() == 0 {
		t.Error("the old router refused nothing")
	}
}
