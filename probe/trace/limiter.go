package trace

import (
	"context"
	"sync"
	"time"
)

// Limiter paces sends to a packets-per-second budget shared by every trace
// of a Tracer, so a mesh-wide discovery round never floods a link. Sends are
// spaced evenly (no burst): discovery has no latency target, only a budget.
type Limiter struct {
	mu       sync.Mutex
	interval time.Duration // 0: unlimited
	next     time.Time
}

// NewLimiter returns a limiter for pps packets per second; pps <= 0 means
// no limit.
func NewLimiter(pps int) *Limiter {
	l := &Limiter{}
	l.SetPPS(pps)
	return l
}

// SetPPS changes the budget; waiting senders keep the slot they were given.
func (l *Limiter) SetPPS(pps int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pps <= 0 {
		l.interval = 0
		return
	}
	l.interval = time.Second / time.Duration(pps)
}

// Wait blocks until the caller may send one packet.
func (l *Limiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	if l.interval == 0 {
		l.mu.Unlock()
		return ctx.Err()
	}
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = at.Add(l.interval)
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
