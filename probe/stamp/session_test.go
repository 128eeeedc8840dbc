package stamp

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// recorder is an Observer that keeps everything for assertions.
type recorder struct {
	mu                                  sync.Mutex
	sent, replies, fwd, rev, dup, reord int
	late, unattributed                  int
	unknown                             int // lost, direction unknown (stateless reflector)
	statelessReplies                    int
	errs                                map[string]int
	last                                Reply
	rtts                                []time.Duration
	fwdVar, revVar                      []time.Duration
	fwdOWD, revOWD                      []time.Duration
	syncedReplies                       int
	fwdRemarked, revRemarked            int
	hasFwdDSCP, hasRevDSCP              int
}

func newRecorder() *recorder { return &recorder{errs: map[string]int{}} }

func (r *recorder) Sent() { r.mu.Lock(); r.sent++; r.mu.Unlock() }
func (r *recorder) Reply(p *Reply) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replies++
	r.last = *p
	if p.Stateless {
		r.statelessReplies++
	}
	r.rtts = append(r.rtts, p.RTT)
	r.fwdVar = append(r.fwdVar, p.ForwardVariation)
	r.revVar = append(r.revVar, p.ReverseVariation)
	if p.Synced {
		r.syncedReplies++
		r.fwdOWD = append(r.fwdOWD, p.Forward)
		r.revOWD = append(r.revOWD, p.Reverse)
	}
	if p.HasForwardDSCP {
		r.hasFwdDSCP++
		if p.ForwardRemarked {
			r.fwdRemarked++
		}
	}
	if p.HasReverseDSCP {
		r.hasRevDSCP++
		if p.ReverseRemarked {
			r.revRemarked++
		}
	}
}
func (r *recorder) Lost(f, v int) { r.mu.Lock(); r.fwd += f; r.rev += v; r.mu.Unlock() }
func (r *recorder) LostUnknownDirection(n int) {
	r.mu.Lock()
	r.unknown += n
	r.mu.Unlock()
}
func (r *recorder) Unattributed(n int) { r.mu.Lock(); r.unattributed = n; r.mu.Unlock() }
func (r *recorder) Duplicate()         { r.mu.Lock(); r.dup++; r.mu.Unlock() }
func (r *recorder) Reordered()         { r.mu.Lock(); r.reord++; r.mu.Unlock() }
func (r *recorder) Late()              { r.mu.Lock(); r.late++; r.mu.Unlock() }
func (r *recorder) Error(s string)     { r.mu.Lock(); r.errs[s]++; r.mu.Unlock() }

// runSender runs a session for n packets (plus the timeout to settle) with
// its socket opened in ns.
func runSender(t *testing.T, ns *testutil.NetNS, cfg SenderConfig, n int) *recorder {
	t.Helper()
	rec := newRecorder()
	cfg.Observer = rec
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error { return s.Open(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Exactly n packets, paced by the interval: a stalled test machine
	// sends them later, never fewer. Then every packet gets its verdict:
	// after the timeout, the unanswered ones are resolved as lost.
	next := time.Now()
	for i := 0; i < n; i++ {
		s.Send()
		next = next.Add(cfg.Interval)
		time.Sleep(time.Until(next))
	}
	// Replies still coming in are waited for: until none came for a
	// timeout and a half.
	for last := -1; ; {
		rec.mu.Lock()
		got := rec.replies
		rec.mu.Unlock()
		if got >= n || got == last {
			break
		}
		last = got
		time.Sleep(cfg.Timeout * 3 / 2)
	}
	s.mu.Lock()
	s.advance(time.Now().Add(cfg.Timeout), false)
	s.mu.Unlock()
	_ = s.Close()
	return rec
}

// startReflector serves a probed reflector in ns on addr until the test ends.
func startReflector(t *testing.T, ns *testutil.NetNS, network, addr string, cfg ReflectorConfig) *Reflector {
	t.Helper()
	r, err := NewReflector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = Listen(context.Background(), network, addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Serve(ctx, conn) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func allow(t *testing.T, entries ...string) *AllowList {
	a, err := NewAllowList(entries)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSenderAgainstReflectorLoopback(t *testing.T) {
	ns := testutil.NewNetNS(t)
	for _, tc := range []struct {
		name, network, listen, target string
		mode                          Mode
	}{
		{"ipv4", "udp4", "0.0.0.0:862", "127.0.0.1", Unauthenticated},
		{"ipv6", "udp6", "[::]:862", "::1", Unauthenticated},
		{"ipv4-authenticated", "udp4", "127.0.0.1:1862", "127.0.0.1", Authenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var key *Key
			if tc.mode == Authenticated {
				key, _ = NewKey(testKey)
			}
			refl := startReflector(t, ns, tc.network, tc.listen, ReflectorConfig{
				Mode: tc.mode, Key: key, Allow: allow(t, "127.0.0.0/8", "::1"), Clock: FixedClock{Synced: true, MaxErr: time.Millisecond},
			})
			_, port, _ := net.SplitHostPort(tc.listen)
			p, _ := net.LookupPort("udp", port)
			rec := runSender(t, ns, SenderConfig{Target: tc.target, Port: uint16(p), TOS: 0xb8, Interval: 5 * time.Millisecond,
				Timeout: 100 * time.Millisecond, Size: 128, Mode: tc.mode, Key: key,
				Clock: FixedClock{Synced: true, MaxErr: time.Millisecond}}, 100)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			// Timer slack on a loaded machine may send fewer than 100.
			if rec.sent < 75 || rec.replies < rec.sent-2 {
				t.Fatalf("sent %d replies %d errors %v", rec.sent, rec.replies, rec.errs)
			}
			if rec.fwd+rec.rev != 0 || rec.dup != 0 || rec.late != 0 {
				t.Errorf("loss %d/%d dup %d late %d on loopback", rec.fwd, rec.rev, rec.dup, rec.late)
			}
			l := rec.last
			if l.RTT <= 0 || l.RTT > 50*time.Millisecond || l.Dwell < 0 {
				t.Errorf("RTT %v dwell %v", l.RTT, l.Dwell)
			}
			if !l.Synced || l.Forward < -time.Millisecond || l.Reverse < -time.Millisecond {
				t.Errorf("one-way delays %v/%v synced %v", l.Forward, l.Reverse, l.Synced)
			}
			if !l.HasForwardDSCP || l.ForwardRemarked || !l.HasReverseDSCP || l.ReverseRemarked || l.ReflectorDSCP != 46 {
				t.Errorf("DSCP: %+v", l)
			}
			if l.SenderTTL != 255 {
				t.Errorf("reflector saw TTL %d, want 255 on loopback", l.SenderTTL)
			}
			// A reply still in flight when the sender closed is counted
			// by the reflector only.
			if st := refl.Stats(); st.Reflected < uint64(rec.replies) || st.Reflected > uint64(rec.replies)+2 || st.Sessions != 1 {
				t.Errorf("reflector stats %+v, sender got %d replies", st, rec.replies)
			}
		})
	}
}

// minimalReflector is an independent stateful reflector written from RFC
// 8762 section 4.3 and figure 4 only: it rewrites the first 44 octets and
// leaves anything after them (TLVs) as received, as an RFC 8762 reflector
// that knows nothing of RFC 8972 would.
func minimalReflector(t *testing.T, conn *net.UDPConn) {
	buf := make([]byte, 2048)
	var seq uint32
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if n < 44 {
			continue
		}
		now := time.Now()
		ntp := func(t time.Time) uint64 {
			return uint64(t.Unix()+2208988800)<<32 | uint64(t.Nanosecond())*(1<<32)/1e9
		}
		out := make([]byte, n)
		copy(out[44:], buf[44:n])
		binary.BigEndian.PutUint32(out[0:], seq)             // reflector's sequence number
		binary.BigEndian.PutUint16(out[12:], 0x0001)         // error estimate: unsynchronised
		copy(out[14:16], buf[14:16])                         // SSID (RFC 8972)
		binary.BigEndian.PutUint64(out[16:], ntp(now))       // receive timestamp
		copy(out[24:28], buf[0:4])                           // sender sequence number
		copy(out[28:36], buf[4:12])                          // sender timestamp
		copy(out[36:38], buf[12:14])                         // sender error estimate
		out[40] = 255                                        // sender TTL (not read here)
		binary.BigEndian.PutUint64(out[4:], ntp(time.Now())) // transmit timestamp
		seq++
		if _, err := conn.WriteToUDPAddrPort(out, src); err != nil {
			return
		}
	}
}

func TestSenderAgainstIndependentReflector(t *testing.T) {
	ns := testutil.NewNetNS(t)
	var conn *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:862")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); minimalReflector(t, conn) }()
	defer func() { conn.Close(); <-done }()

	rec := runSender(t, ns, SenderConfig{Target: "127.0.0.1", Port: 862, Interval: 5 * time.Millisecond,
		Timeout: 100 * time.Millisecond, Clock: FixedClock{Synced: true}}, 100)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.sent < 75 || rec.replies < rec.sent-2 || rec.fwd+rec.rev != 0 {
		t.Fatalf("sent %d replies %d lost %d/%d errors %v", rec.sent, rec.replies, rec.fwd, rec.rev, rec.errs)
	}
	l := rec.last
	if l.RTT <= 0 || l.RTT > 50*time.Millisecond {
		t.Errorf("RTT %v", l.RTT)
	}
	// The minimal reflector says its clock is not synchronised: no
	// one-way delay may be reported as valid.
	if rec.syncedReplies != 0 {
		t.Errorf("%d replies taken as synchronised from an unsynchronised reflector", rec.syncedReplies)
	}
	// It echoed our TLVs untouched: they must not be read as its answer.
	if rec.hasFwdDSCP != 0 || rec.hasRevDSCP != 0 {
		t.Errorf("unprocessed CoS TLV taken as an answer (%d)", rec.hasFwdDSCP)
	}
}
