package netlab

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

var (
	e4, f4 = netip.MustParseAddr("10.77.1.1"), netip.MustParseAddr("10.77.7.1")
	e6, f6 = netip.MustParseAddr("fd77:1::1"), netip.MustParseAddr("fd77:7::1")
)

func mustFlow(t *testing.T, b []byte) Flow {
	t.Helper()
	f, ok := PacketFlow(b)
	if !ok {
		t.Fatalf("not an IP packet: % x", b[:min(len(b), 40)])
	}
	return f
}

// reply turns an echo request into its reply (addresses swapped, type
// changed, checksum fixed), as the target's kernel answers.
func reply(req []byte) []byte {
	h, _ := parseIP(req)
	l4 := append([]byte(nil), req[h.hdrLen:]...)
	l4[0] = 0
	if h.v6 {
		l4[0] = 129
	}
	proto := uint8(protoICMP)
	if h.v6 {
		proto = protoICMPv6
	}
	return ipPacket(h.dst, h.src, proto, 64, l4, 2)
}

func TestPacketFlow(t *testing.T) {
	for _, fam := range []struct{ src, dst netip.Addr }{{e4, f4}, {e6, f6}} {
		src, dst := fam.src, fam.dst
		t.Run(fmt.Sprintf("v6=%v", dst.Is6()), func(t *testing.T) {
			// Echo: the identifier is the flow; sequence and checksum are not.
			want := EchoFlow(src, dst, 7)
			for seq := range uint16(4) {
				req := echoPacket(src, dst, 7, seq, 64, 56)
				if f := mustFlow(t, req); f != want {
					t.Errorf("echo seq %d: flow %+v, want %+v", seq, f, want)
				}
				rep := reply(req)
				if f := mustFlow(t, rep); f != EchoFlow(dst, src, 7) || f.Hash() != want.Hash() {
					t.Errorf("echo reply seq %d: flow %+v hash %x, want the request's hash %x", seq, f, f.Hash(), want.Hash())
				}
			}
			if EchoFlow(src, dst, 8).Hash() == want.Hash() {
				t.Error("identifiers 7 and 8 hash alike")
			}
			u := udpPacket(src, 40001, dst, 33434, 64, 20)
			if f := mustFlow(t, u); f != UDPFlow(src, 40001, dst, 33434) {
				t.Errorf("UDP flow %+v", f)
			}
			syn := synPacket(src, 40001, dst, 443, 12345, 64)
			if f := mustFlow(t, syn); f != TCPFlow(src, 40001, dst, 443) {
				t.Errorf("TCP flow %+v", f)
			}
			if TCPFlow(src, 40001, dst, 443).Hash() == UDPFlow(src, 40001, dst, 443).Hash() {
				t.Error("TCP and UDP with the same ports hash alike")
			}
			// An ICMP error hashes as the packet it quotes, so it follows
			// the flow (Time Exceeded of a hop, Port Unreachable of the
			// target, Packet Too Big).
			for _, orig := range [][]byte{u, syn, echoPacket(src, dst, 9, 1, 1, 56)} {
				h, _ := parseIP(orig)
				typ := uint8(icmp4TimeExceeded)
				if h.v6 {
					typ = icmp6TimeExceeded
				}
				hop := netip.MustParseAddr("10.90.17.1")
				if h.v6 {
					hop = netip.MustParseAddr("fd90:1:7::1")
				}
				te := icmpError(&h, orig, hop, typ, 0, 0, 64)
				of, ef := mustFlow(t, orig), mustFlow(t, te)
				if ef != of || ef.Hash() != of.Hash() {
					t.Errorf("Time Exceeded quoting %+v: flow %+v", of, ef)
				}
				// The target's own error, from dst back to src.
				hd := h
				hd.src = h.src
				pu := icmpError(&hd, orig, dst, 3, 3, 0, 64)
				if h.v6 {
					pu = icmpError(&hd, orig, dst, 1, 4, 0, 64)
				}
				if f := mustFlow(t, pu); f.Hash() != of.Hash() {
					t.Errorf("Port Unreachable quoting %+v: flow %+v, another hash", of, f)
				}
			}
		})
	}
	// A later IPv4 fragment has no ports: only addresses and protocol.
	frag := udpPacket(e4, 40001, f4, 33434, 64, 20)
	binary.BigEndian.PutUint16(frag[6:], 185) // offset 185*8, no DF
	if f := mustFlow(t, frag); f != (Flow{Src: e4, Dst: f4, Proto: protoUDP}) {
		t.Errorf("later fragment: %+v", f)
	}
	if _, ok := PacketFlow([]byte{0x45, 0}); ok {
		t.Error("a 2-byte packet parsed")
	}
}

// TestFlowHashSpread checks what the coverage math in docs/ecmp.md
// assumes: the member index of distinct flows is uniform. 64,000 flows
// (16,000 each of UDP source ports, TCP source ports, ICMP and ICMPv6
// identifiers) over 4 and 16 members; the chi-square statistic must stay
// below its 99.99% quantile. The flows are fixed, so the result is too.
func TestFlowHashSpread(t *testing.T) {
	var flows []Flow
	for i := range 16000 {
		p := uint16(20000 + i)
		flows = append(flows, UDPFlow(e4, p, f4, 33434), TCPFlow(e4, p, f4, 443), EchoFlow(e4, f4, p), EchoFlow(e6, f6, p))
	}
	for _, m := range []struct {
		n    int
		crit float64 // chi-square 99.99% quantile, n-1 degrees of freedom
	}{{4, 21.11}, {16, 44.26}} {
		counts := make([]float64, m.n)
		for _, f := range flows {
			counts[f.Member(m.n)]++
		}
		exp := float64(len(flows)) / float64(m.n)
		var chi float64
		for _, c := range counts {
			chi += (c - exp) * (c - exp) / exp
		}
		t.Logf("%d members: counts %v, chi-square %.1f (99.99%% quantile %.1f)", m.n, counts, chi, m.crit)
		if chi > m.crit {
			t.Errorf("%d members: chi-square %.1f above %.1f: the hash does not spread flows evenly", m.n, chi, m.crit)
		}
	}
	// Symmetric: a flow and its reverse hash alike; nothing else collides
	// systematically.
	r := rand.New(rand.NewPCG(1, 1))
	for range 1000 {
		a := netip.AddrFrom4([4]byte{10, 77, byte(r.IntN(8)), byte(r.IntN(256))})
		b := netip.AddrFrom4([4]byte{10, 77, byte(r.IntN(8)), byte(r.IntN(256))})
		sp, dp := uint16(r.Uint32()), uint16(r.Uint32())
		f, rev := UDPFlow(a, sp, b, dp), UDPFlow(b, dp, a, sp)
		if f.Hash() != rev.Hash() {
			t.Fatalf("%+v and its reverse hash differently", f)
		}
	}
}

// memberPath builds 4 members with distinct hops (three per family, the
// middle one per member: 10.90.17.1x / fd90:1:7::1x) and extra delays
// 0, 1, 2, 7 ms.
func memberPath(delay time.Duration) PathParams {
	p := PathParams{Delay: delay}
	for i, extra := range []time.Duration{0, 1, 2, 7} {
		p.Members = append(p.Members, MemberParams{Delay: extra * time.Millisecond, Hops: []netip.Addr{
			netip.MustParseAddr("10.90.17.1"), netip.MustParseAddr("fd90:1:7::1"),
			netip.AddrFrom4([4]byte{10, 90, 17, byte(10 + i)}), netip.MustParseAddr(fmt.Sprintf("fd90:1:7::1%d", i)),
			netip.MustParseAddr("10.90.17.3"), netip.MustParseAddr("fd90:1:7::3"),
		}})
	}
	return p
}

// TestForwardMembers drives forward directly (no namespaces, no root) and
// checks what it queued: each flow's packets, echo or TTL-limited, take
// the member its hash selects; Time Exceeded comes from that member's hop
// after the member's round trip (the return leg on the member of the same
// index, the hash being symmetric); members' loss and down count on the
// member and on the path.
func TestForwardMembers(t *testing.T) {
	l := fakeLab(t)
	east, fra := l.sites[0], l.sites[1]
	const fwd, back = 40 * time.Millisecond, 30 * time.Millisecond
	p := memberPath(fwd)
	if err := l.SetLink("us-east", "eu-frankfurt", PathSiteLink, p); err != nil {
		t.Fatal(err)
	}
	if err := l.UpdatePath("eu-frankfurt", "us-east", PathSiteLink, func(p *PathParams) { p.Delay = back }); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	var want [4]MemberStats
	for _, fam := range []struct{ src, dst netip.Addr }{{e4, f4}, {e6, f6}} {
		for flow := range 48 {
			var pkt func(ttl int, seq uint16) []byte
			var f Flow
			switch flow % 3 {
			case 0:
				f = EchoFlow(fam.src, fam.dst, uint16(1000+flow))
				pkt = func(ttl int, seq uint16) []byte { return echoPacket(fam.src, fam.dst, f.SrcPort, seq, ttl, 56) }
			case 1:
				f = UDPFlow(fam.src, uint16(40000+flow), fam.dst, 33434)
				pkt = func(ttl int, _ uint16) []byte { return udpPacket(fam.src, f.SrcPort, fam.dst, 33434, ttl, 20) }
			default:
				f = TCPFlow(fam.src, uint16(40000+flow), fam.dst, 443)
				pkt = func(ttl int, seq uint16) []byte { return synPacket(fam.src, f.SrcPort, fam.dst, 443, uint32(seq), ttl) }
			}
			m := f.Member(4)
			mp := p.Members[m]
			for ttl := 1; ttl <= 4; ttl++ {
				l.forward(east, rng, pkt(ttl, uint16(ttl)), 0)
				want[m].Packets++
				if ttl == 4 {
					want[m].Delivered++
					got := popAll(fra.out)
					if len(got) != 1 || got[0].due != int64(fwd+mp.Delay) {
						t.Fatalf("%+v (member %d): delivered %d packets, due %v, want one at %v", f, m, len(got), got, fwd+mp.Delay)
					}
					if gf := mustFlow(t, got[0].b); gf != f {
						t.Errorf("delivered flow %+v, want %+v", gf, f)
					}
					continue
				}
				want[m].TTLExpired++
				got := popAll(east.out)
				if len(got) != 1 {
					t.Fatalf("%+v ttl %d: %d answers queued", f, ttl, len(got))
				}
				from := netip.AddrFrom16([16]byte(got[0].b[8:24]))
				if fam.dst.Is4() {
					from = netip.AddrFrom4([4]byte(got[0].b[12:16]))
				}
				hop := familyHop(mp.Hops, fam.dst.Is6(), ttl)
				// Hop k of 3 sits at k/4 of the member's round trip; the
				// return leg is the reverse path's member of the same index.
				due := int64(fwd+mp.Delay+back+mp.Delay) * int64(ttl) / 4
				if from != hop || got[0].due != due {
					t.Errorf("%+v (member %d) ttl %d: Time Exceeded from %v due %v, want from %v due %v", f, m, ttl, from, time.Duration(got[0].due), hop, time.Duration(due))
				}
				if ef := mustFlow(t, got[0].b); ef.Hash() != f.Hash() {
					t.Errorf("the Time Exceeded of %+v hashes as %+v", f, ef)
				}
			}
		}
	}
	ms, err := l.MemberStats("us-east", "eu-frankfurt", PathSiteLink)
	if err != nil || len(ms) != 4 {
		t.Fatalf("member stats %v %v", ms, err)
	}
	for i := range ms {
		if ms[i] != want[i] {
			t.Errorf("member %d: counters %+v, want %+v", i, ms[i], want[i])
		}
		if want[i].Packets == 0 {
			t.Errorf("member %d got no flow of 96", i)
		}
	}

	// Loss and down per member: member 1 loses everything, member 3 is
	// down; the others lose nothing.
	if err := l.UpdatePath("us-east", "eu-frankfurt", PathSiteLink, func(p *PathParams) {
		p.Members[1].Loss = 1
		p.Members[3].Down = true
	}); err != nil {
		t.Fatal(err)
	}
	before, _ := l.MemberStats("us-east", "eu-frankfurt", PathSiteLink)
	pathBefore, _ := l.Stats("us-east", "eu-frankfurt", PathSiteLink)
	var sent [4]uint64
	for port := range uint16(200) {
		f := UDPFlow(e4, 50000+port, f4, 9)
		sent[f.Member(4)]++
		l.forward(east, rng, udpPacket(e4, f.SrcPort, f4, 9, 64, 20), 0)
	}
	popAll(fra.out)
	after, _ := l.MemberStats("us-east", "eu-frankfurt", PathSiteLink)
	pathAfter, _ := l.Stats("us-east", "eu-frankfurt", PathSiteLink)
	for i := range after {
		d := MemberStats{Packets: after[i].Packets - before[i].Packets, Delivered: after[i].Delivered - before[i].Delivered,
			Lost: after[i].Lost - before[i].Lost, Down: after[i].Down - before[i].Down}
		w := MemberStats{Packets: sent[i], Delivered: sent[i]}
		switch i {
		case 1:
			w.Delivered, w.Lost = 0, sent[i]
		case 3:
			w.Delivered, w.Down = 0, sent[i]
		}
		if d != w {
			t.Errorf("member %d: %+v, want %+v", i, d, w)
		}
	}
	if pathAfter.Lost-pathBefore.Lost != sent[1] || pathAfter.Down-pathBefore.Down != sent[3] {
		t.Errorf("path counters lost %d down %d, want the members' %d and %d", pathAfter.Lost-pathBefore.Lost, pathAfter.Down-pathBefore.Down, sent[1], sent[3])
	}
}

// TestMembersKeepOrderPerMember: without Reorder a packet never overtakes
// an earlier one of its own member, but a fast member is not held behind a
// slow one (separate links).
func TestMembersKeepOrderPerMember(t *testing.T) {
	l := fakeLab(t)
	east, fra := l.sites[0], l.sites[1]
	p := memberPath(10 * time.Millisecond)
	p.Members[0].Jitter = 3 * time.Millisecond
	if err := l.SetPath("us-east", "eu-frankfurt", PathSiteLink, p); err != nil {
		t.Fatal(err)
	}
	var slow, fast Flow // members 3 (+7 ms) and 0 (+0 ms, jitter)
	for port := uint16(40000); slow.Proto == 0 || fast.Proto == 0; port++ {
		switch f := UDPFlow(e4, port, f4, 9); f.Member(4) {
		case 3:
			slow = f
		case 0:
			fast = f
		}
	}
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range 200 {
		now := int64(i) * int64(100*time.Microsecond)
		l.forward(east, rng, udpPacket(e4, slow.SrcPort, f4, 9, 64, 20), now)
		l.forward(east, rng, udpPacket(e4, fast.SrcPort, f4, 9, 64, 20), now)
	}
	last := map[uint16]int64{}
	got := popAll(fra.out)
	for _, q := range got {
		f := mustFlow(t, q.b)
		if q.due < last[f.SrcPort] {
			t.Fatalf("a packet of member %d left before the previous one", f.Member(4))
		}
		last[f.SrcPort] = q.due
	}
	// The first slow packet was sent first; 7 ms later, dozens of fast
	// packets sent after it have left.
	if len(got) != 400 || mustFlow(t, got[0].b) != fast {
		t.Error("the fast member never overtook the slow one: members are not independent links")
	}
}

// TestPatchMembers: the control API's member fields (what `netlab set
// --members/--member` sends) and the member rows of State.
func TestPatchMembers(t *testing.T) {
	l := fakeLab(t)
	four, two, m2, m9 := 4, 2, 2, 9
	loss, d := 0.3, Duration(7*time.Millisecond)
	hops := []netip.Addr{netip.MustParseAddr("10.90.17.1"), netip.MustParseAddr("10.90.17.32")}
	if _, err := l.Patch(PathPatch{From: "us-east", To: "eu-frankfurt", Path: PathSiteLink, Both: true, Members: &four}); err != nil {
		t.Fatal(err)
	}
	keys, err := l.Patch(PathPatch{From: "us-east", To: "eu-frankfurt", Path: PathSiteLink, Member: &m2, Loss: &loss, Delay: &d, Hops: &hops})
	if err != nil || len(keys) != 1 {
		t.Fatalf("member patch: %v %v", keys, err)
	}
	p, _ := l.Path("us-east", "eu-frankfurt", PathSiteLink)
	fibre := DefaultTopology().Links[LinkKey{"us-east", "eu-frankfurt", PathSiteLink}]
	if len(p.Members) != 4 || p.Members[2].Loss != 0.3 || p.Members[2].Delay != 7*time.Millisecond || len(p.Members[2].Hops) != 2 ||
		p.Loss != 0 || p.Delay != fibre.Delay || len(p.Hops) != len(fibre.Hops) || p.Members[1].Loss != 0 {
		t.Errorf("after member patch: %+v", p)
	}
	for _, bad := range []PathPatch{
		{Member: &m9},                        // no such member
		{Member: &m2, MTU: &four},            // a path parameter
		{Members: &[]int{MaxMembers + 1}[0]}, // too many
	} {
		if _, err := l.Patch(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	var st LinkState
	for _, s := range l.State() {
		if s.From == "us-east" && s.To == "eu-frankfurt" && s.Path == PathSiteLink {
			st = s
		}
	}
	if len(st.Members) != 4 || st.Members[2].Loss != 0.3 || time.Duration(st.Members[2].Delay) != 7*time.Millisecond {
		t.Errorf("state members %+v", st.Members)
	}
	if _, err := l.Patch(PathPatch{From: "us-east", To: "eu-frankfurt", Path: PathSiteLink, Members: &two}); err != nil {
		t.Fatal(err)
	}
	if p, _ := l.Path("us-east", "eu-frankfurt", PathSiteLink); len(p.Members) != 2 {
		t.Errorf("resized to 2: %d members", len(p.Members))
	}
	zero := 0
	if _, err := l.Patch(PathPatch{Members: &zero}); err != nil {
		t.Fatal(err)
	}
	for _, k := range l.Links() {
		if p, _ := l.Path(k.From, k.To, k.Path); p.Members != nil {
			t.Errorf("%v still has members", k)
		}
		if ms, _ := l.MemberStats(k.From, k.To, k.Path); ms != nil {
			t.Errorf("%v: member stats %v without members", k, ms)
		}
	}
	// SetLink reverses every member's hops for the return direction.
	if err := l.SetLink("us-east", "eu-frankfurt", PathSiteLink, memberPath(0)); err != nil {
		t.Fatal(err)
	}
	r, _ := l.Path("eu-frankfurt", "us-east", PathSiteLink)
	if r.Members[1].Hops[0] != netip.MustParseAddr("fd90:1:7::3") || r.Members[1].Hops[2] != netip.MustParseAddr("fd90:1:7::11") {
		t.Errorf("return member hops %v", r.Members[1].Hops)
	}
}

// TestMemberHopsPerFamily: a member with IPv4 hops only keeps the path's
// IPv6 hops.
func TestMemberHopsPerFamily(t *testing.T) {
	l := fakeLab(t)
	east := l.sites[0]
	p := PathParams{Hops: []netip.Addr{netip.MustParseAddr("10.90.17.1"), netip.MustParseAddr("fd90:1:7::1")},
		Members: []MemberParams{{Hops: []netip.Addr{netip.MustParseAddr("10.90.17.10")}}}}
	if err := l.SetPath("us-east", "eu-frankfurt", PathSiteLink, p); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct{ src, dst, want netip.Addr }{
		{e4, f4, netip.MustParseAddr("10.90.17.10")},
		{e6, f6, netip.MustParseAddr("fd90:1:7::1")},
	} {
		l.forward(east, rng, udpPacket(c.src, 40000, c.dst, 9, 1, 20), 0)
		got := popAll(east.out)
		if len(got) != 1 {
			t.Fatalf("%v: %d answers", c.dst, len(got))
		}
		from := netip.AddrFrom4([4]byte(got[0].b[12:16]))
		if c.dst.Is6() {
			from = netip.AddrFrom16([16]byte(got[0].b[8:24]))
		}
		if from != c.want {
			t.Errorf("%v: Time Exceeded from %v, want %v", c.dst, from, c.want)
		}
	}
}
