package stampmetrics

import (
	"sync"
	"time"

	"github.com/probed/probed/changepoint"
	"github.com/probed/probed/events"
	"github.com/probed/probed/probe/stamp"
)

// sessionEvents turns one session's measurements into events:
//
//   - dscp_remarked when a direction's DSCP arrives different from what
//     was sent (from the first reply on: a re-marking path is news),
//     dscp_restored when it arrives as sent again;
//   - stamp_loss_started when a direction starts losing packets: a loss
//     episode of changepoint.Loss with its defaults (3 of the last 20
//     packets lost in that direction; over after 20 in a row arrive).
//     Packets lost forward never reached the reflector, so they say
//     nothing of the reverse direction; a packet lost on the way back did
//     cross forward.
//
// Times are when the agent learns the fact (the reply that showed it).
type sessionEvents struct {
	emit func(events.Event)
	l    events.Labels

	mu               sync.Mutex
	remFwd, remRev   bool
	lossFwd, lossRev *changepoint.Loss
}

func (e *sessionEvents) reply(r *stamp.Reply) {
	if e == nil {
		return
	}
	now := time.Now()
	var out []events.Event
	e.mu.Lock()
	if r.HasForwardDSCP && r.ForwardRemarked != e.remFwd {
		e.remFwd = r.ForwardRemarked
		if r.ForwardRemarked {
			out = append(out, events.NewDSCPRemarked(now, e.l, Forward, int(r.SentDSCP), int(r.ReflectorDSCP)))
		} else {
			out = append(out, events.NewDSCPRestored(now, e.l, Forward))
		}
	}
	if r.HasReverseDSCP && r.ReverseRemarked != e.remRev {
		e.remRev = r.ReverseRemarked
		if r.ReverseRemarked {
			out = append(out, events.NewDSCPRemarked(now, e.l, Reverse, int(r.RequestedDSCP), int(r.ReceivedDSCP)))
		} else {
			out = append(out, events.NewDSCPRestored(now, e.l, Reverse))
		}
	}
	// The reply crossed both ways.
	out = e.feed(out, e.lossFwd, Forward, now, false)
	out = e.feed(out, e.lossRev, Reverse, now, false)
	e.mu.Unlock()
	for _, ev := range out {
		e.emit(ev)
	}
}

func (e *sessionEvents) lost(forward, reverse int) {
	if e == nil || forward+reverse == 0 {
		return
	}
	now := time.Now()
	var out []events.Event
	e.mu.Lock()
	for range forward {
		out = e.feed(out, e.lossFwd, Forward, now, true)
	}
	for range reverse {
		// Lost on the way back: it did arrive forward.
		out = e.feed(out, e.lossFwd, Forward, now, false)
		out = e.feed(out, e.lossRev, Reverse, now, true)
	}
	e.mu.Unlock()
	for _, ev := range out {
		e.emit(ev)
	}
}

// feed adds one packet's fate in direction dir. e.mu is held.
func (e *sessionEvents) feed(out []events.Event, l *changepoint.Loss, dir string, at time.Time, lost bool) []events.Event {
	if ev, ok := l.Add(at, lost); ok && ev.Started {
		out = append(out, events.NewSTAMPLossStarted(ev.Start, e.l, dir, ev.WindowLost, ev.Window))
	}
	return out
}
