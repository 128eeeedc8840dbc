package probe

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/icmpsock"
)

// countingSink records what the engine reports.
type countingSink struct {
	mu      sync.Mutex
	ignored [NumIgnored]int
	recs    []*countingRec
	gone    map[string]bool
}

type countingRec struct {
	mu           sync.Mutex
	spec         *config.ProbeSpec
	sent         int
	rtts         []time.Duration
	reasons      []Reason
	unsent       []Reason
	resolveFails int
}

func (r *countingRec) Sent() { r.mu.Lock(); r.sent++; r.mu.Unlock() }
func (r *countingRec) Succeeded(_ Probe, d time.Duration) {
	r.mu.Lock()
	r.rtts = append(r.rtts, d)
	r.mu.Unlock()
}
func (r *countingRec) Failed(_ Probe, x Reason) {
	r.mu.Lock()
	r.reasons = append(r.reasons, x)
	r.mu.Unlock()
}
func (r *countingRec) Unsent(x Reason) { r.mu.Lock(); r.unsent = append(r.unsent, x); r.mu.Unlock() }
func (r *countingRec) Resolved(ok bool) {
	r.mu.Lock()
	if !ok {
		r.resolveFails++
	}
	r.mu.Unlock()
}

func (s *countingSink) Add(spec *config.ProbeSpec) Recorder {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &countingRec{spec: spec}
	s.recs = append(s.recs, r)
	return r
}
func (s *countingSink) Remove(spec *config.ProbeSpec, _ Recorder) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone == nil {
		s.gone = map[string]bool{}
	}
	s.gone[spec.Key()] = true
}

func (s *countingSink) removed(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gone[key]
}
func (s *countingSink) Ignored(i Ignored)          { s.mu.Lock(); s.ignored[i]++; s.mu.Unlock() }
func (s *countingSink) SchedulerLag(time.Duration) {}
func (s *countingSink) SocketDrops(uint64)         {}

// matchFixture is an icmpConn with one probe in flight, without a socket:
// it exercises the matching code on hand-built packets.
type matchFixture struct {
	c      *icmpConn
	sink   *countingSink
	rec    *countingRec
	t      *target
	seq    uint16
	serial uint64
	now    int64
}

func newMatchFixture(t *testing.T) *matchFixture {
	sink := &countingSink{}
	f := &matchFixture{sink: sink}
	e := New(Options{Log: zap.NewNop(), Sink: sink})
	e.clock = func() int64 { return f.now }
	f.c = newICMPConn(e.icmp, icmpsock.Key{})
	f.c.id, f.c.raw = 0x1234, true
	f.rec = sink.Add(nil).(*countingRec)
	f.t = &target{spec: &config.ProbeSpec{Target: "10.0.0.9", Timeout: time.Second}, rec: f.rec, timeout: int64(time.Second)}
	f.t.bound.Store(&binding{ip: netip.MustParseAddr("10.0.0.9")})
	return f
}

// inflight registers a probe as sent at mono time now, wall time wall.
func (f *matchFixture) inflight(wall int64) {
	f.c.seq++
	f.c.serial++
	f.seq, f.serial = f.c.seq, f.c.serial
	sl := &f.c.slots[f.seq&f.c.mask]
	*sl = slot{serial: f.serial, t: f.t, sentWall: wall, sentMono: f.now, deadline: f.now + f.t.timeout, seq: f.seq, id: f.c.id, state: slotInFlight}
	f.c.deadlines.push(pending{deadline: sl.deadline, serial: f.serial, seq: f.seq})
}

func (f *matchFixture) reply(id, seq uint16, token []byte, serial uint64, from string, kernel int64) {
	b := make([]byte, 8+56)
	b[0] = v4EchoReply
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:16], token)
	binary.BigEndian.PutUint64(b[16:24], serial)
	f.c.handle(&icmpsock.Packet{Data: b, From: netip.MustParseAddr(from), KernelTime: kernel}, 0x1234, true)
}

func TestReplyMatching(t *testing.T) {
	f := newMatchFixture(t)
	tok := f.c.p.token[:]
	const wall = int64(1_700_000_000_000_000_000)

	f.inflight(wall)
	f.now += int64(3 * time.Millisecond)
	// Another pinger on the host: different identifier.
	f.reply(0x9999, f.seq, tok, f.serial, "10.0.0.9", wall+1_000_000)
	// Right identifier, wrong token (an earlier run of the agent, or a forgery).
	f.reply(0x1234, f.seq, []byte("XXXXXXXX"), f.serial, "10.0.0.9", wall+1_000_000)
	// Right everything but from the wrong host.
	f.reply(0x1234, f.seq, tok, f.serial, "10.0.0.8", wall+1_000_000)
	// The genuine reply: RTT from the kernel stamp, not from the clock now.
	f.reply(0x1234, f.seq, tok, f.serial, "10.0.0.9", wall+1_500_000)
	// Its duplicate.
	f.reply(0x1234, f.seq, tok, f.serial, "10.0.0.9", wall+1_600_000)

	if len(f.rec.rtts) != 1 || f.rec.rtts[0] != 1500*time.Microsecond {
		t.Fatalf("rtts = %v, want [1.5ms]", f.rec.rtts)
	}
	want := map[Ignored]int{IgnoredForeign: 1, IgnoredForged: 2, IgnoredDuplicate: 1}
	for i, n := range want {
		if f.sink.ignored[i] != n {
			t.Errorf("ignored %s = %d, want %d", i, f.sink.ignored[i], n)
		}
	}

	// A probe that times out is lost once; its reply afterwards is late,
	// not a success and not a second loss.
	f.inflight(wall + int64(time.Second))
	lateSeq, lateSerial := f.seq, f.serial
	f.now += int64(time.Second) + expiryGrace
	f.c.expire(f.now)
	f.c.expire(f.now)
	f.reply(0x1234, lateSeq, tok, lateSerial, "10.0.0.9", wall+int64(2100*time.Millisecond))
	if len(f.rec.reasons) != 1 || f.rec.reasons[0] != ReasonTimeout {
		t.Fatalf("reasons = %v, want one timeout", f.rec.reasons)
	}
	if f.sink.ignored[IgnoredLate] != 1 || len(f.rec.rtts) != 1 {
		t.Fatalf("late = %d, rtts = %v", f.sink.ignored[IgnoredLate], f.rec.rtts)
	}

	// A reply stamped after the deadline but processed before the expiry
	// ran is still lost: the verdict follows the kernel's arrival time.
	f.inflight(wall + int64(5*time.Second))
	f.now += int64(1500 * time.Millisecond)
	f.reply(0x1234, f.seq, tok, f.serial, "10.0.0.9", wall+int64(5*time.Second)+int64(1200*time.Millisecond))
	if len(f.rec.reasons) != 2 || f.sink.ignored[IgnoredLate] != 2 {
		t.Fatalf("reply after deadline: reasons %v late %d", f.rec.reasons, f.sink.ignored[IgnoredLate])
	}
	f.c.expire(f.now + int64(time.Hour))
	if len(f.rec.reasons) != 2 {
		t.Fatalf("expiry counted a decided probe again: %v", f.rec.reasons)
	}

	// A reply whose sequence slot was reused by a newer probe is late.
	oldSeq, oldSerial := f.seq, f.serial
	f.c.seq = oldSeq - 1 // force reuse of the same sequence number
	f.inflight(wall + int64(10*time.Second))
	if f.seq != oldSeq {
		t.Fatal("fixture did not reuse the slot")
	}
	f.reply(0x1234, oldSeq, tok, oldSerial, "10.0.0.9", wall+int64(10*time.Second))
	if f.sink.ignored[IgnoredLate] != 3 {
		t.Fatalf("reused slot: late = %d", f.sink.ignored[IgnoredLate])
	}
}

// A wall-clock step between send and receive must not produce a negative
// or inflated RTT: the monotonic difference is used instead.
func TestClockStepFallsBackToMonotonic(t *testing.T) {
	f := newMatchFixture(t)
	const wall = int64(1_700_000_000_000_000_000)
	f.inflight(wall)
	f.now += int64(2 * time.Millisecond)
	f.reply(0x1234, f.seq, f.c.p.token[:], f.serial, "10.0.0.9", wall-int64(time.Hour))
	if len(f.rec.rtts) != 1 || f.rec.rtts[0] != 2*time.Millisecond {
		t.Fatalf("rtts = %v, want the monotonic 2ms", f.rec.rtts)
	}
}

func TestICMPErrorAttributed(t *testing.T) {
	f := newMatchFixture(t)
	f.inflight(1)
	// Destination unreachable (host) quoting our request to 10.0.0.9.
	b := make([]byte, 8+20+8)
	b[0], b[1] = v4Unreach, 1
	ip := b[8:]
	ip[0] = 0x45
	ip[9] = 1
	copy(ip[16:20], []byte{10, 0, 0, 9})
	q := ip[20:]
	q[0] = v4EchoRequest
	binary.BigEndian.PutUint16(q[4:], 0x1234)
	binary.BigEndian.PutUint16(q[6:], f.seq)
	f.c.handle(&icmpsock.Packet{Data: b, From: netip.MustParseAddr("192.0.2.1")}, 0x1234, true)
	if len(f.rec.reasons) != 1 || f.rec.reasons[0] != ReasonHostUnreachable {
		t.Fatalf("reasons = %v", f.rec.reasons)
	}
	// The same error again matches nothing in flight.
	f.c.handle(&icmpsock.Packet{Data: b, From: netip.MustParseAddr("192.0.2.1")}, 0x1234, true)
	if f.sink.ignored[IgnoredStrayError] != 1 {
		t.Fatalf("stray errors = %d", f.sink.ignored[IgnoredStrayError])
	}
	// Time exceeded for a packet to another destination is stray too.
	f.inflight(2)
	b[0], b[1] = v4TimeExceeded, 0
	binary.BigEndian.PutUint16(q[6:], f.seq)
	copy(ip[16:20], []byte{10, 0, 0, 7})
	f.c.handle(&icmpsock.Packet{Data: b, From: netip.MustParseAddr("192.0.2.1")}, 0x1234, true)
	if f.sink.ignored[IgnoredStrayError] != 2 || len(f.rec.reasons) != 1 {
		t.Fatalf("stray = %d reasons = %v", f.sink.ignored[IgnoredStrayError], f.rec.reasons)
	}
}

func TestReasonCodes(t *testing.T) {
	if reasonV4(3, 4) != ReasonPacketTooBig || reasonV4(3, 13) != ReasonAdminProhibited || reasonV4(11, 0) != ReasonTTLExceeded {
		t.Fatal("v4 reasons")
	}
	if reasonV6(2, 0) != ReasonPacketTooBig || reasonV6(1, 1) != ReasonAdminProhibited || reasonV6(1, 3) != ReasonHostUnreachable {
		t.Fatal("v6 reasons")
	}
}

// BenchmarkReplyPath measures the per-probe accounting: slot allocation,
// packet build, reply matching and the recorder, without the system calls.
func BenchmarkReplyPath(b *testing.B) {
	var now int64
	e := New(Options{Log: zap.NewNop(), Sink: nopSink{}})
	e.clock = func() int64 { return now }
	c := newICMPConn(e.icmp, icmpsock.Key{})
	c.id, c.raw = 7, true
	t := &target{spec: &config.ProbeSpec{Size: 56}, rec: nopRec{}, timeout: int64(time.Second)}
	t.bound.Store(&binding{ip: netip.MustParseAddr("10.0.0.9")})
	reply := make([]byte, 8+56)
	fillPayload(reply)
	pk := &icmpsock.Packet{Data: reply, From: netip.MustParseAddr("10.0.0.9")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now += 1000
		c.seq++
		c.serial++
		sl := &c.slots[c.seq&c.mask]
		*sl = slot{serial: c.serial, t: t, sentWall: now, sentMono: now, deadline: now + t.timeout, seq: c.seq, id: c.id, state: slotInFlight}
		buildEcho(c, reply, c.id, c.seq, c.serial, t.spec.Size)
		reply[0] = v4EchoReply
		pk.KernelTime = now + 500
		c.handle(pk, 7, true)
	}
}

// BenchmarkReplyPathFlows is the same for a job of 16 flows: each reply
// carries one of the socket's flow identifiers.
func BenchmarkReplyPathFlows(b *testing.B) {
	var now int64
	e := New(Options{Log: zap.NewNop(), Sink: nopSink{}})
	e.clock = func() int64 { return now }
	c := newICMPConn(e.icmp, icmpsock.Key{})
	c.id, c.raw = 7, true
	ids := make([]uint16, 16)
	for i := range ids {
		ids[i] = uint16(1000 + 37*i)
		c.setFlowBit(ids[i], true)
	}
	t := &target{spec: &config.ProbeSpec{Size: 56, Flows: 16}, rec: nopRec{}, timeout: int64(time.Second)}
	t.flows = &flowSet{n: 16}
	t.bound.Store(&binding{ip: netip.MustParseAddr("10.0.0.9"), flowIDs: ids})
	reply := make([]byte, 8+56)
	fillPayload(reply)
	pk := &icmpsock.Packet{Data: reply, From: netip.MustParseAddr("10.0.0.9")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now += 1000
		c.seq++
		c.serial++
		flow := t.flows.next(16)
		sl := &c.slots[c.seq&c.mask]
		*sl = slot{serial: c.serial, t: t, sentWall: now, sentMono: now, deadline: now + t.timeout, seq: c.seq, id: ids[flow], flow: uint16(flow), state: slotInFlight}
		buildEcho(c, reply, ids[flow], c.seq, c.serial, t.spec.Size)
		reply[0] = v4EchoReply
		pk.KernelTime = now + 500
		c.handle(pk, 7, true)
	}
}

type nopSink struct{}

func (nopSink) Add(*config.ProbeSpec) Recorder     { return nopRec{} }
func (nopSink) Remove(*config.ProbeSpec, Recorder) {}
func (nopSink) Ignored(Ignored)                    {}
func (nopSink) SchedulerLag(time.Duration)         {}
func (nopSink) SocketDrops(uint64)                 {}

type nopRec struct{}

func (nopRec) Sent()                          {}
func (nopRec) Succeeded(Probe, time.Duration) {}
func (nopRec) Failed(Probe, Reason)           {}
func (nopRec) Unsent(Reason)                  {}
func (nopRec) Resolved(bool)                  {}

// A reply the kernel received in time but the agent has not read yet (a
// stalled reader on a loaded machine) must not make its probe lost: expiry
// waits until the reader has drained the queue past the deadline.
func TestStalledReaderLosesNothing(t *testing.T) {
	f := newMatchFixture(t)
	sock := &fakeICMP{replies: make(chan icmpsock.Packet, 1)}
	f.c.sock = sock
	const wall = int64(1_700_000_000_000_000_000)
	f.inflight(wall)
	f.c.drained.Store(f.now) // the reader last drained at the send
	// The reply arrived 300 ms after the send and waits in the queue;
	// the reader is stalled past the 1 s deadline.
	sock.replies <- icmpsock.Packet{}
	f.now += int64(3 * time.Second)
	if next := f.c.expire(f.now); next == 0 || len(f.rec.reasons) != 0 {
		t.Fatalf("expired a probe whose reply waits unread (reasons %v, next %d)", f.rec.reasons, next)
	}
	// The reader runs: the reply is taken by its kernel stamp, in time.
	<-sock.replies
	f.reply(0x1234, f.seq, f.c.p.token[:], f.serial, "10.0.0.9", wall+int64(300*time.Millisecond))
	f.c.drained.Store(f.now)
	f.c.expire(f.now)
	if len(f.rec.rtts) != 1 || f.rec.rtts[0] != 300*time.Millisecond || len(f.rec.reasons) != 0 {
		t.Fatalf("rtts %v reasons %v, want one 300ms answer and no loss", f.rec.rtts, f.rec.reasons)
	}
	// A probe whose reply never comes is lost once the queue is drained
	// (or seen empty) past its deadline.
	f.inflight(wall + int64(4*time.Second))
	f.now += int64(2 * time.Second)
	f.c.expire(f.now) // queue empty: decided now
	if len(f.rec.reasons) != 1 || f.rec.reasons[0] != ReasonTimeout {
		t.Fatalf("reasons %v, want one timeout", f.rec.reasons)
	}
}

// The slot table grows when probes waiting for their deadline fill it, and
// every probe in flight keeps its verdict across the growth.
func TestSlotTableGrows(t *testing.T) {
	f := newMatchFixture(t)
	sock := &fakeICMP{replies: make(chan icmpsock.Packet, 1), n: newFakeNet()}
	f.c.sock = sock
	f.t.spec.Size = 56
	b := &binding{ip: netip.MustParseAddr("10.0.0.9"), sa: sockaddr(netip.MustParseAddr("10.0.0.9"), 0)}
	const n = 3 * minSlots
	for i := 0; i < n; i++ {
		f.c.send(f.t, b, -1, 0)
	}
	if len(f.c.slots) < n || f.rec.sent != n || len(f.rec.reasons) != 0 {
		t.Fatalf("%d slots for %d probes in flight, sent %d, failed %v", len(f.c.slots), n, f.rec.sent, f.rec.reasons)
	}
	for len(sock.replies) > 0 {
		<-sock.replies // nobody answers: the queue is empty
	}
	f.now += int64(2 * time.Second)
	f.c.expire(f.now)
	if len(f.rec.reasons) != n {
		t.Fatalf("%d of %d probes expired after the growth", len(f.rec.reasons), n)
	}
}
