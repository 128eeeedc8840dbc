package stamp

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"syscall"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/internal/testutil"
)

// The lab: namespace a (the sender side, 10.88.0.1 and an unlisted
// 10.88.0.3) and namespace b (the reflector side, 10.88.0.2), joined by a
// veth pair. Per-direction impairments are applied by a user-space relay
// in b (the kernel here has no netem): the sender talks to the relay on
// 10.88.0.2:7862, the relay to the reflector on 127.0.0.1:862 inside b.
type lab struct {
	a, b *testutil.NetNS
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{a: testutil.NewNetNS(t), b: testutil.NewNetNS(t)}
	l.a.MustRun(t, "ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", l.b.Name)
	l.a.MustRun(t, "ip", "addr", "add", "10.88.0.1/24", "dev", "veth-a")
	l.a.MustRun(t, "ip", "addr", "add", "10.88.0.3/24", "dev", "veth-a")
	l.a.MustRun(t, "ip", "link", "set", "veth-a", "up")
	l.b.MustRun(t, "ip", "addr", "add", "10.88.0.2/24", "dev", "veth-b")
	l.b.MustRun(t, "ip", "link", "set", "veth-b", "up")
	// Wait until the link carries traffic (carrier up, neighbour resolved),
	// so that short sessions do not start into a dead link.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := l.a.Run("ping", "-c", "1", "-W", "1", "-I", "10.88.0.1", "10.88.0.2"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the veth pair between the lab namespaces never came up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return l
}

// impair is one direction's impairment; fields are read per packet, so a
// test may change them while traffic flows.
type impair struct {
	loss  atomic.Uint64 // probability, as math.Float64bits
	delay atomic.Int64  // nanoseconds
	tos   int           // TOS the relay sends with (fixed at start)
	drops atomic.Int64

	// applied records the delay each forwarded packet really got (timers
	// fire late on a loaded machine): the ground truth for delay checks.
	mu      sync.Mutex
	applied []time.Duration
}

func (i *impair) record(d time.Duration) {
	i.mu.Lock()
	i.applied = append(i.applied, d)
	i.mu.Unlock()
}

// appliedTail returns the delays applied to the last n packets.
func (i *impair) appliedTail(n int) []time.Duration {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.applied[max(len(i.applied)-n, 0):])
}

func (i *impair) setLoss(p float64)        { i.loss.Store(math.Float64bits(p)) }
func (i *impair) setDelay(d time.Duration) { i.delay.Store(int64(d)) }

// relay is the impairment relay in namespace b.
type relay struct {
	fwd, rev    impair
	front, back *net.UDPConn
	sender      atomic.Pointer[netip.AddrPort]
	rngMu       sync.Mutex
	rng         *rand.Rand
	wg          sync.WaitGroup
}

func tosListen(addr string, tos int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, tos)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
			}
		})
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// startRelay starts the relay in b; fwdTOS/revTOS are the TOS values it
// sends with in each direction (a DSCP rewrite when they differ from the
// sender's).
func startRelay(t *testing.T, l *lab, fwdTOS, revTOS int, seed uint64) *relay {
	t.Helper()
	r := &relay{rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	r.fwd.tos, r.rev.tos = fwdTOS, revTOS
	if err := l.b.Do(func() error {
		var err error
		if r.front, err = tosListen("10.88.0.2:7862", revTOS); err != nil {
			return err
		}
		r.back, err = tosListen("127.0.0.1:0", fwdTOS)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	reflector := netip.MustParseAddrPort("127.0.0.1:862")
	pump := func(in *net.UDPConn, imp *impair, forward bool) {
		defer r.wg.Done()
		buf := make([]byte, 2048)
		oob := make([]byte, 128)
		for {
			n, oobn, _, src, err := in.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				return
			}
			// The kernel's receive time: the relay's own wake-up latency
			// (large on a busy machine) counts as part of the delay.
			arrived := time.Now()
			if cms, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, cm := range cms {
					if cm.Header.Level == unix.SOL_SOCKET && cm.Header.Type == unix.SCM_TIMESTAMPNS && len(cm.Data) >= 16 {
						arrived = time.Unix(int64(binary.NativeEndian.Uint64(cm.Data[0:])), int64(binary.NativeEndian.Uint64(cm.Data[8:])))
					}
				}
			}
			if forward {
				r.sender.Store(&src)
			}
			r.rngMu.Lock()
			drop := r.rng.Float64() < math.Float64frombits(imp.loss.Load())
			r.rngMu.Unlock()
			if drop {
				imp.drops.Add(1)
				continue
			}
			pkt := slices.Clone(buf[:n])
			send := func() {
				imp.record(time.Since(arrived))
				if forward {
					r.back.WriteToUDPAddrPort(pkt, reflector)
				} else if s := r.sender.Load(); s != nil {
					r.front.WriteToUDPAddrPort(pkt, *s)
				}
			}
			if d := time.Duration(imp.delay.Load()); d > 0 {
				time.AfterFunc(time.Until(arrived.Add(d)), send)
			} else {
				send()
			}
		}
	}
	r.wg.Add(2)
	go pump(r.front, &r.fwd, true)
	go pump(r.back, &r.rev, false)
	t.Cleanup(func() {
		r.front.Close()
		r.back.Close()
		r.wg.Wait()
	})
	return r
}

// labSession runs the reflector behind the relay and a sender in a.
func labSession(t *testing.T, l *lab, reflClock, sendClock ClockState, cfg SenderConfig, n int, during func(i int)) *recorder {
	t.Helper()
	startReflector(t, l.b, "udp4", "127.0.0.1:862", ReflectorConfig{Allow: allow(t, "127.0.0.1"), Clock: reflClock})
	return labSender(t, l, sendClock, cfg, n, during)
}

// labSender runs a sender in a through the relay to whatever reflector
// listens on 127.0.0.1:862 in b, until n packets are sent and resolved.
func labSender(t *testing.T, l *lab, sendClock ClockState, cfg SenderConfig, n int, during func(i int)) *recorder {
	t.Helper()
	cfg.Target, cfg.Port, cfg.Clock = "10.88.0.2", 7862, sendClock
	rec := newRecorder()
	cfg.Observer = rec
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.a.Do(func() error { return s.Open(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for {
		rec.mu.Lock()
		sent := rec.sent
		rec.mu.Unlock()
		if during != nil {
			during(sent)
		}
		if sent >= n {
			break
		}
		time.Sleep(cfg.Interval)
	}
	// Let every packet reach its verdict (reply or timeout) before stopping:
	// stop sending by cancelling only after the timeout has passed... the
	// sender keeps sending meanwhile, which only adds resolved packets.
	time.Sleep(cfg.Timeout + 50*time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return rec
}

// binomial99 is the 99.9% interval of a binomial count (normal
// approximation, fine for n*p >= 10).
func binomial99(n int, p float64) (lo, hi float64) {
	mu := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	return mu - 3.29*sd, mu + 3.29*sd
}

func TestLabAsymmetricLoss(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name     string
		fwd, rev float64
	}{
		{"forward5pct", 0.05, 0},
		{"reverse5pct", 0, 0.05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			rl := startRelay(t, l, 0, 0, 8762)
			rl.fwd.setLoss(tc.fwd)
			rl.rev.setLoss(tc.rev)
			const n = 2000
			rec := labSession(t, l, FixedClock{}, FixedClock{}, SenderConfig{Interval: time.Millisecond, Timeout: 200 * time.Millisecond}, n, nil)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			resolved := rec.replies + rec.fwd + rec.rev + rec.unattributed
			fd, rd := int(rl.fwd.drops.Load()), int(rl.rev.drops.Load())
			t.Logf("sent %d resolved %d replies %d: lost forward %d (relay dropped %d), reverse %d (relay dropped %d), unattributed %d",
				rec.sent, resolved, rec.replies, rec.fwd, fd, rec.rev, rd, rec.unattributed)
			if resolved < n {
				t.Fatalf("only %d of %d packets resolved", resolved, rec.sent)
			}
			for _, d := range []struct {
				dir       string
				got, drop int
				p         float64
			}{{"forward", rec.fwd, fd, tc.fwd}, {"reverse", rec.rev, rd, tc.rev}} {
				// Each attributed loss must be one the relay made in that
				// direction; only drops among the packets still unresolved
				// at the end (in flight, or lost after the last reply) may
				// be missing.
				if slack := rec.sent - resolved + rec.unattributed; d.got > d.drop || d.got < d.drop-slack {
					t.Errorf("%s: attributed %d, relay dropped %d", d.dir, d.got, d.drop)
				}
				if d.p == 0 {
					if d.got != 0 {
						t.Errorf("%s: %d losses attributed to a lossless direction", d.dir, d.got)
					}
					continue
				}
				lo, hi := binomial99(resolved, d.p)
				if float64(d.got) < lo || float64(d.got) > hi {
					t.Errorf("%s: %d lost of %d, outside the 99.9%% binomial interval [%.0f, %.0f] for p=%g", d.dir, d.got, resolved, lo, hi, d.p)
				}
			}
		})
	}
}

// TestLabStatelessReflector: 5% loss on the way out to an independent
// reflector (rfcpeer_test.go) that keeps no Direct Measurement counters.
// A stateful one numbers its replies itself, and the loss is found forward.
// A stateless one copies the sender's sequence number (RFC 8762 section
// 4.3): the direction cannot be known, so the loss is counted with
// direction unknown and the session is marked stateless - never as reverse
// loss, which is what a sender reading its copied numbers would conclude.
func TestLabStatelessReflector(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name      string
		stateless bool
	}{{"stateful", false}, {"stateless", true}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			rl := startRelay(t, l, 0, 0, 8972)
			rl.fwd.setLoss(0.05)
			startRFCReflector(t, l.b, "127.0.0.1:862", &rfcReflector{stateless: tc.stateless, tlvs: true})
			const n = 1000
			rec := labSender(t, l, FixedClock{}, SenderConfig{Interval: time.Millisecond, Timeout: 200 * time.Millisecond}, n, nil)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			fd, rd := int(rl.fwd.drops.Load()), int(rl.rev.drops.Load())
			resolved := rec.replies + rec.fwd + rec.rev + rec.unknown + rec.unattributed
			t.Logf("sent %d resolved %d replies %d (%d marked stateless): lost forward %d reverse %d unknown %d unattributed %d; relay dropped %d forward, %d reverse",
				rec.sent, resolved, rec.replies, rec.statelessReplies, rec.fwd, rec.rev, rec.unknown, rec.unattributed, fd, rd)
			if resolved < n || fd < 20 || rd != 0 {
				t.Fatalf("resolved %d of %d, relay drops %d/%d", resolved, rec.sent, fd, rd)
			}
			// Every loss counted is one the relay made; only drops among
			// the packets unresolved at the end may be missing.
			slack := rec.sent - resolved + rec.unattributed
			lost, other := rec.fwd, rec.rev+rec.unknown
			if tc.stateless {
				lost, other = rec.unknown, rec.fwd+rec.rev
			}
			if lost > fd || lost < fd-slack || other != 0 {
				t.Errorf("relay dropped %d forward: counted forward %d reverse %d unknown %d", fd, rec.fwd, rec.rev, rec.unknown)
			}
			if want := map[bool]int{true: rec.replies, false: 0}[tc.stateless]; rec.statelessReplies != want {
				t.Errorf("%d of %d replies marked stateless, want %d", rec.statelessReplies, rec.replies, want)
			}
		})
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestLabAsymmetricDelay(t *testing.T) {
	testutil.RequireRoot(t)
	// Phase 1: forward 0, reverse 5 ms. Phase 2: forward 20 ms.
	const (
		revDelay = 5 * time.Millisecond
		fwdDelay = 20 * time.Millisecond
		n1, n2   = 150, 150
	)
	for _, tc := range []struct {
		name   string
		synced bool
	}{{"synchronised", true}, {"unsynchronised", false}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			rl := startRelay(t, l, 0, 0, 1)
			rl.rev.setDelay(revDelay)
			clock := FixedClock{Synced: tc.synced, MaxErr: 100 * time.Microsecond}
			var phase2 int
			rec := labSession(t, l, clock, clock, SenderConfig{Interval: 5 * time.Millisecond, Timeout: 500 * time.Millisecond,
				VariationWindow: 1000}, n1+n2, func(sent int) {
				if sent >= n1 && phase2 == 0 {
					phase2 = sent
					rl.fwd.setDelay(fwdDelay)
				}
			})
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.replies < n1+n2-5 {
				t.Fatalf("%d replies", rec.replies)
			}
			// The last 100 replies are all in phase 2. The expected
			// values come from the delays the relay really applied
			// (its timers fire late under load); the sockets and
			// scheduling add noise of their own, hence 3 ms.
			k := len(rec.fwdVar) - 100
			fv, rv := median(rec.fwdVar[k:]), median(rec.revVar[k:])
			rtt := median(rec.rtts[k:])
			appF, appR := median(rl.fwd.appliedTail(100)), median(rl.rev.appliedTail(100))
			minF := slices.Min(rl.fwd.appliedTail(n1 + n2 + 100))
			minR := slices.Min(rl.rev.appliedTail(n1 + n2 + 100))
			t.Logf("phase 2 medians: forward variation %v (relay added %v over its minimum), reverse variation %v (%v); RTT %v (relay added %v); synchronised replies %d",
				fv, appF-minF, rv, appR-minR, rtt, appF+appR, rec.syncedReplies)
			const tol = 3 * time.Millisecond
			near := func(got, want time.Duration) bool { return got > want-tol && got < want+tol }
			if !near(fv, appF-minF) || !near(rv, appR-minR) || fv < fwdDelay-time.Millisecond || rv > fv/2 {
				t.Errorf("variation forward %v reverse %v, want %v and %v", fv, rv, appF-minF, appR-minR)
			}
			if rtt < appF+appR-time.Millisecond || rtt > appF+appR+2*tol {
				t.Errorf("RTT %v, want %v", rtt, appF+appR)
			}
			if !tc.synced {
				if rec.syncedReplies != 0 {
					t.Errorf("%d replies reported one-way delay with unsynchronised clocks", rec.syncedReplies)
				}
				return
			}
			j := len(rec.fwdOWD) - 100
			fo, ro := median(rec.fwdOWD[j:]), median(rec.revOWD[j:])
			t.Logf("one-way delay medians: forward %v reverse %v (relay applied %v / %v)", fo, ro, appF, appR)
			if !near(fo, appF) || !near(ro, appR) || fo < fwdDelay-time.Millisecond || ro < revDelay-time.Millisecond {
				t.Errorf("one-way delay forward %v reverse %v, want %v and %v", fo, ro, appF, appR)
			}
		})
	}
}

func TestLabDSCPRewrite(t *testing.T) {
	testutil.RequireRoot(t)
	const ef = 0xb8 // DSCP 46
	for _, tc := range []struct {
		name           string
		fwdTOS, revTOS int
		fwd, rev       bool
	}{
		{"none", ef, ef, false, false},
		{"forward", 0, ef, true, false},
		{"reverse", ef, 0x28, false, true}, // AF11 on the way back
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t)
			startRelay(t, l, tc.fwdTOS, tc.revTOS, 2)
			rec := labSession(t, l, FixedClock{}, FixedClock{}, SenderConfig{TOS: ef, Interval: 5 * time.Millisecond, Timeout: 200 * time.Millisecond}, 40, nil)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.hasFwdDSCP < rec.replies || rec.hasRevDSCP < rec.replies || rec.replies < 35 {
				t.Fatalf("replies %d with forward DSCP %d reverse %d", rec.replies, rec.hasFwdDSCP, rec.hasRevDSCP)
			}
			gotF, gotR := rec.fwdRemarked == rec.replies, rec.revRemarked == rec.replies
			if (tc.fwd && !gotF) || (!tc.fwd && rec.fwdRemarked != 0) || (tc.rev && !gotR) || (!tc.rev && rec.revRemarked != 0) {
				t.Errorf("remarked forward %d reverse %d of %d replies; want forward %v reverse %v (last %+v)",
					rec.fwdRemarked, rec.revRemarked, rec.replies, tc.fwd, tc.rev, rec.last)
			}
		})
	}
}

// rawExchange sends pkt from a fresh socket in ns to addr and returns the
// reply, or nil after a short wait.
func rawExchange(t *testing.T, ns *testutil.NetNS, addr string, pkt []byte) []byte {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDPAddrPort(pkt, netip.MustParseAddrPort(addr)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestReflectorNeverAmplifies(t *testing.T) {
	ns := testutil.NewNetNS(t)
	refl := startReflector(t, ns, "udp4", "127.0.0.1:862", ReflectorConfig{Allow: allow(t, "127.0.0.1")})
	base := (&SenderPacket{Seq: 1, SSID: 7}).AppendSender(nil, Unauthenticated)
	unknown := append(slices.Clone(base), 0, 200, 0, 2, 0xaa, 0xbb)      // unknown type 200
	malformed := append(slices.Clone(base), 0, TLVClassOfService, 0, 40) // length runs past the end
	for name, pkt := range map[string][]byte{
		"base":      base,
		"padded":    AppendExtraPadding(slices.Clone(base), 1000),
		"unknown":   unknown,
		"malformed": malformed,
	} {
		reply := rawExchange(t, ns, "127.0.0.1:862", pkt)
		if len(reply) != len(pkt) {
			t.Errorf("%s: sent %d octets, reflected %d", name, len(pkt), len(reply))
			continue
		}
		switch name {
		case "unknown":
			if reply[BaseLen]&FlagU == 0 {
				t.Errorf("unknown TLV not flagged U: %x", reply[BaseLen:])
			}
		case "malformed":
			if reply[BaseLen]&FlagM == 0 {
				t.Errorf("malformed TLV not flagged M: %x", reply[BaseLen:])
			}
		}
	}
	// Shorter than a base packet: no answer at all.
	if r := rawExchange(t, ns, "127.0.0.1:862", base[:20]); r != nil {
		t.Errorf("a 20-octet datagram got a %d-octet answer", len(r))
	}
	// Authenticated reflector: a packet with a bad HMAC gets no answer.
	key, _ := NewKey(testKey)
	startReflector(t, ns, "udp4", "127.0.0.1:863", ReflectorConfig{Mode: Authenticated, Key: key, Allow: allow(t, "127.0.0.1")})
	ap := (&SenderPacket{Seq: 1}).AppendSender(nil, Authenticated)
	if r := rawExchange(t, ns, "127.0.0.1:863", ap); r != nil {
		t.Errorf("unsigned packet answered in authenticated mode")
	}
	key.SignBase(ap)
	if r := rawExchange(t, ns, "127.0.0.1:863", ap); len(r) != AuthBaseLen {
		t.Errorf("signed packet: reply of %d octets", len(r))
	}
	if st := refl.Stats(); st.Malformed != 1 || st.Reflected != 4 {
		t.Errorf("stats %+v", st)
	}
}

func TestReflectorRateLimit(t *testing.T) {
	ns := testutil.NewNetNS(t)
	// 100 packets/s with bursts of 10, offered 1000 packets/s for ~1 s.
	startReflector(t, ns, "udp4", "127.0.0.1:862", ReflectorConfig{Allow: allow(t, "127.0.0.1"), RateLimit: 100, Burst: 10})
	start := time.Now()
	rec := runSender(t, ns, SenderConfig{Target: "127.0.0.1", Port: 862, Interval: time.Millisecond, Timeout: 100 * time.Millisecond}, 1000)
	el := time.Since(start).Seconds()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	max := 100*el + 10 + 5
	t.Logf("offered %d packets in %.2fs, %d answered (limit allows %.0f)", rec.sent, el, rec.replies, max)
	if float64(rec.replies) > max || rec.replies < 50 {
		t.Errorf("%d replies, want between 50 and %.0f", rec.replies, max)
	}
	// What the limiter dropped never reached the session: forward loss.
	if rec.rev > 2 || rec.fwd < rec.sent-rec.replies-rec.unattributed-150 {
		t.Errorf("rate-limited packets attributed forward %d reverse %d", rec.fwd, rec.rev)
	}
}
