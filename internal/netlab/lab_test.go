package netlab

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The lab tests share one three-site lab (starting one costs about a
// second); every subtest sets the paths it uses and restores them.
func TestLab(t *testing.T) {
	topo, err := DefaultTopology().Subset("us-east", "us-west", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	topo.Seed = 42
	lab := StartT(t, topo)
	east, west, fra := lab.Site("us-east"), lab.Site("us-west"), lab.Site("eu-frankfurt")
	mustAddr := func(s *Site, path string, v6 bool) netip.Addr {
		a, ok := s.Addr(path, v6)
		if !ok {
			t.Fatalf("%s has no %s address (v6=%v)", s.Name(), path, v6)
		}
		return a
	}
	set := func(from, to *Site, path string, p PathParams) {
		t.Helper()
		if err := lab.SetPath(from.Name(), to.Name(), path, p); err != nil {
			t.Fatal(err)
		}
	}
	// Every subtest starts from plain paths: no delay, no hops.
	reset := func() {
		for _, k := range lab.Links() {
			if err := lab.SetPath(k.From, k.To, k.Path, PathParams{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("asymmetric delay, IPv4 and IPv6", func(t *testing.T) {
		reset()
		set(east, west, PathSiteLink, PathParams{Delay: 20 * time.Millisecond})
		set(west, east, PathSiteLink, PathParams{Delay: 7 * time.Millisecond})
		set(east, west, PathMPLS, PathParams{Delay: 31 * time.Millisecond})
		for _, c := range []struct {
			from, to *Site
			path     string
			v6       bool
			want     time.Duration
		}{
			{east, west, PathSiteLink, false, 20 * time.Millisecond},
			{east, west, PathSiteLink, true, 20 * time.Millisecond},
			{west, east, PathSiteLink, false, 7 * time.Millisecond},
			{west, east, PathSiteLink, true, 7 * time.Millisecond},
			{east, west, PathMPLS, false, 31 * time.Millisecond},
		} {
			dst := mustAddr(c.to, c.path, c.v6)
			r := listenUDP(t, c.to, dst, 9000)
			s := dialUDP(t, c.from, dst, 9000)
			s.send(t, 200, 64, time.Millisecond)
			got := r.collect(200, time.Second)
			ow := oneWays(got)
			med := quantile(ow, 0.5)
			t.Logf("%s -> %v (%s): configured %v, measured %s", c.from.Name(), dst, c.path, c.want, describe(got))
			if len(got) != 200 {
				t.Errorf("%v: %d of 200 datagrams arrived", dst, len(got))
			}
			// The floor is the configured delay: the emulator never
			// delivers early. 300 µs above it covers scheduling of the
			// sending test goroutine on a loaded 2-core machine.
			if ow[0] < c.want || med-c.want > 300*time.Microsecond {
				t.Errorf("%v: one-way min %v median %v, want >= %v and median within 300µs", dst, ow[0], med, c.want)
			}
			r.conn.Close()
		}
	})

	t.Run("loss is random at the configured probability", func(t *testing.T) {
		reset()
		const n = 4000
		for _, p := range []float64{0.01, 0.10} {
			set(east, fra, PathSiteLink, PathParams{Loss: p})
			before, _ := lab.Stats(east.Name(), fra.Name(), PathSiteLink)
			dst := mustAddr(fra, PathSiteLink, false)
			r := listenUDP(t, fra, dst, 9001)
			bigBuffer(t, r.conn)
			s := dialUDP(t, east, dst, 9001)
			s.send(t, n, 32, 200*time.Microsecond)
			got := r.collect(n, 300*time.Millisecond)
			lost := n - len(got)
			lo, hi := binomialInterval(n, p)
			after, _ := lab.Stats(east.Name(), fra.Name(), PathSiteLink)
			t.Logf("loss %.0f%%: %d of %d lost (%.2f%%), 99.9%% interval [%.0f, %.0f]", p*100, lost, n, 100*float64(lost)/n, lo, hi)
			if float64(lost) < lo || float64(lost) > hi {
				t.Errorf("loss %v: %d lost of %d, outside the 99.9%% binomial interval [%.0f, %.0f]", p, lost, n, lo, hi)
			}
			if d := after.Lost - before.Lost; int(d) != lost {
				t.Errorf("lab counted %d lost, receiver missed %d", d, lost)
			}
			r.conn.Close()
		}
	})

	t.Run("down blackholes one path only, and comes back", func(t *testing.T) {
		reset()
		sl, mp := mustAddr(west, PathSiteLink, false), mustAddr(west, PathMPLS, false)
		rs, rm := listenUDP(t, west, sl, 9002), listenUDP(t, west, mp, 9002)
		ss, sm := dialUDP(t, east, sl, 9002), dialUDP(t, east, mp, 9002)
		set(east, west, PathSiteLink, PathParams{Down: true})
		ss.send(t, 50, 32, time.Millisecond)
		sm.send(t, 50, 32, time.Millisecond)
		if got := rm.collect(50, 300*time.Millisecond); len(got) != 50 {
			t.Errorf("mpls while sitelink is down: %d of 50 arrived", len(got))
		}
		if got := rs.collect(1, 300*time.Millisecond); len(got) != 0 {
			t.Errorf("sitelink down: %d datagrams arrived", len(got))
		}
		set(east, west, PathSiteLink, PathParams{})
		ss.send(t, 50, 32, time.Millisecond)
		if got := rs.collect(50, 300*time.Millisecond); len(got) != 50 {
			t.Errorf("sitelink restored: %d of 50 arrived", len(got))
		}
	})

	t.Run("blocked address is unreachable, its neighbours are not", func(t *testing.T) {
		reset()
		prod := mustAddr(west, PathSiteLink, false) // 10.77.3.1
		dev := netip.MustParseAddr("10.77.3.65")
		rp, rd := listenUDP(t, west, prod, 9003), listenUDP(t, west, dev, 9003)
		sp, sd := dialUDP(t, east, prod, 9003), dialUDP(t, east, dev, 9003)
		if err := lab.SetBlocked(east.Name(), dev, true); err != nil {
			t.Fatal(err)
		}
		sp.send(t, 20, 32, time.Millisecond)
		sd.send(t, 20, 32, time.Millisecond)
		if got := rp.collect(20, 300*time.Millisecond); len(got) != 20 {
			t.Errorf("prod address next to a blocked one: %d of 20 arrived", len(got))
		}
		if got := rd.collect(1, 300*time.Millisecond); len(got) != 0 {
			t.Errorf("blocked address: %d datagrams arrived", len(got))
		}
		// The block is per source site: Frankfurt still reaches dev.
		sf := dialUDP(t, fra, dev, 9003)
		sf.send(t, 20, 32, time.Millisecond)
		if got := rd.collect(20, 300*time.Millisecond); len(got) != 20 {
			t.Errorf("dev from an unblocked site: %d of 20 arrived", len(got))
		}
		if err := lab.SetBlocked(east.Name(), dev, false); err != nil {
			t.Fatal(err)
		}
		sd.send(t, 20, 32, time.Millisecond)
		if got := rd.collect(20, 300*time.Millisecond); len(got) != 20 {
			t.Errorf("unblocked: %d of 20 arrived", len(got))
		}
	})

	t.Run("jitter keeps order unless reordering is on", func(t *testing.T) {
		reset()
		const delay, jitter = 10 * time.Millisecond, 4 * time.Millisecond
		dst := mustAddr(fra, PathSiteLink, false)
		r := listenUDP(t, fra, dst, 9004)
		s := dialUDP(t, east, dst, 9004)
		for _, reorder := range []bool{false, true} {
			set(east, fra, PathSiteLink, PathParams{Delay: delay, Jitter: jitter, Reorder: reorder})
			s.send(t, 500, 32, 500*time.Microsecond)
			got := r.collect(500, time.Second)
			inversions := 0
			for i := 1; i < len(got); i++ {
				if got[i].seq < got[i-1].seq {
					inversions++
				}
			}
			ow := oneWays(got)
			t.Logf("reorder=%v: %s, %d inversions", reorder, describe(got), inversions)
			if len(got) != 500 {
				t.Errorf("reorder=%v: %d of 500 arrived", reorder, len(got))
			}
			if ow[0] < delay-jitter {
				t.Errorf("reorder=%v: one-way %v below delay-jitter %v", reorder, ow[0], delay-jitter)
			}
			if !reorder && inversions != 0 {
				t.Errorf("reorder off: %d datagrams overtook an earlier one", inversions)
			}
			if reorder {
				// Packets 0.5 ms apart with ±4 ms uniform jitter overtake
				// each other constantly; expected far above 50 of 500.
				if inversions < 50 {
					t.Errorf("reorder on: only %d inversions in 500 datagrams", inversions)
				}
				// Uniform on [D-J, D+J]: median D, a quarter below D-J/2.
				// Lateness can be the loaded machine (a stall delays a
				// burst), earliness cannot, so the low side is checked.
				if p50 := quantile(ow, 0.5); (p50 - delay).Abs() > time.Millisecond {
					t.Errorf("reorder on: median one-way %v, want %v ±1ms", p50, delay)
				}
				if p25 := quantile(ow, 0.25); p25 > delay-jitter/4 {
					t.Errorf("reorder on: p25 one-way %v, want <= %v (jitter spreads below the delay)", p25, delay-jitter/4)
				}
			}
		}
	})

	t.Run("DSCP rewrite", func(t *testing.T) {
		reset()
		ef := uint8(46)
		set(east, west, PathSiteLink, PathParams{DSCP: &ef})
		for _, v6 := range []bool{false, true} {
			dst := mustAddr(west, PathSiteLink, v6)
			r := listenUDP(t, west, dst, 9005)
			s := dialUDP(t, east, dst, 9005)
			// Sent as AF41 with ECT(0): the DSCP changes, ECN stays.
			if err := control(s.conn, func(fd int) error {
				if v6 {
					return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, 34<<2|2)
				}
				return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, 34<<2|2)
			}); err != nil {
				t.Fatal(err)
			}
			s.send(t, 5, 32, time.Millisecond)
			got := r.collect(5, 300*time.Millisecond)
			if len(got) != 5 {
				t.Fatalf("v6=%v: %d of 5 arrived (a bad IPv4 checksum would drop them)", v6, len(got))
			}
			for _, g := range got {
				if g.tos != 46<<2|2 {
					t.Errorf("v6=%v: received TOS %#x, want DSCP 46 with ECN 2 (%#x)", v6, g.tos, 46<<2|2)
				}
			}
			r.conn.Close()
		}
	})

	t.Run("TTL expiry at hop k answers from hop k", func(t *testing.T) {
		reset()
		hops := []netip.Addr{
			netip.MustParseAddr("10.90.13.1"), netip.MustParseAddr("fd90:1:3::1"),
			netip.MustParseAddr("10.90.13.2"), netip.MustParseAddr("fd90:1:3::2"),
			netip.MustParseAddr("10.90.13.3"), netip.MustParseAddr("fd90:1:3::3"),
		}
		const fwd, rev = 30 * time.Millisecond, 10 * time.Millisecond
		set(east, west, PathSiteLink, PathParams{Delay: fwd, Hops: hops})
		set(west, east, PathSiteLink, PathParams{Delay: rev})
		for _, v6 := range []bool{false, true} {
			dst := mustAddr(west, PathSiteLink, v6)
			r := listenUDP(t, west, dst, 9006)
			ic := listenICMP(t, east, v6)
			for k := 1; k <= 4; k++ {
				s := dialUDP(t, east, dst, 9006)
				setSockTTL(t, s, v6, k)
				lab.ResetDelayError()
				start := time.Now()
				s.send(t, 1, 32, 0)
				sent := time.Now() // the packet left between start and sent
				if k == 4 {
					// Three hops: TTL 4 reaches the destination with TTL 1.
					if got := r.collect(1, 500*time.Millisecond); len(got) != 1 {
						t.Errorf("v6=%v ttl=4: datagram did not reach %v", v6, dst)
					}
					continue
				}
				m, err := ic.next(time.Second)
				if err != nil {
					t.Fatalf("v6=%v ttl=%d: no ICMP: %v", v6, k, err)
				}
				rtt := m.at.Sub(start)
				want := (fwd + rev) * time.Duration(k) / 4
				wantTyp := 11
				if v6 {
					wantTyp = 3
				}
				wantFrom := hops[2*(k-1)]
				if v6 {
					wantFrom = hops[2*(k-1)+1]
				}
				t.Logf("v6=%v ttl=%d: type %d from %v after %v (model %v)", v6, k, m.typ, m.from, rtt, want)
				if m.typ != wantTyp || m.code != 0 || m.from != wantFrom {
					t.Errorf("v6=%v ttl=%d: got type %d code %d from %v, want Time Exceeded (%d/0) from %v", v6, k, m.typ, m.code, m.from, wantTyp, wantFrom)
				}
				if !m.quotes(s.conn) {
					t.Errorf("v6=%v ttl=%d: the error does not quote the probe's UDP header", v6, k)
				}
				// The packet left between start and sent (user-space
				// clocks around the send); the answer's kernel timestamp is
				// at least the model's round trip after start, and at most
				// that plus the lab's own measured lateness (and 1 ms for
				// the clocks) after sent.
				late := lab.DelayError().Max
				if rtt < want || m.at.Sub(sent) > want+late+time.Millisecond {
					t.Errorf("v6=%v ttl=%d: answer %v after the send began, %v after it ended; want %v (+ the lab's lateness %v + 1ms)",
						v6, k, rtt, m.at.Sub(sent), want, late)
				}
			}
			r.conn.Close()
		}
	})

	t.Run("path MTU: Fragmentation Needed, Packet Too Big, black hole", func(t *testing.T) {
		reset()
		hop4, hop6 := netip.MustParseAddr("10.90.17.1"), netip.MustParseAddr("fd90:1:7::1")
		for _, v6 := range []bool{false, true} {
			dst := mustAddr(fra, PathSiteLink, v6)
			r := listenUDP(t, fra, dst, 9007)
			ic := listenICMP(t, east, v6)
			s := dialUDP(t, east, dst, 9007)
			setDF(t, s, v6)
			set(east, fra, PathSiteLink, PathParams{MTU: 1500, Hops: []netip.Addr{hop4, hop6}})
			hdr := 20 + 8
			if v6 {
				hdr = 40 + 8
			}
			s.send(t, 1, 1500-hdr, 0) // exactly the MTU: passes
			if got := r.collect(1, 300*time.Millisecond); len(got) != 1 {
				t.Errorf("v6=%v: a packet of exactly the MTU did not arrive", v6)
			}
			s.send(t, 1, 1501-hdr, 0)
			m, err := ic.next(time.Second)
			if err != nil {
				t.Fatalf("v6=%v: no ICMP for a packet over the MTU: %v", v6, err)
			}
			wantTyp, wantCode, wantFrom := 3, 4, hop4
			if v6 {
				wantTyp, wantCode, wantFrom = 2, 0, hop6
			}
			if m.typ != wantTyp || m.code != wantCode || m.from != wantFrom || m.mtu != 1500 {
				t.Errorf("v6=%v: got type %d code %d mtu %d from %v, want %d/%d mtu 1500 from %v", v6, m.typ, m.code, m.mtu, m.from, wantTyp, wantCode, wantFrom)
			}
			if got := r.collect(1, 200*time.Millisecond); len(got) != 0 {
				t.Errorf("v6=%v: an oversized DF packet was delivered", v6)
			}
			set(east, fra, PathSiteLink, PathParams{MTU: 1500, MTUBlackhole: true})
			s.send(t, 1, 1501-hdr, 0)
			if m, err := ic.next(300 * time.Millisecond); err == nil {
				t.Errorf("v6=%v: black hole answered type %d from %v", v6, m.typ, m.from)
			}
			if got := r.collect(1, 200*time.Millisecond); len(got) != 0 {
				t.Errorf("v6=%v: black hole delivered an oversized packet", v6)
			}
			st, _ := lab.Stats(east.Name(), fra.Name(), PathSiteLink)
			if st.MTUDropped == 0 || st.MTUErrors == 0 {
				t.Errorf("v6=%v: stats %+v count no MTU errors or drops", v6, st)
			}
			r.conn.Close()
		}
	})

	t.Run("TCP listener on every site, IPv4 and IPv6", func(t *testing.T) {
		reset()
		set(east, west, PathSiteLink, PathParams{Delay: 5 * time.Millisecond})
		for _, v6 := range []bool{false, true} {
			dst := mustAddr(west, PathSiteLink, v6)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			start := time.Now()
			c, err := east.DialContext(ctx, "tcp", netip.AddrPortFrom(dst, 443).String())
			cancel()
			if err != nil {
				t.Fatalf("TCP connect to %v:443 from us-east: %v", dst, err)
			}
			if d := time.Since(start); d < 5*time.Millisecond {
				t.Errorf("TCP connect took %v, less than the 5ms one-way delay", d)
			}
			c.Close()
		}
	})

	t.Run("control API over a unix socket", func(t *testing.T) {
		reset()
		sock := filepath.Join(t.TempDir(), "control.sock")
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- lab.ServeControl(ctx, sock) }()
		defer func() {
			cancel()
			if err := <-served; err != nil {
				t.Errorf("ServeControl: %v", err)
			}
		}()
		c := NewClient(sock)
		var keys []LinkKey
		if !waitFor(2*time.Second, func() bool {
			d, loss, down := Duration(40*time.Millisecond), 0.01, true
			var err error
			keys, err = c.Patch(context.Background(), PathPatch{From: "us-east", To: "eu-frankfurt", Path: PathSiteLink, Both: true, Delay: &d, Loss: &loss, Down: &down})
			return err == nil
		}) {
			t.Fatal("control socket never answered")
		}
		if len(keys) != 2 {
			t.Fatalf("patch changed %v, want both directions of one path", keys)
		}
		p, _ := lab.Path("eu-frankfurt", "us-east", PathSiteLink)
		if p.Delay != 40*time.Millisecond || p.Loss != 0.01 || !p.Down {
			t.Errorf("after patch: %+v", p)
		}
		bad := 1.5
		if _, err := c.Patch(context.Background(), PathPatch{Loss: &bad}); err == nil {
			t.Error("loss 1.5 accepted")
		}
		if _, err := c.Patch(context.Background(), PathPatch{From: "mars"}); err == nil {
			t.Error("unknown site accepted")
		}
		links, err := c.Links(context.Background())
		if err != nil || len(links) != len(lab.Links()) {
			t.Fatalf("links: %d, %v", len(links), err)
		}
		if err := c.Block(context.Background(), BlockRequest{From: "us-east", Addr: netip.MustParseAddr("10.77.3.65"), Blocked: true}); err != nil {
			t.Fatal(err)
		}
		_ = lab.SetBlocked("us-east", netip.MustParseAddr("10.77.3.65"), false)
	})

	t.Run("unknown destinations are dropped, never forwarded", func(t *testing.T) {
		before := lab.Unroutable()
		s := dialUDP(t, east, netip.MustParseAddr("10.200.0.1"), 9)
		s.send(t, 3, 32, 0)
		if !waitFor(time.Second, func() bool { return lab.Unroutable() >= before+3 }) {
			t.Errorf("unroutable went %d -> %d, want +3", before, lab.Unroutable())
		}
	})

	t.Logf("emulator delay error over the whole test: %+v", lab.DelayError())
}

// bigBuffer lets a receiver absorb a burst while the test process is
// descheduled: a socket drop would look like path loss.
func bigBuffer(t testing.TB, c *net.UDPConn) {
	t.Helper()
	if err := control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	}); err != nil {
		t.Fatal(err)
	}
}

func setSockTTL(t testing.TB, s *sender, v6 bool, ttl int) {
	t.Helper()
	if err := control(s.conn, func(fd int) error {
		if v6 {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, ttl)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TTL, ttl)
	}); err != nil {
		t.Fatal(err)
	}
}

// setDF sets the Don't Fragment bit without letting the kernel's cached
// path MTU refuse the send (PMTUDISC_PROBE), as a PMTU prober does.
func setDF(t testing.TB, s *sender, v6 bool) {
	t.Helper()
	if err := control(s.conn, func(fd int) error {
		if v6 {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	}); err != nil {
		t.Fatal(err)
	}
}

// icmpListener is a raw ICMP / ICMPv6 socket inside a site.
type icmpListener struct {
	conn *net.IPConn
	v6   bool
}

type icmpMsg struct {
	at         time.Time // kernel receive timestamp
	from       netip.Addr
	typ, code  int
	mtu        int
	quotedPort uint16 // UDP source port of the quoted packet
}

func listenICMP(t testing.TB, s *Site, v6 bool) *icmpListener {
	t.Helper()
	network, addr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, addr = "ip6:ipv6-icmp", "::"
	}
	pc, err := s.ListenPacket(network, addr)
	if err != nil {
		t.Fatalf("raw ICMP socket in %s: %v", s.Name(), err)
	}
	t.Cleanup(func() { pc.Close() })
	c := pc.(*net.IPConn)
	if err := control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		t.Fatal(err)
	}
	return &icmpListener{conn: c, v6: v6}
}

// next returns the next ICMP error (echo traffic is skipped).
func (l *icmpListener) next(timeout time.Duration) (icmpMsg, error) {
	b := make([]byte, 2048)
	oob := make([]byte, 128)
	deadline := time.Now().Add(timeout)
	for {
		l.conn.SetReadDeadline(deadline)
		n, oobn, _, from, err := l.conn.ReadMsgIP(b, oob)
		if err != nil {
			return icmpMsg{}, err
		}
		if !l.v6 && n >= 20 {
			// Raw IPv4 sockets hand over the IP header too.
			ihl := int(b[0]&0x0f) * 4
			copy(b, b[ihl:n])
			n -= ihl
		}
		if n < 8 {
			continue
		}
		m := icmpMsg{typ: int(b[0]), code: int(b[1]), at: time.Now()}
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, cm := range msgs {
				if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16 {
					m.at = time.Unix(int64(binary.NativeEndian.Uint64(cm.Data)), int64(binary.NativeEndian.Uint64(cm.Data[8:])))
				}
			}
		}
		m.from, _ = netip.AddrFromSlice(from.IP)
		m.from = m.from.Unmap()
		isErr := (!l.v6 && (m.typ == 3 || m.typ == 11)) || (l.v6 && m.typ < 128)
		if !isErr {
			continue
		}
		if !l.v6 && m.typ == 3 && m.code == 4 {
			m.mtu = int(binary.BigEndian.Uint16(b[6:]))
		}
		if l.v6 && m.typ == 2 {
			m.mtu = int(binary.BigEndian.Uint32(b[4:]))
		}
		q := b[8:n]
		ihl := 40
		if !l.v6 && len(q) > 0 {
			ihl = int(q[0]&0x0f) * 4
		}
		if len(q) >= ihl+2 {
			m.quotedPort = binary.BigEndian.Uint16(q[ihl:])
		}
		return m, nil
	}
}

// quotes reports whether the error quoted a packet of this UDP socket.
func (m icmpMsg) quotes(c *net.UDPConn) bool {
	return m.quotedPort == uint16(c.LocalAddr().(*net.UDPAddr).Port)
}
