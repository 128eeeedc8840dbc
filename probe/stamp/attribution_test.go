package stamp

import (
	"testing"
	"time"
)

// fakeSession drives a Sender's bookkeeping without sockets: packets are
// "sent" at 10 ms steps and replies are built as the reflector would.
// Packets are named by their index k (0 for the first): the sender
// numbers them firstSeq+k on the wire.
type fakeSession struct {
	t    *testing.T
	s    *Sender
	rec  *recorder
	base time.Time
}

func newFakeSession(t *testing.T, withDM bool) *fakeSession {
	rec := newRecorder()
	s, err := NewSender(SenderConfig{Target: "127.0.0.1", Interval: 10 * time.Millisecond, Timeout: 100 * time.Millisecond, Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	return &fakeSession{t: t, s: s, rec: rec, base: time.Unix(1764120000, 0)}
}

func (f *fakeSession) sendN(n int) {
	for range n {
		f.s.mu.Lock()
		seq := f.s.next
		f.s.next++
		f.s.ring[seq%uint32(len(f.s.ring))] = slot{seq: seq, state: slotPending, t1: f.base.Add(time.Duration(seq) * 10 * time.Millisecond)}
		f.s.mu.Unlock()
	}
}

// reply delivers the reply to packet k, which a stateful reflector
// numbered rseq (its own counter, from 0), arriving at 10 ms after sending
// + extra. With dm the reflector also filled the Direct Measurement TLV.
func (f *fakeSession) reply(k, rseq uint32, dm bool, extra time.Duration) {
	f.replyAs(k, rseq, dm, extra)
}

// replyStateless delivers the reply of a stateless reflector to packet k:
// it copies the sender's sequence number.
func (f *fakeSession) replyStateless(k uint32) {
	f.replyAs(k, firstSeq+k, false, 0)
}

func (f *fakeSession) replyAs(k, rseq uint32, dm bool, extra time.Duration) {
	seq := firstSeq + k
	t1 := f.base.Add(time.Duration(seq) * 10 * time.Millisecond)
	rp := ReflectorPacket{Seq: rseq, SSID: f.s.SSID(), SenderSeq: seq, SenderTimestamp: ToNTP(t1),
		ReceiveTimestamp: ToNTP(t1.Add(5 * time.Millisecond)), Timestamp: ToNTP(t1.Add(5 * time.Millisecond))}
	pkt := rp.AppendReflector(nil, Unauthenticated)
	if dm {
		off := len(pkt)
		pkt = AppendDirectMeasurement(pkt, DirectMeasurement{SenderTx: k + 1, ReflectorRx: rseq + 1, ReflectorTx: rseq + 1})
		pkt[off] = 0 // processed by the reflector: U cleared
	}
	f.s.handleReply(pkt, &rxMeta{}, t1.Add(10*time.Millisecond+extra))
}

// settle resolves everything sent (deadlines passed).
func (f *fakeSession) settle() {
	f.s.mu.Lock()
	f.s.advance(f.base.Add(time.Hour), false)
	f.s.mu.Unlock()
}

func TestLossAttribution(t *testing.T) {
	for _, dm := range []bool{false, true} {
		f := newFakeSession(t, dm)
		f.sendN(12)
		// 0,1 fine; 2 lost forward (the reflector never saw it); 3 is
		// the reflector's 2nd... index 2; 4 lost on the way back (index
		// 3); 5 is index 4; 6 and 7 both lost forward; 8 is index 5;
		// 9 lost back (6), 10 lost forward, 11 is index 7.
		f.reply(0, 0, dm, 0)
		f.reply(1, 1, dm, 0)
		f.reply(3, 2, dm, 0)
		f.reply(5, 4, dm, 0)
		f.reply(8, 5, dm, 0)
		f.reply(11, 7, dm, 0)
		f.settle()
		r := f.rec
		if r.fwd != 4 || r.rev != 2 || r.unattributed != 0 || r.replies != 6 {
			t.Errorf("dm=%v: forward %d reverse %d unattributed %d replies %d; want 4, 2, 0, 6", dm, r.fwd, r.rev, r.unattributed, r.replies)
		}
	}
}

func TestOutageThenRecovery(t *testing.T) {
	f := newFakeSession(t, false)
	f.sendN(10)
	f.reply(0, 0, false, 0)
	f.settle()
	// Nine packets lost and no reply yet: direction unknown.
	if f.rec.unattributed != 9 || f.rec.fwd+f.rec.rev != 0 {
		t.Fatalf("during the outage: unattributed %d, attributed %d/%d", f.rec.unattributed, f.rec.fwd, f.rec.rev)
	}
	// Recovery: the reflector saw 3 of the 9 (its index went 0 -> 4).
	f.sendN(1)
	f.reply(10, 4, false, 0)
	f.settle()
	if f.rec.fwd != 6 || f.rec.rev != 3 || f.rec.unattributed != 0 {
		t.Errorf("after recovery: forward %d reverse %d unattributed %d; want 6, 3, 0", f.rec.fwd, f.rec.rev, f.rec.unattributed)
	}
}

func TestReorderDuplicateLate(t *testing.T) {
	f := newFakeSession(t, false)
	f.sendN(6)
	f.reply(0, 0, false, 0)
	f.reply(2, 2, false, 0) // overtakes 1
	f.reply(1, 1, false, 0)
	f.reply(2, 2, false, 0) // again
	f.reply(3, 3, false, 0)
	f.reply(5, 5, false, 0)
	f.settle()                                 // 4 times out...
	f.reply(4, 4, false, 200*time.Millisecond) // ...and its reply comes after all
	r := f.rec
	if r.reord != 1 || r.dup != 1 || r.late != 1 {
		t.Errorf("reordered %d duplicates %d late %d; want 1 each", r.reord, r.dup, r.late)
	}
	// The reflector did get 4 (index 4): the loss was on the way back.
	if r.fwd != 0 || r.rev != 1 {
		t.Errorf("loss forward %d reverse %d; want 0, 1", r.fwd, r.rev)
	}
}

func TestForwardReorderingIsNotLoss(t *testing.T) {
	f := newFakeSession(t, false)
	f.sendN(6)
	// The reflector received 2 before 1 (indexes swapped), then 3 was
	// lost forward, 4 came back as index 3.
	f.reply(0, 0, false, 0)
	f.reply(1, 2, false, 0)
	f.reply(2, 1, false, 0)
	f.reply(4, 3, false, 0)
	f.reply(5, 4, false, 0)
	f.settle()
	if f.rec.fwd != 1 || f.rec.rev != 0 {
		t.Errorf("forward %d reverse %d; want 1, 0", f.rec.fwd, f.rec.rev)
	}
}

func TestReflectorRestart(t *testing.T) {
	f := newFakeSession(t, false)
	f.sendN(6)
	f.reply(0, 0, false, 0)
	f.reply(1, 1, false, 0)
	f.reply(2, 2, false, 0)
	// The reflector restarted and lost its session: its counter starts
	// again at 0 after packet 3 was lost.
	f.reply(4, 0, false, 0)
	f.reply(5, 1, false, 0)
	f.settle()
	// The split of the one loss cannot be known; it must be counted once.
	if f.rec.fwd+f.rec.rev != 1 {
		t.Errorf("forward %d reverse %d; want 1 loss in total", f.rec.fwd, f.rec.rev)
	}

	// A long-running session: the reflector was at index 5000 when it
	// restarted; afterwards attribution works on its new counter.
	f = newFakeSession(t, false)
	f.sendN(8)
	f.reply(0, 5000, false, 0)
	f.reply(1, 5001, false, 0)
	f.reply(3, 0, false, 0) // 2 lost, reflector restarted
	f.reply(4, 1, false, 0)
	f.reply(6, 3, false, 0) // 5 lost on the way back (index 2)
	f.reply(7, 4, false, 0)
	f.settle()
	if f.rec.fwd+f.rec.rev != 2 || f.rec.rev < 1 {
		t.Errorf("after a restart: forward %d reverse %d; want the second loss reverse", f.rec.fwd, f.rec.rev)
	}
}

// TestStatelessReflector: a stateless reflector copies the sender's
// sequence number (RFC 8762 section 4.3), so its replies say nothing about
// what it received: packets lost against it have no direction. The
// classification comes from the first reply, since the sender numbers from
// 1 and a stateful reflector from 0.
func TestStatelessReflector(t *testing.T) {
	f := newFakeSession(t, false)
	f.sendN(10)
	f.replyStateless(0)
	f.replyStateless(1)
	// 2 and 3 lost (forward or back: nobody can tell)
	for k := uint32(4); k < 10; k++ {
		f.replyStateless(k)
	}
	f.settle()
	r := f.rec
	if r.unknown != 2 || r.fwd != 0 || r.rev != 0 || r.statelessReplies != 8 || r.replies != 8 {
		t.Errorf("stateless: unknown %d forward %d reverse %d, %d of %d replies marked stateless; want 2, 0, 0, 8 of 8",
			r.unknown, r.fwd, r.rev, r.statelessReplies, r.replies)
	}

	// A stateful reflector (its own counter from 0, no Direct Measurement)
	// is known as such from its first reply.
	f = newFakeSession(t, false)
	f.sendN(4)
	f.reply(0, 0, false, 0)
	f.reply(2, 1, false, 0) // 1 lost on the way out: the reflector's 2nd packet
	f.reply(3, 2, false, 0)
	f.settle()
	if f.rec.statelessReplies != 0 || f.rec.unknown != 0 || f.rec.fwd != 1 {
		t.Errorf("stateful: %d stateless replies, unknown %d, forward %d reverse %d", f.rec.statelessReplies, f.rec.unknown, f.rec.fwd, f.rec.rev)
	}

	// A reflector that copies our sequence number but counts in the
	// Direct Measurement TLV splits loss by its counters.
	f = newFakeSession(t, true)
	f.sendN(4)
	f.replyAs(0, firstSeq+0, true, 0)
	f.replyAs(2, firstSeq+2, true, 0) // DM: 2nd packet received, so 1 was lost on the way out
	f.replyAs(3, firstSeq+3, true, 0)
	f.settle()
	if f.rec.statelessReplies != 0 || f.rec.unknown != 0 || f.rec.fwd+f.rec.rev != 1 {
		t.Errorf("copying reflector with counters: %d stateless replies, unknown %d, forward %d reverse %d",
			f.rec.statelessReplies, f.rec.unknown, f.rec.fwd, f.rec.rev)
	}

	// A stateful reflector whose counter starts at 1 looks stateless until
	// a forward loss makes its numbering diverge; from then on it is
	// stateful (sticky), and that loss is split correctly.
	f = newFakeSession(t, false)
	f.sendN(6)
	f.reply(0, 1, false, 0) // copies-looking: sender seq 1, reflector 1
	f.reply(1, 2, false, 0)
	// 2 lost forward: the reflector's counter stays at 3 for packet 3
	f.reply(3, 3, false, 0)
	f.reply(4, 4, false, 0) // equal numbers again, but it is known stateful now
	f.reply(5, 5, false, 0)
	f.settle()
	if f.rec.statelessReplies != 2 || f.rec.fwd != 1 || f.rec.rev != 0 || f.rec.unknown != 0 {
		t.Errorf("counter from 1: %d stateless replies (want the first 2), forward %d reverse %d unknown %d; want 1, 0, 0",
			f.rec.statelessReplies, f.rec.fwd, f.rec.rev, f.rec.unknown)
	}
}
