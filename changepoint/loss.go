package changepoint

import (
	"fmt"
	"time"
)

// LossParams define a loss episode: it starts when MinLost of the last Window
// probes are lost, and ends after Quiet consecutive answered probes.
// The defaults (3 of 20, 20 quiet) ignore a single lost probe, which at
// 1 probe/s is normal background, and do not split one bad minute into
// several episodes.
type LossParams struct {
	Window  int
	MinLost int
	Quiet   int
}

// DefaultLossParams: 3 lost of the last 20 probes starts an episode; 20
// answered in a row end it.
func DefaultLossParams() LossParams { return LossParams{Window: 20, MinLost: 3, Quiet: 20} }

// Validate reports the first bad parameter.
func (p LossParams) Validate() error {
	switch {
	case p.Window < 1 || p.Window > 64:
		return fmt.Errorf("loss window must be 1..64 probes, got %d", p.Window)
	case p.MinLost < 1 || p.MinLost > p.Window:
		return fmt.Errorf("lost probes to start an episode must be 1..%d (the window), got %d", p.Window, p.MinLost)
	case p.Quiet < 1:
		return fmt.Errorf("answered probes to end an episode must be ≥ 1, got %d", p.Quiet)
	}
	return nil
}

// LossEvent is the start or the end of a loss episode.
type LossEvent struct {
	// Started is true for the start, false for the end.
	Started bool
	// Start is the episode's first lost probe; End its last (for the end).
	Start, End time.Time
	// For the start: WindowLost of the last Window probes were lost.
	WindowLost, Window int
	// For the end: probes sent and lost from Start to End.
	Sent, Lost int
}

// Loss tracks loss episodes of one target. Not safe for concurrent use.
type Loss struct {
	p LossParams

	bits  uint64  // outcome ring, 1 = lost; bit i is slot i
	times []int64 // send times, Window slots
	pos   int     // next slot
	n     int     // slots filled
	lost  int     // ones among the filled slots

	in           bool
	start, last  int64 // first and last lost probe of the episode
	sent, nlost  int   // since start, including the trailing answered ones
	answeredTail int   // consecutive answered probes
}

// NewLoss returns a tracker; p must be valid.
func NewLoss(p LossParams) *Loss {
	if err := p.Validate(); err != nil {
		panic("changepoint: " + err.Error())
	}
	return &Loss{p: p, times: make([]int64, p.Window)}
}

// Add takes one probe's verdict. It returns an event when the episode
// starts or ends with this probe.
func (l *Loss) Add(at time.Time, lost bool) (LossEvent, bool) {
	t := at.UnixNano()
	// Ring of the last Window outcomes.
	if l.n == l.p.Window {
		if l.bits&(1<<l.pos) != 0 {
			l.lost--
		}
	} else {
		l.n++
	}
	if lost {
		l.bits |= 1 << l.pos
		l.lost++
	} else {
		l.bits &^= 1 << l.pos
	}
	l.times[l.pos] = t
	l.pos = (l.pos + 1) % l.p.Window

	if l.in {
		l.sent++
		if lost {
			l.nlost++
			l.last = t
			l.answeredTail = 0
			return LossEvent{}, false
		}
		l.answeredTail++
		if l.answeredTail < l.p.Quiet {
			return LossEvent{}, false
		}
		ev := LossEvent{Start: time.Unix(0, l.start), End: time.Unix(0, l.last),
			Sent: l.sent - l.answeredTail, Lost: l.nlost}
		l.in = false
		return ev, true
	}
	if !lost || l.lost < l.p.MinLost {
		return LossEvent{}, false
	}
	// Started: from the oldest lost probe still in the window.
	first, sentSince := t, 0
	for k := 0; k < l.n; k++ {
		i := (l.pos - l.n + k + 2*l.p.Window) % l.p.Window
		if l.bits&(1<<i) != 0 {
			first = l.times[i]
			sentSince = l.n - k
			break
		}
	}
	l.in, l.start, l.last = true, first, t
	l.sent, l.nlost, l.answeredTail = sentSince, l.lost, 0
	return LossEvent{Started: true, Start: time.Unix(0, first), WindowLost: l.lost, Window: l.p.Window}, true
}

// Active reports whether an episode is going on.
func (l *Loss) Active() bool { return l.in }
