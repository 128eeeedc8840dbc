package ecmp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/internal/netlab"
)

// TestLabAttribution runs the attribution end to end on the WAN lab, with
// the kernel's own UDP sockets standing in for the engine's flows: 16 flows
// (UDP source ports, 4 per member) from us-east to eu-frankfurt over a
// sitelink path of 4 member paths that part at hop 2. With member 2 losing
// 30%, Test must name exactly its flows, at a loss inside their binomial
// interval while the others read 0; Paris traces of the same flow
// identities (TTL-limited datagrams from the same sockets) must group into
// 4 member paths, and Attribute must name member 2's own hop. With 5% loss
// on every member nothing is flagged.
func TestLabAttribution(t *testing.T) {
	topo, err := netlab.DefaultTopology().Subset("us-east", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	topo.Seed = 30
	lab := netlab.StartT(t, topo)
	east, fra := lab.Site("us-east"), lab.Site("eu-frankfurt")
	src, dst := netip.MustParseAddr("10.77.1.1"), netip.MustParseAddr("10.77.7.1")
	memberHop := func(m int) netip.Addr { return netip.AddrFrom4([4]byte{10, 90, 17, byte(10 + m)}) }
	p := netlab.PathParams{Delay: 5 * time.Millisecond}
	for m := range 4 {
		p.Members = append(p.Members, netlab.MemberParams{Hops: []netip.Addr{
			netip.MustParseAddr("10.90.17.1"), memberHop(m), netip.MustParseAddr("10.90.17.3")}})
	}
	if err := lab.SetLink("us-east", "eu-frankfurt", netlab.PathSiteLink, p); err != nil {
		t.Fatal(err)
	}

	// The receiver counts datagrams per source port.
	var rc *net.UDPConn
	if err := fra.Do(func() (err error) {
		rc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9300)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	_ = rc.SetReadBuffer(4 << 20)
	got := make(chan uint16, 4096)
	go func() {
		b := make([]byte, 2048)
		for {
			_, from, err := rc.ReadFromUDPAddrPort(b)
			if err != nil {
				close(got)
				return
			}
			got <- from.Port()
		}
	}()

	// 16 flows, 4 on each member by the lab's hash.
	var ports []uint16
	var conns []*net.UDPConn
	perMember := [4]int{}
	for port := uint16(50000); len(ports) < 16; port++ {
		m := netlab.UDPFlow(src, port, dst, 9300).Member(4)
		if perMember[m] == 4 {
			continue
		}
		perMember[m]++
		var c *net.UDPConn
		if err := east.Do(func() (err error) {
			c, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, port)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9300)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ports = append(ports, port)
		conns = append(conns, c)
	}
	member := func(i int) int { return netlab.UDPFlow(src, ports[i], dst, 9300).Member(4) }

	// window sends n datagrams per flow, round robin, and returns each
	// flow's sent and lost counts as the receiver saw them.
	window := func(t *testing.T, n int) []FlowCount {
		before, _ := lab.Stats("us-east", "eu-frankfurt", netlab.PathSiteLink)
		fc := make([]FlowCount, len(ports))
		for range n {
			for i, c := range conns {
				if _, err := c.Write([]byte("probe")); err != nil {
					t.Fatal(err)
				}
				fc[i].Sent++
				time.Sleep(200 * time.Microsecond)
			}
		}
		var want uint64
		deadline := time.After(3 * time.Second)
		recv := map[uint16]uint64{}
		for {
			after, _ := lab.Stats("us-east", "eu-frankfurt", netlab.PathSiteLink)
			want = after.Delivered - before.Delivered
			var have uint64
			for _, v := range recv {
				have += v
			}
			if have >= want && after.Packets-before.Packets == uint64(n*len(ports)) {
				break
			}
			select {
			case port := <-got:
				recv[port]++
			case <-time.After(50 * time.Millisecond):
			case <-deadline:
				t.Fatalf("received %d datagrams, the lab delivered %d", have, want)
			}
		}
		for i, port := range ports {
			fc[i].Lost = fc[i].Sent - recv[port]
		}
		return fc
	}

	t.Run("30% on one member of 4", func(t *testing.T) {
		if err := lab.UpdatePath("us-east", "eu-frankfurt", netlab.PathSiteLink, func(p *netlab.PathParams) {
			for m := range p.Members {
				p.Members[m].Loss = 0
			}
			p.Members[2].Loss = 0.30
		}); err != nil {
			t.Fatal(err)
		}
		const n = 38 // 10 minutes of 16 flows at 1 probe/s
		fc := window(t, n)
		v := Test(fc, DefaultOptions())
		t.Logf("verdict: concentrated %v, P %.3g, lossy %v at %.3f, rest %.3f", v.Concentrated, v.P, v.Lossy, v.LossyRatio, v.RestRatio)
		var want []int
		for i := range ports {
			if member(i) == 2 {
				want = append(want, i)
			}
		}
		if !v.Concentrated || !slices.Equal(v.Lossy, want) {
			t.Fatalf("lossy flows %v, want those of member 2: %v", v.Lossy, want)
		}
		var lossySent, lossyLost uint64
		for i, f := range fc {
			if member(i) == 2 {
				lossySent += f.Sent
				lossyLost += f.Lost
				lo, hi := Wilson(f.Lost, f.Sent, 3.29)
				t.Logf("flow %d (member 2): %d of %d lost, 99.9%% interval [%.2f, %.2f]", ports[i], f.Lost, f.Sent, lo, hi)
				if lo > 0.30 || hi < 0.30 {
					t.Errorf("flow %d: %d of %d lost, 30%% outside its 99.9%% interval [%.2f, %.2f]", ports[i], f.Lost, f.Sent, lo, hi)
				}
			} else if f.Lost != 0 {
				t.Errorf("flow %d on healthy member %d lost %d", ports[i], member(i), f.Lost)
			}
		}
		ms, _ := lab.MemberStats("us-east", "eu-frankfurt", netlab.PathSiteLink)
		if ms[2].Lost < lossyLost {
			t.Errorf("the lab counted %d lost on member 2, the receiver missed %d", ms[2].Lost, lossyLost)
		}

		// Paris traces of every flow: TTL 1..3 from the flow's own socket,
		// three probes per TTL; a TTL none of whose probes is answered
		// stays silent (member 2 loses 30% of them too).
		ps := GroupPaths(traceFlows(t, east, conns))
		t.Logf("member paths: %+v", ps)
		if len(ps.Paths) != 4 {
			t.Fatalf("%d member paths found, want 4", len(ps.Paths))
		}
		for _, path := range ps.Paths {
			for _, f := range path.Flows {
				if path.Hops[1] != memberHop(member(f)) {
					t.Errorf("flow %d (member %d) grouped on the path through %v", ports[f], member(f), path.Hops[1])
				}
			}
		}
		var suspects []Suspect
		for _, pv := range Attribute(v.Lossy, ps) {
			if pv.Mixed {
				t.Errorf("path %d carries lossy and healthy flows: %+v", pv.Path, pv)
			}
			if len(pv.Lossy) > 0 {
				suspects = append(suspects, pv.Suspect)
			}
		}
		if len(suspects) != 1 || !suspects[0].Found || suspects[0].Addr != memberHop(2) || suspects[0].TTL != 2 {
			t.Errorf("suspects %+v, want member 2's own hop %v at TTL 2", suspects, memberHop(2))
		}
	})

	t.Run("5% on every member", func(t *testing.T) {
		if err := lab.UpdatePath("us-east", "eu-frankfurt", netlab.PathSiteLink, func(p *netlab.PathParams) {
			for m := range p.Members {
				p.Members[m].Loss = 0.05
			}
		}); err != nil {
			t.Fatal(err)
		}
		fc := window(t, 38)
		v := Test(fc, DefaultOptions())
		t.Logf("verdict: concentrated %v, P %.3g, pooled loss %.3f over %d probes", v.Concentrated, v.P, v.RestRatio, v.Sent)
		if lo, hi := Wilson(v.Lost, v.Sent, 3.29); lo > 0.05 || hi < 0.05 {
			t.Errorf("pooled loss %d of %d: 5%% outside the 99.9%% interval [%.3f, %.3f]", v.Lost, v.Sent, lo, hi)
		}
		if v.Concentrated {
			t.Errorf("uniform 5%% loss flagged: %+v (flows %v)", v, fc)
		}
	})
}

// traceFlows sends TTL-limited datagrams (TTL 1..3, three each) from each
// flow's own socket, so the probes carry the flow's exact 5-tuple, and
// collects the Time Exceeded answers by the quoted source port.
func traceFlows(t *testing.T, s *netlab.Site, conns []*net.UDPConn) []Trace {
	t.Helper()
	var ic net.PacketConn
	if err := s.Do(func() (err error) { ic, err = net.ListenPacket("ip4:icmp", "0.0.0.0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	byPort := map[uint16]int{}
	traces := make([]Trace, len(conns))
	for i, c := range conns {
		byPort[uint16(c.LocalAddr().(*net.UDPAddr).Port)] = i
		traces[i] = Trace{Flow: i, Hops: make([]netip.Addr, 3)}
	}
	for ttl := 1; ttl <= 3; ttl++ {
		for _, c := range conns {
			rc, _ := c.SyscallConn()
			_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl) })
			for range 3 {
				if _, err := c.Write([]byte(fmt.Sprintf("trace %d", ttl))); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	defer func() {
		for _, c := range conns {
			rc, _ := c.SyscallConn()
			_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, 64) })
		}
	}()
	b := make([]byte, 1500)
	for {
		_ = ic.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, from, err := ic.ReadFrom(b)
		if err != nil {
			break // quiet for 500 ms: every answer is in
		}
		// ICMP Time Exceeded quoting IPv4 + UDP: the quoted header's TTL
		// is 1 (as it arrived at the hop), so the probe's TTL is read
		// from its payload.
		m := b[:n]
		if len(m) < 8+20+8 || m[0] != 11 {
			continue
		}
		q := m[8:]
		ihl := int(q[0]&0x0f) * 4
		if len(q) < ihl+8+7 {
			continue
		}
		i, ok := byPort[binary.BigEndian.Uint16(q[ihl:])]
		if !ok {
			continue
		}
		var ttl int
		if _, err := fmt.Sscanf(string(q[ihl+8:ihl+8+7]), "trace %d", &ttl); err != nil || ttl < 1 || ttl > 3 {
			continue
		}
		a, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP.To4())
		traces[i].Hops[ttl-1] = a
	}
	return traces
}
