// Package changepoint holds the per-target detectors that turn a probe
// series into facts: a sustained shift of the median RTT (Shift) and the
// start and end of loss episodes (Loss). Both are fed every probe outcome,
// cost O(1) amortised per probe with no allocation, and keep a few hundred
// bytes per target, so 10,000 targets cost a few MiB and well under 1 % of
// a core.
package changepoint

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// ShiftParams tune the level-shift detector. RTT samples are grouped into
// buckets of BucketSize answered probes and each bucket is reduced to its
// median, which takes out per-probe jitter and isolated spikes (up to
// half a bucket's samples can be outliers). The detector then compares the
// median of the last TestBuckets bucket medians (the test window) with the
// median of the RefBuckets before them (the reference window). A shift is
// suspected when they differ by more than the threshold
//
//	max(MinAbs, MinRel × reference median, MADFactor × 1.4826 × MAD(reference))
//
// (MAD: median absolute deviation of the reference bucket medians, so a
// pair whose median wanders by itself needs a larger change). The
// reference is frozen while a shift is suspected, and a shift is reported
// once it has been suspected, in the same direction, for HoldBuckets
// consecutive buckets.
type ShiftParams struct {
	BucketSize  int
	RefBuckets  int
	TestBuckets int
	HoldBuckets int
	MinAbs      time.Duration
	MinRel      float64
	MADFactor   float64
}

// MaxWindow bounds BucketSize, RefBuckets and TestBuckets+HoldBuckets, so
// medians are taken in fixed stack arrays.
const MaxWindow = 64

// DefaultShiftParams suit 1 probe/s: 10-probe buckets, a 5-minute reference,
// a 1-minute test window and a 1-minute hold, at least 10 % and 2 ms.
// Detection delay after a step: TestBuckets/2 .. TestBuckets buckets until
// the test median moves, plus HoldBuckets: 60–120 probes (1–2 min at 1 s).
func DefaultShiftParams() ShiftParams {
	return ShiftParams{BucketSize: 10, RefBuckets: 30, TestBuckets: 6, HoldBuckets: 6,
		MinAbs: 2 * time.Millisecond, MinRel: 0.10, MADFactor: 3}
}

// Validate reports the first bad parameter.
func (p ShiftParams) Validate() error {
	switch {
	case p.BucketSize < 1 || p.BucketSize > MaxWindow:
		return fmt.Errorf("bucket size must be 1..%d, got %d", MaxWindow, p.BucketSize)
	case p.RefBuckets < 3 || p.RefBuckets > MaxWindow:
		return fmt.Errorf("reference buckets must be 3..%d, got %d", MaxWindow, p.RefBuckets)
	case p.TestBuckets < 1 || p.HoldBuckets < 1 || p.TestBuckets+p.HoldBuckets > MaxWindow:
		return fmt.Errorf("test (%d) and hold (%d) buckets must be ≥ 1 and together ≤ %d", p.TestBuckets, p.HoldBuckets, MaxWindow)
	case p.MinAbs < 0 || p.MinRel < 0 || p.MADFactor < 0:
		return fmt.Errorf("thresholds must not be negative")
	case p.MinAbs == 0 && p.MinRel == 0 && p.MADFactor == 0:
		return fmt.Errorf("at least one threshold must be positive, or every wobble is a shift")
	}
	return nil
}

// DetectionDelay is the longest a step stays unreported, in answered
// probes: the test window must fill with the new level and then hold.
func (p ShiftParams) DetectionDelay() int {
	return (p.TestBuckets + p.HoldBuckets + 1) * p.BucketSize
}

// ShiftEvent is a detected level shift.
type ShiftEvent struct {
	// Onset is the start of the first bucket at the new level.
	Onset time.Time
	// Detected is the time of the probe that confirmed it.
	Detected time.Time
	// Before is the reference median, After the median of the buckets
	// since the onset.
	Before, After time.Duration
}

// Shift detects level shifts of one target's RTT. The zero value is not
// usable; use NewShift. Not safe for concurrent use: the caller's per-target
// lock covers it.
type Shift struct {
	p ShiftParams

	bucket   []float32 // current bucket's samples, seconds
	bucketAt int64     // unix ns of its first sample

	ref     []float32 // ring of reference bucket medians
	refHead int       // next write position
	refN    int

	// test holds the newest bucket medians in order (oldest first): the
	// test window, plus the hold buckets while frozen.
	test   []float32
	testAt []int64

	frozen bool
	dir    int8 // +1 up, -1 down while frozen
	hold   int
}

// NewShift returns a detector; p must be valid (see Validate).
func NewShift(p ShiftParams) *Shift {
	if err := p.Validate(); err != nil {
		panic("changepoint: " + err.Error())
	}
	return &Shift{
		p:      p,
		bucket: make([]float32, 0, p.BucketSize),
		ref:    make([]float32, p.RefBuckets),
		test:   make([]float32, 0, p.TestBuckets+p.HoldBuckets),
		testAt: make([]int64, 0, p.TestBuckets+p.HoldBuckets),
	}
}

// Reset forgets everything (e.g. after the target's address changed).
func (s *Shift) Reset() {
	s.bucket = s.bucket[:0]
	s.refHead, s.refN = 0, 0
	s.test, s.testAt = s.test[:0], s.testAt[:0]
	s.frozen, s.dir, s.hold = false, 0, 0
}

// Add takes one answered probe's RTT (lost probes are not fed). It returns
// a ShiftEvent when this probe confirms a shift.
func (s *Shift) Add(at time.Time, rtt time.Duration) (ShiftEvent, bool) {
	if len(s.bucket) == 0 {
		s.bucketAt = at.UnixNano()
	}
	s.bucket = append(s.bucket, float32(rtt.Seconds()))
	if len(s.bucket) < s.p.BucketSize {
		return ShiftEvent{}, false
	}
	m := median(s.bucket)
	started := s.bucketAt
	s.bucket = s.bucket[:0]
	return s.addBucket(m, started, at)
}

func (s *Shift) addBucket(m float32, started int64, at time.Time) (ShiftEvent, bool) {
	s.test = append(s.test, m)
	s.testAt = append(s.testAt, started)
	if !s.frozen {
		// Slide: the bucket leaving the test window joins the reference.
		for len(s.test) > s.p.TestBuckets {
			s.pushRef(s.test[0])
			s.test, s.testAt = shift1(s.test), shift1(s.testAt)
		}
	}
	if s.refN < s.p.RefBuckets || len(s.test) < s.p.TestBuckets {
		return ShiftEvent{}, false // warming up
	}
	refMed, thr := s.reference()
	testMed := median(s.test[len(s.test)-s.p.TestBuckets:])
	var dir int8
	switch d := float64(testMed - refMed); {
	case d > thr:
		dir = 1
	case d < -thr:
		dir = -1
	}
	switch {
	case dir == 0 || (s.frozen && dir != s.dir):
		if s.frozen {
			// A passing excursion: it was part of the normal series.
			s.frozen, s.hold = false, 0
			for len(s.test) > s.p.TestBuckets {
				s.pushRef(s.test[0])
				s.test, s.testAt = shift1(s.test), shift1(s.testAt)
			}
		}
		return ShiftEvent{}, false
	case !s.frozen:
		s.frozen, s.dir, s.hold = true, dir, 1
	default:
		s.hold++
	}
	if s.hold < s.p.HoldBuckets {
		return ShiftEvent{}, false
	}
	// Confirmed. The onset is the first bucket past half the threshold in
	// the shift's direction that the next bucket confirms (so a lone
	// spike before the step does not pull the onset early).
	onset := len(s.test) - 1
	half := float32(thr / 2)
	past := func(v float32) bool {
		if dir > 0 {
			return v > refMed+half
		}
		return v < refMed-half
	}
	for i := 0; i < len(s.test)-1; i++ {
		if past(s.test[i]) && past(s.test[i+1]) {
			onset = i
			break
		}
	}
	ev := ShiftEvent{
		Onset:    time.Unix(0, s.testAt[onset]),
		Detected: at,
		Before:   secondsToDuration(refMed),
		After:    secondsToDuration(median(s.test[onset:])),
	}
	// The new level is the reference from now on; a further shift needs
	// a full reference window of it first.
	s.refHead, s.refN = 0, 0
	for _, v := range s.test[onset:] {
		s.pushRef(v)
	}
	s.test, s.testAt = s.test[:0], s.testAt[:0]
	s.frozen, s.dir, s.hold = false, 0, 0
	return ev, true
}

func shift1[T any](s []T) []T {
	copy(s, s[1:])
	return s[:len(s)-1]
}

func (s *Shift) pushRef(v float32) {
	s.ref[s.refHead] = v
	s.refHead = (s.refHead + 1) % len(s.ref)
	if s.refN < len(s.ref) {
		s.refN++
	}
}

// reference returns the reference median and the shift threshold, seconds.
func (s *Shift) reference() (float32, float64) {
	var tmp [MaxWindow]float32
	n := copy(tmp[:], s.ref[:s.refN])
	med := median(tmp[:n])
	for i := range n {
		tmp[i] = float32(math.Abs(float64(tmp[i] - med)))
	}
	mad := median(tmp[:n])
	thr := max(s.p.MinAbs.Seconds(), s.p.MinRel*float64(med), s.p.MADFactor*1.4826*float64(mad))
	return med, thr
}

// median of v (up to MaxWindow values) without allocating; v is not
// modified.
func median(v []float32) float32 {
	var tmp [MaxWindow]float32
	n := copy(tmp[:], v)
	w := tmp[:n]
	slices.Sort(w)
	if n%2 == 1 {
		return w[n/2]
	}
	return (w[n/2-1] + w[n/2]) / 2
}

func secondsToDuration(s float32) time.Duration {
	return time.Duration(math.Round(float64(s) * 1e9))
}
