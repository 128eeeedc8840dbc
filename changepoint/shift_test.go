package changepoint

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// jitter is a synthetic RTT source: a base level plus Gaussian jitter, a
// share of large spikes (queueing bursts) and a slow wander, never below
// half the base.
type jitter struct {
	rng    *rand.Rand
	sigma  time.Duration
	spikeP float64
	spike  time.Duration
	wander time.Duration // amplitude of a slow sine (10-minute period)
}

func (j *jitter) rtt(base time.Duration, i int) time.Duration {
	v := float64(base) + j.rng.NormFloat64()*float64(j.sigma)
	v += float64(j.wander) * math.Sin(2*math.Pi*float64(i)/600)
	if j.rng.Float64() < j.spikeP {
		v += j.rng.Float64() * float64(j.spike)
	}
	return time.Duration(max(v, float64(base)/2))
}

// profiles of stationary paths: each must produce no shift.
var profiles = []struct {
	name string
	base time.Duration
	j    jitter
}{
	{"intercontinental, moderate jitter", 70 * time.Millisecond, jitter{sigma: 3 * time.Millisecond, spikeP: 0.05, spike: 60 * time.Millisecond}},
	{"intercontinental, heavy jitter", 150 * time.Millisecond, jitter{sigma: 12 * time.Millisecond, spikeP: 0.15, spike: 100 * time.Millisecond, wander: 4 * time.Millisecond}},
	{"metro, jitter as large as the RTT", 2 * time.Millisecond, jitter{sigma: 1500 * time.Microsecond, spikeP: 0.1, spike: 20 * time.Millisecond}},
	{"loopback", 50 * time.Microsecond, jitter{sigma: 30 * time.Microsecond, spikeP: 0.02, spike: 2 * time.Millisecond}},
}

// TestNoShiftOnStationaryJitter feeds 10 minutes of probes at 1/s for many
// seeds of every profile (500 hours in all): not one shift.
func TestNoShiftOnStationaryJitter(t *testing.T) {
	const seeds = 750
	for _, pr := range profiles {
		t.Run(pr.name, func(t *testing.T) {
			shifts := 0
			for seed := range seeds {
				j := pr.j
				j.rng = rand.New(rand.NewPCG(uint64(seed), 7))
				d := NewShift(DefaultShiftParams())
				for i := range 600 {
					if ev, ok := d.Add(t0.Add(time.Duration(i)*time.Second), j.rtt(pr.base, i)); ok {
						shifts++
						t.Errorf("seed %d: shift on a stationary series at probe %d: %v → %v", seed, i, ev.Before, ev.After)
					}
				}
			}
			t.Logf("%d shifts in %d × 10 min", shifts, seeds)
		})
	}
}

// TestStepIsOneShift: 5 minutes at one level, then a step for 10 minutes:
// one shift, with the levels before and after, its onset within a bucket of
// the step and detected within DetectionDelay probes.
func TestStepIsOneShift(t *testing.T) {
	p := DefaultShiftParams()
	for _, c := range []struct {
		name         string
		before, step time.Duration
		j            jitter
	}{
		{"up 20 ms on 70", 70 * time.Millisecond, 20 * time.Millisecond, profiles[0].j},
		{"down 15 ms on 90", 90 * time.Millisecond, -15 * time.Millisecond, profiles[0].j},
		{"up 40 ms on 150, heavy jitter", 150 * time.Millisecond, 40 * time.Millisecond, profiles[1].j},
		{"metro doubles", 2 * time.Millisecond, 4 * time.Millisecond, jitter{sigma: 300 * time.Microsecond, spikeP: 0.05, spike: 5 * time.Millisecond}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for seed := range 50 {
				j := c.j
				j.rng = rand.New(rand.NewPCG(uint64(seed), 11))
				d := NewShift(p)
				stepAt := 300
				var got []ShiftEvent
				var gotAt []int
				var before, after []time.Duration
				for i := range 900 {
					base := c.before
					if i >= stepAt {
						base += c.step
					}
					rtt := j.rtt(base, i)
					if i < stepAt {
						before = append(before, rtt)
					} else {
						after = append(after, rtt)
					}
					if ev, ok := d.Add(t0.Add(time.Duration(i)*time.Second), rtt); ok {
						got = append(got, ev)
						gotAt = append(gotAt, i)
					}
				}
				if len(got) != 1 {
					t.Fatalf("seed %d: %d shifts, want 1: %+v", seed, len(got), got)
				}
				ev := got[0]
				if delay := gotAt[0] - stepAt; delay < 0 || delay > p.DetectionDelay() {
					t.Errorf("seed %d: detected %d probes after the step, bound %d", seed, delay, p.DetectionDelay())
				}
				step := t0.Add(time.Duration(stepAt) * time.Second)
				if off := ev.Onset.Sub(step); off < -time.Duration(p.BucketSize)*time.Second || off > time.Duration(p.BucketSize)*time.Second {
					t.Errorf("seed %d: onset %v, step at %v", seed, ev.Onset, step)
				}
				// Before and after are the medians of the two levels as
				// generated (spikes and wander included), within a fifth
				// of the step: After is the median of the minute or two
				// since the onset, so the slow wander is in it.
				tol := time.Duration(math.Abs(float64(c.step)) / 5)
				mb, ma := medianOf(before), medianOf(after)
				if math.Abs(float64(ev.Before-mb)) > float64(tol) || math.Abs(float64(ev.After-ma)) > float64(tol) {
					t.Errorf("seed %d: %v → %v, want %v → %v (±%v)", seed, ev.Before, ev.After, mb, ma, tol)
				}
				if !ev.Detected.Equal(t0.Add(time.Duration(gotAt[0]) * time.Second)) {
					t.Errorf("detected time %v", ev.Detected)
				}
			}
		})
	}
}

// A 30-second excursion (shorter than the hold) is not a shift.
func TestExcursionIsNoShift(t *testing.T) {
	j := profiles[0].j
	j.rng = rand.New(rand.NewPCG(3, 3))
	d := NewShift(DefaultShiftParams())
	for i := range 900 {
		base := 70 * time.Millisecond
		if i >= 400 && i < 430 {
			base += 40 * time.Millisecond
		}
		if ev, ok := d.Add(t0.Add(time.Duration(i)*time.Second), j.rtt(base, i)); ok {
			t.Fatalf("excursion reported as a shift at %d: %+v", i, ev)
		}
	}
}

// After a shift the new level is the reference: a second step later is a
// second shift; staying at the new level is none.
func TestTwoSteps(t *testing.T) {
	j := profiles[0].j
	j.rng = rand.New(rand.NewPCG(5, 5))
	d := NewShift(DefaultShiftParams())
	var got []ShiftEvent
	for i := range 1800 {
		base := 70 * time.Millisecond
		switch {
		case i >= 1200:
			base = 50 * time.Millisecond
		case i >= 300:
			base = 90 * time.Millisecond
		}
		if ev, ok := d.Add(t0.Add(time.Duration(i)*time.Second), j.rtt(base, i)); ok {
			got = append(got, ev)
		}
	}
	if len(got) != 2 || got[0].After < got[0].Before || got[1].After > got[1].Before {
		t.Fatalf("%+v", got)
	}
}

func TestShiftAddDoesNotAllocate(t *testing.T) {
	d := NewShift(DefaultShiftParams())
	i := 0
	allocs := testing.AllocsPerRun(10000, func() {
		rtt := 70 * time.Millisecond
		if i > 5000 {
			rtt = 95 * time.Millisecond
		}
		d.Add(t0.Add(time.Duration(i)*time.Second), rtt+time.Duration(i%7)*time.Millisecond)
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per probe", allocs)
	}
}

func TestShiftParamsValidate(t *testing.T) {
	if err := DefaultShiftParams().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := DefaultShiftParams()
	bad.RefBuckets = 100
	if bad.Validate() == nil {
		t.Error("RefBuckets 100 accepted")
	}
	bad = DefaultShiftParams()
	bad.MinAbs, bad.MinRel, bad.MADFactor = 0, 0, 0
	if bad.Validate() == nil {
		t.Error("no threshold accepted")
	}
}

// BenchmarkShiftAdd is the per-probe cost (amortised over bucket closes).
func BenchmarkShiftAdd(b *testing.B) {
	d := NewShift(DefaultShiftParams())
	j := profiles[0].j
	j.rng = rand.New(rand.NewPCG(1, 1))
	rtts := make([]time.Duration, 4096)
	for i := range rtts {
		rtts[i] = j.rtt(70*time.Millisecond, i)
	}
	i := 0
	for b.Loop() {
		d.Add(t0.Add(time.Duration(i)*time.Second), rtts[i%len(rtts)])
		i++
	}
}

func medianOf(v []time.Duration) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
