package netlab

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// wakeEarly is how long before a packet is due its output thread wakes up;
// it then spins until the exact time. The thread sleeps in a blocking read
// of a timerfd (an hrtimer, no timer slack) with real-time priority. On the
// 2-vCPU VM this was tuned on, such a wakeup alone lands 64 µs late at p50
// and 410 µs at p99 (VM timer delivery), so 100 µs of spin removes the
// typical lateness (scheduling error p50 ~1 µs) at a CPU cost of at most
// 100 µs per wakeup; packets due within that window share one wakeup.
const wakeEarly = 100 * time.Microsecond

// rtPriority is the SCHED_FIFO priority of the emulator's packet threads:
// low (1..99), just enough to run before ordinary processes when a packet
// is due. The kernel's RT throttling bounds what a bug could take.
const rtPriority = 10

// outQueue holds packets waiting for their delivery time into one site's
// TUN device. One locked OS thread drains it; any goroutine may push.
type outQueue struct {
	mu      sync.Mutex
	h       pktHeap
	seq     uint64
	armedAt int64 // due time the timer is armed for, -1 when disarmed
	closed  bool

	tfd   int // blocking timerfd
	tun   int // TUN fd
	clock *clock
	errs  *errHistogram
	// writeErrs counts packets the kernel refused (e.g. the device went
	// away during Close).
	writeErrs atomic.Uint64
	started   bool // run was launched; close waits for it
	stopped   chan struct{}
}

type queuedPacket struct {
	due int64 // ns on the lab clock
	seq uint64
	b   []byte
}

// pktHeap is a min-heap of packets by due time (then arrival order),
// typed so that pushing and popping allocate nothing.
type pktHeap []queuedPacket

func (h pktHeap) less(i, j int) bool {
	if h[i].due != h[j].due {
		return h[i].due < h[j].due
	}
	return h[i].seq < h[j].seq
}

func (h *pktHeap) push(p queuedPacket) {
	*h = append(*h, p)
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if !s.less(i, parent) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
}

func (h *pktHeap) pop() queuedPacket {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = queuedPacket{}
	s = s[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && s.less(l, m) {
			m = l
		}
		if r < n && s.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// Packet buffers are reused: the emulator's threads run at real-time
// priority, and a thread that allocates may be made to assist the garbage
// collector of the process (a test's, in the in-process lab) and deliver
// late. Two size classes cover ordinary and jumbo frames; larger packets
// (up to 64 KiB) are allocated.
var (
	smallPkts = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
	jumboPkts = sync.Pool{New: func() any { b := make([]byte, 0, 9216+128); return &b }}
)

// pktCopy returns a pooled copy of pkt.
func pktCopy(pkt []byte) []byte {
	var bp *[]byte
	switch {
	case len(pkt) <= 2048:
		bp = smallPkts.Get().(*[]byte)
	case len(pkt) <= 9216+128:
		bp = jumboPkts.Get().(*[]byte)
	default:
		return append([]byte(nil), pkt...)
	}
	return append((*bp)[:0], pkt...)
}

// pktFree returns b to its pool once it is written out.
func pktFree(b []byte) {
	switch cap(b) {
	case 2048:
		smallPkts.Put(&b)
	case 9216 + 128:
		jumboPkts.Put(&b)
	}
}

func newOutQueue(tun int, c *clock, errs *errHistogram) (*outQueue, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating timerfd: %w", err)
	}
	return &outQueue{armedAt: -1, tfd: fd, tun: tun, clock: c, errs: errs, stopped: make(chan struct{})}, nil
}

// push queues b for delivery at due.
func (q *outQueue) push(due int64, b []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.seq++
	q.h.push(queuedPacket{due: due, seq: q.seq, b: b})
	if q.armedAt < 0 || due < q.armedAt {
		q.arm(due)
	}
}

// arm sets the timer to fire wakeEarly before due. q.mu is held.
func (q *outQueue) arm(due int64) {
	q.armedAt = due
	d := due - int64(wakeEarly) - q.clock.now()
	if d < 1 {
		d = 1 // 0 would disarm
	}
	_ = unix.TimerfdSettime(q.tfd, 0, &unix.ItimerSpec{Value: unix.NsecToTimespec(d)}, nil)
}

// run delivers packets until close. It owns its OS thread.
func (q *outQueue) run() {
	defer close(q.stopped)
	// The thread is never unlocked: it ends with this goroutine, so its
	// real-time policy can never pass to other goroutines or to processes
	// they start.
	runtime.LockOSThread()
	setRealtime()
	var tick [8]byte
	var batch []queuedPacket
	for {
		if _, err := unix.Read(q.tfd, tick[:]); err != nil && err != unix.EINTR {
			return
		}
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return
		}
		q.armedAt = -1
		horizon := q.clock.now() + int64(wakeEarly)
		for len(q.h) > 0 && q.h[0].due <= horizon {
			batch = append(batch, q.h.pop())
		}
		if len(q.h) > 0 {
			q.arm(q.h[0].due)
		}
		q.mu.Unlock()
		for i := range batch {
			p := &batch[i]
			now := q.clock.now()
			for now < p.due {
				now = q.clock.now()
			}
			if _, err := unix.Write(q.tun, p.b); err != nil {
				q.writeErrs.Add(1)
			}
			q.errs.record(now - p.due)
			pktFree(p.b)
			batch[i] = queuedPacket{}
		}
		batch = batch[:0]
	}
}

// close stops run, drops what is queued and waits for the thread.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.h = nil
	// Wake the blocked read; closing the fd would not.
	_ = unix.TimerfdSettime(q.tfd, 0, &unix.ItimerSpec{Value: unix.NsecToTimespec(1)}, nil)
	q.mu.Unlock()
	if q.started {
		<-q.stopped
	}
	unix.Close(q.tfd)
}

// setRealtime gives the calling thread SCHED_FIFO priority when allowed;
// without it the lab still works, only with a larger delay error. Only
// call it on a thread locked for good (never unlocked).
func setRealtime() {
	_ = unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: rtPriority}, 0)
}

// clock is the lab's monotonic time in ns since the lab started.
type clock struct{ epoch time.Time }

func (c *clock) now() int64 { return int64(time.Since(c.epoch)) }

// errHistogram records how late the emulator delivered packets against
// their due time, in 1 µs buckets up to 10 ms (later ones land in the last
// bucket) and the exact maximum. Lock-free: every output goroutine records
// into it.
type errHistogram struct {
	buckets [10001]atomic.Uint64
	max     atomic.Int64 // ns
}

func (e *errHistogram) record(late int64) {
	for m := e.max.Load(); late > m && !e.max.CompareAndSwap(m, late); m = e.max.Load() {
	}
	us := late / 1000
	if us < 0 {
		us = 0
	}
	if us >= int64(len(e.buckets)) {
		us = int64(len(e.buckets) - 1)
	}
	e.buckets[us].Add(1)
}

// DelayError summarises how far delivery times missed their due times.
type DelayError struct {
	Count         uint64
	P50, P99, Max time.Duration
}

func (e *errHistogram) snapshot() DelayError {
	var counts [len(errHistogram{}.buckets)]uint64
	var d DelayError
	for i := range e.buckets {
		counts[i] = e.buckets[i].Load()
		d.Count += counts[i]
	}
	if d.Count == 0 {
		return d
	}
	q := func(f float64) time.Duration {
		rank := uint64(f*float64(d.Count-1)) + 1
		var c uint64
		for i, n := range counts {
			c += n
			if c >= rank {
				return time.Duration(i+1) * time.Microsecond // bucket upper bound
			}
		}
		return 0
	}
	d.P50, d.P99 = q(0.50), q(0.99)
	d.Max = time.Duration(e.max.Load())
	return d
}

func (e *errHistogram) reset() {
	for i := range e.buckets {
		e.buckets[i].Store(0)
	}
	e.max.Store(0)
}
