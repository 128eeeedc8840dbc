package stamp

import (
	"net/netip"
	"time"
)

// rateLimiter is a token bucket per source address. Only allow-listed
// sources reach it, so its map is bounded by the allow-list (and by
// maxSources for wide prefixes).
type rateLimiter struct {
	rate       float64 // tokens per second
	burst      float64
	maxSources int
	buckets    map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst, maxSources int) *rateLimiter {
	if burst < 1 {
		burst = 1
	}
	return &rateLimiter{rate: rate, burst: float64(burst), maxSources: maxSources, buckets: map[netip.Addr]*bucket{}}
}

// allow takes one token for src; false when the source is over its rate.
func (l *rateLimiter) allow(src netip.Addr, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	b, ok := l.buckets[src]
	if !ok {
		if len(l.buckets) >= l.maxSources {
			l.sweep(now)
			if len(l.buckets) >= l.maxSources {
				return false
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[src] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops buckets that have refilled completely: they hold no state.
func (l *rateLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
}
