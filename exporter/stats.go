package exporter

import "time"

// lossWindow remembers the outcome of the last n finished probes, so the
// loss ratio reflects recent behaviour and resolves 1/n.
type lossWindow struct {
	bits   []uint64 // 1 = lost
	n      int      // capacity
	pos    int      // next write position
	filled int
	lost   int
}

func newLossWindow(n int) lossWindow {
	return lossWindow{bits: make([]uint64, (n+63)/64), n: n}
}

func (w *lossWindow) get(i int) bool { return w.bits[i/64]&(1<<(i%64)) != 0 }

func (w *lossWindow) set(i int, v bool) {
	if v {
		w.bits[i/64] |= 1 << (i % 64)
	} else {
		w.bits[i/64] &^= 1 << (i % 64)
	}
}

// add records one finished probe.
func (w *lossWindow) add(lost bool) {
	if w.filled == w.n {
		if w.get(w.pos) {
			w.lost--
		}
	} else {
		w.filled++
	}
	w.set(w.pos, lost)
	if lost {
		w.lost++
	}
	w.pos++
	if w.pos == w.n {
		w.pos = 0
	}
}

// ratio is lost/finished over the window; ok is false before any probe finished.
func (w *lossWindow) ratio() (r float64, ok bool) {
	if w.filled == 0 {
		return 0, false
	}
	return float64(w.lost) / float64(w.filled), true
}

// resize keeps the most recent outcomes that fit in the new size.
func (w *lossWindow) resize(n int) {
	if n == w.n {
		return
	}
	nw := newLossWindow(n)
	keep := min(w.filled, n)
	for i := keep; i > 0; i-- {
		idx := (w.pos - i + w.n) % w.n
		nw.add(w.get(idx))
	}
	*w = nw
}

// jitter is the RFC 3550 (section 6.4.1) interarrival-jitter estimator
// applied to consecutive round-trip times: J += (|D| - J) / 16, where D is
// the difference between two consecutive RTTs. Lost probes are skipped: D is
// taken between consecutive replies.
type jitter struct {
	last  time.Duration
	value float64 // seconds
	have  bool
}

func (j *jitter) add(rtt time.Duration) {
	if j.have {
		d := (rtt - j.last).Seconds()
		if d < 0 {
			d = -d
		}
		j.value += (d - j.value) / 16
	}
	j.last, j.have = rtt, true
}
