// Package tracetest builds a chain of real kernel routers for path tests: a
// source namespace, n router namespaces with forwarding on, and a target
// namespace, joined by veth pairs. The kernel's own forwarding gives genuine
// ICMP Time Exceeded replies, and a small link MTU gives genuine
// Fragmentation Needed / Packet Too Big. A black hole is a veth pair whose
// receiving end has the smaller MTU: the sender forwards the big packet and
// the peer drops it without a word, as a misconfigured WAN link does.
package tracetest

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/probed/probed/internal/testutil"
)

// JumboMTU is the MTU of every chain link unless a test changes it: Direct
// Connect private VIFs carry 9001-byte frames.
const JumboMTU = 9001

// Chain is src — r1 — … — rN — dst. Link k joins node k and node k+1 (node
// 0 is src, node N+1 is dst) on 10.200.k.0/24 and fd00:200:k::/64; the left
// node has .1 / ::1, the right one .2 / ::2.
type Chain struct {
	t       testing.TB
	Nodes   []*testutil.NetNS // src, routers…, dst
	Src     *testutil.NetNS
	Dst     *testutil.NetNS
	Routers []*testutil.NetNS
}

// NewChain builds a chain with the given number of routers. It is removed
// when the test ends.
func NewChain(t testing.TB, routers int) *Chain {
	t.Helper()
	testutil.RequireRoot(t)
	c := &Chain{t: t}
	for i := 0; i < routers+2; i++ {
		n := testutil.NewNetNS(t)
		// No duplicate address detection: a tentative link-local
		// address would hold neighbour discovery (and so IPv6
		// forwarding) back for a second or two after the links come up.
		// Routers answer every probe: the default ICMP rate limits
		// would silence a hop after a burst of six.
		n.MustRun(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
			"net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
			"net.ipv4.icmp_msgs_per_sec=100000", "net.ipv4.icmp_msgs_burst=100000")
		c.Nodes = append(c.Nodes, n)
	}
	c.Src, c.Dst = c.Nodes[0], c.Nodes[routers+1]
	c.Routers = c.Nodes[1 : routers+1]
	for k := 0; k <= routers; k++ {
		l, r := c.Nodes[k], c.Nodes[k+1]
		ln, rn := c.ifname(k, true), c.ifname(k, false)
		l.MustRun(t, "ip", "link", "add", ln, "mtu", fmt.Sprint(JumboMTU), "type", "veth", "peer", "name", rn, "mtu", fmt.Sprint(JumboMTU), "netns", r.Name)
		l.MustRun(t, "ip", "addr", "add", fmt.Sprintf("10.200.%d.1/24", k), "dev", ln)
		r.MustRun(t, "ip", "addr", "add", fmt.Sprintf("10.200.%d.2/24", k), "dev", rn)
		l.MustRun(t, "ip", "addr", "add", fmt.Sprintf("fd00:200:%d::1/64", k), "dev", ln, "nodad")
		r.MustRun(t, "ip", "addr", "add", fmt.Sprintf("fd00:200:%d::2/64", k), "dev", rn, "nodad")
		l.MustRun(t, "ip", "link", "set", ln, "up")
		r.MustRun(t, "ip", "link", "set", rn, "up")
	}
	for j, n := range c.Nodes {
		switch {
		case j == 0:
			n.MustRun(t, "ip", "route", "add", "default", "via", "10.200.0.2")
			n.MustRun(t, "ip", "-6", "route", "add", "default", "via", "fd00:200:0::2")
		case j == routers+1:
			n.MustRun(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.200.%d.1", j-1))
			n.MustRun(t, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd00:200:%d::1", j-1))
		default:
			n.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
			n.MustRun(t, "ip", "route", "add", "default", "via", fmt.Sprintf("10.200.%d.2", j))
			n.MustRun(t, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("fd00:200:%d::2", j))
			if j > 1 {
				n.MustRun(t, "ip", "route", "add", "10.200.0.0/24", "via", fmt.Sprintf("10.200.%d.1", j-1))
				n.MustRun(t, "ip", "-6", "route", "add", "fd00:200:0::/64", "via", fmt.Sprintf("fd00:200:%d::1", j-1))
			}
		}
	}
	// IPv6 on a fresh link waits for the kernel's link watch (up to a
	// second) before it sends neighbour solicitations; wait until both
	// families carry a ping end to end so tests see a settled network.
	for _, fam := range []string{"ip4", "ip6"} {
		var out string
		var err error
		for i := 0; i < 20; i++ {
			if out, err = c.Src.Run("ping", "-c", "1", "-W", "1", c.DstAddr(fam).String()); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("chain %s: no ping to %s: %v: %s", fam, c.DstAddr(fam), err, out)
		}
	}
	return c
}

func (c *Chain) ifname(k int, left bool) string {
	if left {
		return fmt.Sprintf("l%d", k)
	}
	return fmt.Sprintf("r%d", k)
}

// DstAddr is the target's address in the given family ("ip4" or "ip6").
func (c *Chain) DstAddr(family string) netip.Addr {
	return c.addr(family, len(c.Nodes)-2, false)
}

// SrcAddr is the source's address.
func (c *Chain) SrcAddr(family string) netip.Addr { return c.addr(family, 0, true) }

// Hops is what a trace from src must report: each router's address on the
// link towards src (the kernel answers from there), then the target.
func (c *Chain) Hops(family string) []netip.Addr {
	var out []netip.Addr
	for k := 0; k < len(c.Nodes)-1; k++ {
		out = append(out, c.addr(family, k, false))
	}
	return out
}

func (c *Chain) addr(family string, link int, left bool) netip.Addr {
	host := 2
	if left {
		host = 1
	}
	if family == "ip6" {
		return netip.MustParseAddr(fmt.Sprintf("fd00:200:%d::%d", link, host))
	}
	return netip.MustParseAddr(fmt.Sprintf("10.200.%d.%d", link, host))
}

// SetMTU sets link k's MTU on both ends: the left node answers bigger DF
// packets with Fragmentation Needed / Packet Too Big.
func (c *Chain) SetMTU(k, mtu int) {
	c.Nodes[k].MustRun(c.t, "ip", "link", "set", c.ifname(k, true), "mtu", fmt.Sprint(mtu))
	c.Nodes[k+1].MustRun(c.t, "ip", "link", "set", c.ifname(k, false), "mtu", fmt.Sprint(mtu))
}

// SetBlackhole makes link k an MTU black hole: the left end keeps its
// (jumbo) MTU and forwards big packets, the right end's smaller MTU makes
// the veth drop them silently. Packets of up to mtu bytes still pass.
func (c *Chain) SetBlackhole(k, mtu int) {
	c.Nodes[k].MustRun(c.t, "ip", "link", "set", c.ifname(k, true), "mtu", fmt.Sprint(JumboMTU))
	// veth accepts VLAN_HLEN (4) bytes over the receiver's MTU (room for
	// a VLAN tag), so the cut-off sits 4 bytes lower.
	c.Nodes[k+1].MustRun(c.t, "ip", "link", "set", c.ifname(k, false), "mtu", fmt.Sprint(mtu-4))
}

// Silence makes router j (1-based) stop answering expired probes while it
// keeps forwarding: a policy rule blackholes the ICMP it generates itself
// (iif lo) towards the source. Forwarded replies of the target arrive on
// another interface and pass. (This kernel has no flower/gact tc modules
// and the image no nft, so a routing rule it is.)
func (c *Chain) Silence(j int, on bool) error {
	n := c.Nodes[j]
	op := "add"
	if !on {
		op = "del"
	}
	for _, args := range [][]string{
		{"ip", "rule", op, "iif", "lo", "ipproto", "icmp", "to", c.SrcAddr("ip4").String(), "blackhole"},
		{"ip", "-6", "rule", op, "iif", "lo", "ipproto", "ipv6-icmp", "to", c.SrcAddr("ip6").String(), "blackhole"},
	} {
		if out, err := n.Run(args...); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}
