package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestECMP runs real traffic from the us-east namespace over a sitelink
// path of 4 member paths (memberPath: distinct middle hop per member,
// +0/+1/+2/+7 ms) and checks, with the lab's own per-member counters and
// the addresses that answer, that the kernel's own sockets and crafted
// probes of one flow identity take one member, the member the flow's hash
// selects, and that the replies come back on the member of the same index.
func TestECMP(t *testing.T) {
	topo, err := DefaultTopology().Subset("us-east", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	topo.Seed = 7
	lab := StartT(t, topo)
	east, fra := lab.Site("us-east"), lab.Site("eu-frankfurt")
	if err := lab.SetLink("us-east", "eu-frankfurt", PathSiteLink, memberPath(5*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	fwd := func() []MemberStats { ms, _ := lab.MemberStats("us-east", "eu-frankfurt", PathSiteLink); return ms }
	rev := func() []MemberStats { ms, _ := lab.MemberStats("eu-frankfurt", "us-east", PathSiteLink); return ms }

	t.Run("flows spread over the members as their hash says; replies mirror", func(t *testing.T) {
		for _, v6 := range []bool{false, true} {
			src, dst := e4, f4
			if v6 {
				src, dst = e6, f6
			}
			raw := openRaw(t, east, v6)
			waitQuiet(lab)
			f0, r0 := fwd(), rev()
			var want [4]uint64
			var flows [4]int
			send := func(f Flow, pkts ...[]byte) {
				m := f.Member(4)
				flows[m]++
				for _, p := range pkts {
					raw.send(t, p)
					want[m]++
				}
			}
			for i := range uint16(64) {
				f := EchoFlow(src, dst, 2000+i)
				send(f, echoPacket(src, dst, f.SrcPort, 1, 64, 56), echoPacket(src, dst, f.SrcPort, 2, 64, 56))
				// UDP to a closed port: the target's kernel answers Port
				// Unreachable, hashed as the datagram it quotes.
				u := UDPFlow(src, 45000+i, dst, 33434)
				send(u, udpPacket(src, u.SrcPort, dst, 33434, 64, 20), udpPacket(src, u.SrcPort, dst, 33434, 64, 21))
				// SYN to a closed port: answered by a RST.
				s := TCPFlow(src, 46000+i, dst, 444)
				send(s, synPacket(src, s.SrcPort, dst, 444, 1, 64))
			}
			var total uint64
			for _, w := range want {
				total += w
			}
			// Every request is answered once; wait for the answers.
			if !waitFor(5*time.Second, func() bool { return sumPackets(delta(r0, rev())) >= total }) {
				t.Errorf("v6=%v: %d of %d answers came back", v6, sumPackets(delta(r0, rev())), total)
			}
			waitQuiet(lab)
			df, dr := delta(f0, fwd()), delta(r0, rev())
			t.Logf("v6=%v: flows per member %v; packets per member forward %v, return %v", v6, flows, packets(df), packets(dr))
			for m := range 4 {
				if flows[m] == 0 {
					t.Errorf("v6=%v: no flow of 192 hashed onto member %d", v6, m)
				}
				if df[m].Packets != want[m] || df[m].Delivered != want[m] {
					t.Errorf("v6=%v member %d: forward %+v, want %d packets delivered (the flows its hash selects)", v6, m, df[m], want[m])
				}
				if dr[m].Packets != want[m] {
					t.Errorf("v6=%v member %d: %d answers on the return member of the same index, want %d", v6, m, dr[m].Packets, want[m])
				}
			}
		}
	})

	t.Run("trace probes of a flow take the member of its echo and connect", func(t *testing.T) {
		udpRecv := map[bool]*receiver{}
		for _, v6 := range []bool{false, true} {
			a, _ := fra.Addr(PathSiteLink, v6)
			udpRecv[v6] = listenUDP(t, fra, a, 9100)
		}
		for _, v6 := range []bool{false, true} {
			src, dst := e4, f4
			if v6 {
				src, dst = e6, f6
			}
			raw := openRaw(t, east, v6)
			ic := listenICMP(t, east, v6)
			for i := range 3 {
				id := uint16(3000 + i*7)
				port := uint16(47000 + i*11)
				for _, c := range []struct {
					name string
					flow Flow
					// exchange sends the flow's ordinary traffic with the
					// kernel's own sockets.
					exchange func(t *testing.T)
					// probe is a TTL-limited probe of the same identity.
					probe func(ttl int) []byte
				}{
					{"ping socket", EchoFlow(src, dst, id),
						func(t *testing.T) { ping(t, east, dst, id, 3) },
						func(ttl int) []byte { return parisEcho(src, dst, id, uint16(ttl), ttl) }},
					{"UDP socket", UDPFlow(src, port, dst, 9100),
						func(t *testing.T) {
							s := dialUDPFrom(t, east, netip.AddrPortFrom(src, port), netip.AddrPortFrom(dst, 9100))
							s.send(t, 3, 32, time.Millisecond)
							if got := udpRecv[v6].collect(3, time.Second); len(got) != 3 {
								t.Errorf("%d of 3 datagrams arrived", len(got))
							}
							s.conn.Close()
						},
						func(ttl int) []byte { return udpPacket(src, port, dst, 9100, ttl, 20+ttl) }},
					{"TCP connect", TCPFlow(src, port+1, dst, 443),
						func(t *testing.T) {
							connectFrom(t, east, netip.AddrPortFrom(src, port+1), netip.AddrPortFrom(dst, 443))
						},
						func(ttl int) []byte { return synPacket(src, port+1, dst, 443, uint32(ttl)<<24, ttl) }},
				} {
					name := fmt.Sprintf("v6=%v %s %+v", v6, c.name, c.flow)
					waitQuiet(lab)
					before := fwd()
					c.exchange(t)
					waitQuiet(lab)
					moved := delta(before, fwd())
					m := -1
					for j, d := range moved {
						if d.Packets > 0 {
							if m >= 0 {
								t.Errorf("%s: members %d and %d both carried the flow: %v", name, m, j, packets(moved))
							}
							m = j
						}
					}
					if m < 0 {
						t.Fatalf("%s: no member carried the flow", name)
					}
					if m != c.flow.Member(4) {
						t.Errorf("%s: carried by member %d, the hash says %d", name, m, c.flow.Member(4))
					}
					before = fwd()
					hops := memberPath(0).Members[m].Hops
					for ttl := 1; ttl <= 3; ttl++ {
						raw.send(t, c.probe(ttl))
						from, err := ic.timeExceeded(c.flow, 2*time.Second)
						if err != nil {
							t.Fatalf("%s ttl %d: %v", name, ttl, err)
						}
						if want := familyHop(hops, v6, ttl); from != want {
							t.Errorf("%s ttl %d: Time Exceeded from %v, want %v (hop %d of member %d)", name, ttl, from, want, ttl, m)
						}
					}
					traced := delta(before, fwd())
					for j, d := range traced {
						want := MemberStats{}
						if j == m {
							want = MemberStats{Packets: 3, TTLExpired: 3}
						}
						if d != want {
							t.Errorf("%s: trace probes on member %d: %+v, want %+v (the member of the flow's own traffic is %d)", name, j, d, want, m)
						}
					}
				}
			}
		}
	})
}

// TestECMPDelayAndLoss: per-member delay and loss as configured. 16 UDP
// flows, 4 per member (chosen by the hash), 250 datagrams each; member 2
// loses 30%. The lab's counters must show exactly the flows' packets per
// member, loss only on member 2 and inside the 99.9% binomial interval,
// and the receiver exactly what the lab delivered; each flow's one-way
// delay is never below its member's and its median within 500 µs of it
// (the members are 1 ms apart).
func TestECMPDelayAndLoss(t *testing.T) {
	topo, err := DefaultTopology().Subset("us-east", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	topo.Seed = 11
	lab := StartT(t, topo)
	east, fra := lab.Site("us-east"), lab.Site("eu-frankfurt")
	const base = 20 * time.Millisecond
	p := memberPath(base)
	p.Members[2].Loss = 0.30
	if err := lab.SetPath("us-east", "eu-frankfurt", PathSiteLink, p); err != nil {
		t.Fatal(err)
	}
	r := listenUDP(t, fra, f4, 9200)
	bigBuffer(t, r.conn)
	var senders []*sender
	var flows []Flow
	perMember := [4]int{}
	for port := uint16(48000); len(flows) < 16; port++ {
		f := UDPFlow(e4, port, f4, 9200)
		if m := f.Member(4); perMember[m] < 4 {
			perMember[m]++
			flows = append(flows, f)
			s := dialUDPFrom(t, east, netip.AddrPortFrom(e4, port), netip.AddrPortFrom(f4, 9200))
			s.seq = uint64(len(flows)-1) << 32 // flow i numbers its datagrams i<<32 + 1..n
			senders = append(senders, s)
		}
	}
	before, _ := lab.MemberStats("us-east", "eu-frankfurt", PathSiteLink)
	const n = 250
	// Round robin over the flows, one datagram every 250 µs (4,000/s).
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 250 * time.Microsecond)
			s.send(t, n, 32, 4*time.Millisecond)
		}()
	}
	wg.Wait()
	waitQuiet(lab)
	after, _ := lab.MemberStats("us-east", "eu-frankfurt", PathSiteLink)
	d := delta(before, after)
	got := r.collect(int(sumDelivered(d)), time.Second)
	for m := range 4 {
		t.Logf("member %d (+%v, loss %.0f%%): %+v", m, p.Members[m].Delay, 100*p.Members[m].Loss, d[m])
		if d[m].Packets != 4*n {
			t.Errorf("member %d: %d packets, want %d (4 flows of %d)", m, d[m].Packets, 4*n, n)
		}
		if m == 2 {
			lo, hi := binomialInterval(int(d[m].Packets), 0.30)
			if float64(d[m].Lost) < lo || float64(d[m].Lost) > hi {
				t.Errorf("member 2: lost %d of %d, outside the 99.9%% interval [%.0f, %.0f] of 30%%", d[m].Lost, d[m].Packets, lo, hi)
			}
		} else if d[m].Lost != 0 {
			t.Errorf("member %d: lost %d, configured 0", m, d[m].Lost)
		}
		if d[m].Delivered+d[m].Lost != d[m].Packets {
			t.Errorf("member %d: delivered %d + lost %d != %d", m, d[m].Delivered, d[m].Lost, d[m].Packets)
		}
	}
	if uint64(len(got)) != sumDelivered(d) {
		t.Errorf("receiver got %d datagrams, the lab delivered %d", len(got), sumDelivered(d))
	}
	byFlow := map[uint64][]received{}
	for _, g := range got {
		byFlow[g.seq>>32] = append(byFlow[g.seq>>32], g)
	}
	for i, f := range flows {
		m := f.Member(4)
		want := base + p.Members[m].Delay
		rs := byFlow[uint64(i)]
		ow := oneWays(rs)
		if len(ow) == 0 {
			t.Errorf("flow %d (member %d): nothing arrived", f.SrcPort, m)
			continue
		}
		med := quantile(ow, 0.5)
		t.Logf("flow %d member %d: configured %v, %s", f.SrcPort, m, want, describe(rs))
		if ow[0] < want || med-want > 500*time.Microsecond {
			t.Errorf("flow %d (member %d): one-way min %v median %v, want >= %v, median within 500µs", f.SrcPort, m, ow[0], med, want)
		}
		if m != 2 && len(rs) != n {
			t.Errorf("flow %d (member %d, no loss): %d of %d arrived", f.SrcPort, m, len(rs), n)
		}
	}
}

func delta(before, after []MemberStats) []MemberStats {
	out := make([]MemberStats, len(after))
	for i, a := range after {
		var b MemberStats
		if i < len(before) {
			b = before[i]
		}
		out[i] = MemberStats{Packets: a.Packets - b.Packets, Delivered: a.Delivered - b.Delivered, Lost: a.Lost - b.Lost,
			Down: a.Down - b.Down, MTUErrors: a.MTUErrors - b.MTUErrors, MTUDropped: a.MTUDropped - b.MTUDropped, TTLExpired: a.TTLExpired - b.TTLExpired}
	}
	return out
}

func packets(ms []MemberStats) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Packets
	}
	return out
}

func sumPackets(ms []MemberStats) (n uint64) {
	for _, m := range ms {
		n += m.Packets
	}
	return n
}

func sumDelivered(ms []MemberStats) (n uint64) {
	for _, m := range ms {
		n += m.Delivered
	}
	return n
}

// waitQuiet waits until no path of the lab has seen a packet for 150 ms
// (TCP closes, late answers), at most 3 s.
func waitQuiet(lab *Lab) {
	total := func() (n uint64) {
		for _, k := range lab.Links() {
			st, _ := lab.Stats(k.From, k.To, k.Path)
			n += st.Packets
		}
		return n
	}
	last, since := total(), time.Now()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if n := total(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 150*time.Millisecond {
			return
		}
	}
}

// rawSock sends complete IP packets (IPPROTO_RAW: header included) from
// inside a site.
type rawSock struct{ fd int }

func openRaw(t testing.TB, s *Site, v6 bool) *rawSock {
	t.Helper()
	var fd int
	err := s.Do(func() (err error) {
		fam := unix.AF_INET
		if v6 {
			fam = unix.AF_INET6
		}
		fd, err = unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		t.Fatalf("raw socket in %s: %v", s.Name(), err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &rawSock{fd: fd}
}

func (r *rawSock) send(t testing.TB, pkt []byte) {
	t.Helper()
	h, ok := parseIP(pkt)
	if !ok {
		t.Fatal("sending a packet that does not parse")
	}
	var sa unix.Sockaddr
	if h.v6 {
		sa = &unix.SockaddrInet6{Addr: h.dst.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: h.dst.As4()}
	}
	if err := unix.Sendto(r.fd, pkt, 0, sa); err != nil {
		t.Fatalf("raw send to %v: %v", h.dst, err)
	}
}

// parisEcho is an echo request whose checksum stays the same whatever
// seq is (a payload word compensates), as a Paris traceroute sends.
func parisEcho(src, dst netip.Addr, id, seq uint16, ttl int) []byte {
	l4 := make([]byte, 8+32)
	proto := uint8(protoICMP)
	l4[0] = 8
	if dst.Is6() {
		proto, l4[0] = protoICMPv6, 128
	}
	binary.BigEndian.PutUint16(l4[4:], id)
	binary.BigEndian.PutUint16(l4[6:], seq)
	binary.BigEndian.PutUint16(l4[8:], ^seq) // seq + ^seq = 0xffff: the sum does not move
	return ipPacket(src, dst, proto, ttl, l4, 2)
}

// timeExceeded waits for a Time Exceeded quoting a packet of flow f and
// returns where it came from; other ICMP messages are skipped.
func (l *icmpListener) timeExceeded(f Flow, timeout time.Duration) (netip.Addr, error) {
	b := make([]byte, 2048)
	deadline := time.Now().Add(timeout)
	for {
		l.conn.SetReadDeadline(deadline)
		n, _, _, from, err := l.conn.ReadMsgIP(b, nil)
		if err != nil {
			return netip.Addr{}, err
		}
		m := b[:n]
		if !l.v6 && n >= 20 {
			m = m[int(m[0]&0x0f)*4:]
		}
		if len(m) < 8 || !(l.v6 && m[0] == icmp6TimeExceeded || !l.v6 && m[0] == icmp4TimeExceeded) {
			continue
		}
		if q, ok := PacketFlow(m[8:]); ok && q == f {
			a, _ := netip.AddrFromSlice(from.IP)
			return a.Unmap(), nil
		}
	}
}

// ping sends n echo requests from a ping socket bound to identifier id
// (the kernel's own ICMP, as an unprivileged prober sends it) and waits
// for the replies.
func ping(t testing.TB, s *Site, dst netip.Addr, id uint16, n int) {
	t.Helper()
	var fd int
	err := s.Do(func() error {
		fam, proto := unix.AF_INET, unix.IPPROTO_ICMP
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(id)}
		if dst.Is6() {
			fam, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
			sa = &unix.SockaddrInet6{Port: int(id)}
		}
		var err error
		if fd, err = unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		return unix.Bind(fd, sa)
	})
	if err != nil {
		t.Fatalf("ping socket with id %d: %v", id, err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})
	var sa unix.Sockaddr
	typ := byte(8)
	if dst.Is6() {
		sa, typ = &unix.SockaddrInet6{Addr: dst.As16()}, 128
	} else {
		sa = &unix.SockaddrInet4{Addr: dst.As4()}
	}
	for seq := 1; seq <= n; seq++ {
		msg := make([]byte, 8+24)
		msg[0] = typ
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		if err := unix.Sendto(fd, msg, 0, sa); err != nil {
			t.Fatalf("ping %v id %d: %v", dst, id, err)
		}
		b := make([]byte, 256)
		if _, _, err := unix.Recvfrom(fd, b, 0); err != nil {
			t.Fatalf("ping %v id %d seq %d: no reply: %v", dst, id, seq, err)
		}
	}
}

// dialUDPFrom is dialUDP from a chosen local address and port.
func dialUDPFrom(t testing.TB, s *Site, local, remote netip.AddrPort) *sender {
	t.Helper()
	var conn *net.UDPConn
	err := s.Do(func() (err error) {
		conn, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(remote))
		return err
	})
	if err != nil {
		t.Fatalf("dialling %v from %v: %v", remote, local, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &sender{conn: conn}
}

// connectFrom opens and closes a TCP connection from a chosen local port.
func connectFrom(t testing.TB, s *Site, local, remote netip.AddrPort) {
	t.Helper()
	err := s.Do(func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(local), Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", remote.String())
		if err != nil {
			return err
		}
		// Read until the server's accept-and-close ends the connection,
		// then close: the exchange is over before the test looks.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, unix.ETIMEDOUT) {
			return fmt.Errorf("connection from %v was not closed by the server", local)
		}
		return c.Close()
	})
	if err != nil {
		t.Fatalf("TCP %v -> %v: %v", local, remote, err)
	}
}
