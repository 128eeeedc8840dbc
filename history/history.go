// Package history keeps each target's recent past in memory, per minute:
// minimum, median and maximum RTT and the probes finished and lost, for the
// console's smokeping-style charts. It is fed every probe verdict without
// allocating, and costs about 4.5 kB per target for 6 hours (see
// docs/console.md); it can be turned off for very large meshes.
package history

import (
	"math/bits"
	"slices"
	"sync"
	"time"
)

// DefaultDuration is how much history is kept unless configured.
const DefaultDuration = 6 * time.Hour

// samplesPerMinute bounds the RTT samples kept for the current minute's
// median. Up to this many answered probes a minute (every interval ≥
// about 1 s) the median is exact; beyond, it is the median of a uniform
// random sample of the minute's RTTs (reservoir sampling). Min and max are
// always exact.
const samplesPerMinute = 64

// Options configure a Store.
type Options struct {
	// Disabled turns history off: Add returns nil, whose methods do
	// nothing, so the probe path costs nothing.
	Disabled bool
	// Duration kept, rounded up to whole minutes (default 6 h).
	Duration time.Duration
}

// Key identifies a probe series, with the labels of /metrics.
type Key struct {
	SourceSite string `json:"source_site"`
	TargetSite string `json:"target_site"`
	Target     string `json:"target"`
	Path       string `json:"path"`
	Segment    string `json:"segment"`
	Protocol   string `json:"protocol"`
	Port       string `json:"port"`
}

// Store holds the history of every target.
type Store struct {
	o       Options
	minutes int

	mu     sync.RWMutex
	series map[Key]*Series
}

// New returns a store.
func New(o Options) *Store {
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	return &Store{o: o, minutes: int((o.Duration + time.Minute - 1) / time.Minute), series: map[Key]*Series{}}
}

// Enabled reports whether history is kept.
func (s *Store) Enabled() bool { return s != nil && !s.o.Disabled }

// Minutes is the number of minutes kept per target.
func (s *Store) Minutes() int { return s.minutes }

// Add returns the series of k, creating it if needed: a target that stays
// across a reload keeps its history. Nil when history is disabled.
func (s *Store) Add(k Key) *Series {
	if !s.Enabled() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sr, ok := s.series[k]; ok {
		return sr
	}
	sr := &Series{ring: make([]bucket, s.minutes), curMin: -1, rng: uint32(len(s.series))*2654435761 + 1}
	s.series[k] = sr
	return sr
}

// Remove drops the history of k (the target left the plan).
func (s *Store) Remove(k Key) {
	if !s.Enabled() {
		return
	}
	s.mu.Lock()
	delete(s.series, k)
	s.mu.Unlock()
}

// Get returns the series of k, or nil.
func (s *Store) Get(k Key) *Series {
	if !s.Enabled() {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.series[k]
}

// Keys returns the keys of every series, sorted.
func (s *Store) Keys() []Key {
	if !s.Enabled() {
		return nil
	}
	s.mu.RLock()
	out := make([]Key, 0, len(s.series))
	for k := range s.series {
		out = append(out, k)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Key) int {
		for _, p := range [][2]string{{a.SourceSite, b.SourceSite}, {a.TargetSite, b.TargetSite}, {a.Path, b.Path},
			{a.Segment, b.Segment}, {a.Target, b.Target}, {a.Protocol, b.Protocol}, {a.Port, b.Port}} {
			if p[0] != p[1] {
				if p[0] < p[1] {
					return -1
				}
				return 1
			}
		}
		return 0
	})
	return out
}

// bucket is one finished minute: 10 bytes. RTTs are stored in the
// 16-bit format of enc.
type bucket struct {
	min, med, max uint16
	sent, lost    uint16
}

// Series is one target's history. Its methods are safe for concurrent use
// and do nothing on a nil *Series.
type Series struct {
	mu     sync.Mutex
	ring   []bucket // minute m is at m % len(ring)
	curMin int64    // the minute being accumulated (Unix minutes); -1 before the first verdict

	// The current minute.
	samples    [samplesPerMinute]uint16
	n          uint16 // samples held
	answered   uint32 // answered probes this minute (reservoir denominator)
	cmin, cmax uint16
	sent, lost uint16
	rng        uint32
}

// Observe records an answered probe, at its verdict time.
func (sr *Series) Observe(at time.Time, rtt time.Duration) {
	if sr == nil {
		return
	}
	v := enc(rtt)
	sr.mu.Lock()
	sr.advance(at.Unix() / 60)
	sr.sent = satInc(sr.sent)
	if sr.answered == 0 || v < sr.cmin {
		sr.cmin = v
	}
	if sr.answered == 0 || v > sr.cmax {
		sr.cmax = v
	}
	sr.answered++
	if int(sr.n) < samplesPerMinute {
		sr.samples[sr.n] = v
		sr.n++
	} else {
		// Reservoir: keep this one with probability samplesPerMinute/answered.
		sr.rng ^= sr.rng << 13
		sr.rng ^= sr.rng >> 17
		sr.rng ^= sr.rng << 5
		if i := sr.rng % sr.answered; i < samplesPerMinute {
			sr.samples[i] = v
		}
	}
	sr.mu.Unlock()
}

// Lost records a lost probe, at its verdict time.
func (sr *Series) Lost(at time.Time) {
	if sr == nil {
		return
	}
	sr.mu.Lock()
	sr.advance(at.Unix() / 60)
	sr.sent = satInc(sr.sent)
	sr.lost = satInc(sr.lost)
	sr.mu.Unlock()
}

func satInc(v uint16) uint16 {
	if v == 0xFFFF {
		return v
	}
	return v + 1
}

// advance closes the current minute when m is later. A verdict stamped
// earlier than the current minute (clock step) counts in the current one.
// sr.mu is held.
func (sr *Series) advance(m int64) {
	if m <= sr.curMin {
		return
	}
	if sr.curMin >= 0 {
		sr.ring[sr.curMin%int64(len(sr.ring))] = sr.closeMinute()
		// Minutes without any verdict are empty.
		gap := min(m-sr.curMin-1, int64(len(sr.ring)))
		for i := int64(1); i <= gap; i++ {
			sr.ring[(sr.curMin+i)%int64(len(sr.ring))] = bucket{}
		}
	} else {
		clear(sr.ring)
	}
	sr.curMin = m
	sr.n, sr.answered, sr.sent, sr.lost = 0, 0, 0, 0
}

// closeMinute summarises the current minute. sr.mu is held.
func (sr *Series) closeMinute() bucket {
	b := bucket{sent: sr.sent, lost: sr.lost}
	if sr.n > 0 {
		var tmp [samplesPerMinute]uint16
		w := tmp[:copy(tmp[:], sr.samples[:sr.n])]
		slices.Sort(w) // enc is monotonic: sorting codes sorts RTTs
		b.min, b.max, b.med = sr.cmin, sr.cmax, w[len(w)/2]
		if len(w)%2 == 0 {
			b.med = enc((dec(w[len(w)/2-1]) + dec(w[len(w)/2])) / 2)
		}
	}
	return b
}

// Point is one minute of a series.
type Point struct {
	// Time is the start of the minute.
	Time time.Time
	// Min, Median, Max RTT of the answered probes; zero when none was.
	Min, Median, Max time.Duration
	// Sent: probes with a verdict in this minute; Lost: of them, lost.
	Sent, Lost int
}

// Points returns the minutes with verdicts from since to now, oldest first.
// The current minute is included as far as it has come.
func (sr *Series) Points(since, now time.Time) []Point {
	if sr == nil {
		return nil
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	nowMin := now.Unix() / 60
	first := max(since.Unix()/60, nowMin-int64(len(sr.ring))+1)
	var out []Point
	for m := first; m <= nowMin && m <= sr.curMin; m++ {
		var b bucket
		if m == sr.curMin {
			b = sr.closeMinute()
		} else if m > sr.curMin-int64(len(sr.ring)) {
			b = sr.ring[m%int64(len(sr.ring))]
		}
		if b.sent == 0 {
			continue
		}
		p := Point{Time: time.Unix(m*60, 0).UTC(), Sent: int(b.sent), Lost: int(b.lost)}
		if b.sent > b.lost {
			p.Min, p.Median, p.Max = dec(b.min), dec(b.med), dec(b.max)
		}
		out = append(out, p)
	}
	return out
}

// Latest returns the newest minute with answered probes among the current
// and the previous one: the "current median" of the console's matrix.
func (sr *Series) Latest(now time.Time) (Point, bool) {
	pts := sr.Points(now.Add(-time.Minute), now)
	for i := len(pts) - 1; i >= 0; i-- {
		if pts[i].Sent > pts[i].Lost {
			return pts[i], true
		}
	}
	return Point{}, false
}

// enc stores an RTT in 16 bits: microseconds, exact below 2048 µs, then a
// 5-bit exponent and 11-bit mantissa (0.05 % rounding error), up to days.
// The code is monotonic in the RTT.
func enc(d time.Duration) uint16 {
	us := d.Microseconds()
	if us <= 0 {
		return 0
	}
	if us < 2048 {
		return uint16(us)
	}
	v := uint64(us)
	e := bits.Len64(v) - 11
	m := (v + 1<<(e-1)) >> e
	if m == 2048 {
		m, e = 1024, e+1
	}
	if e > 31 {
		return 0xFFFF
	}
	return uint16(e<<11 | int(m))
}

func dec(c uint16) time.Duration {
	e, m := c>>11, int64(c&0x7FF)
	return time.Duration(m<<e) * time.Microsecond
}
