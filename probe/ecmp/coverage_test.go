package ecmp

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// missClosed is the inclusion-exclusion form of MissAny.
func missClosed(n, m int) float64 {
	p := 0.0
	for j := 1; j <= m; j++ {
		c := math.Exp(lchoose(float64(m), float64(j)))
		p += math.Pow(-1, float64(j+1)) * c * math.Pow(1-float64(j)/float64(m), float64(n))
	}
	return p
}

func TestCoverage(t *testing.T) {
	for _, c := range [][2]int{{16, 4}, {8, 4}, {4, 4}, {3, 4}, {32, 8}, {64, 16}, {1, 1}, {1, 2}, {100, 2}} {
		n, m := c[0], c[1]
		got := MissAny(n, m)
		want := 0.0
		if m > 1 {
			want = missClosed(n, m)
		}
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("MissAny(%d, %d) = %g, inclusion-exclusion %g", n, m, got, want)
		}
	}
	// 16 flows over 4 members: 4(3/4)^16 - 6(1/2)^16 + 4(1/4)^16 = 0.0399988.
	if got := MissAny(16, 4); math.Abs(got-0.0399988) > 1e-7 {
		t.Errorf("MissAny(16, 4) = %g", got)
	}
	// Against a simulation of uniform hashing.
	rng := rand.New(rand.NewPCG(4, 4))
	const trials = 200000
	missed := 0
	for range trials {
		var seen [4]bool
		for range 12 {
			seen[rng.IntN(4)] = true
		}
		if !seen[0] || !seen[1] || !seen[2] || !seen[3] {
			missed++
		}
	}
	if p, sim := MissAny(12, 4), float64(missed)/trials; math.Abs(p-sim) > 4*math.Sqrt(p*(1-p)/trials) {
		t.Errorf("MissAny(12, 4) = %g, simulated %g", p, sim)
	}
	if got := MissOne(16, 4); math.Abs(got-math.Pow(0.75, 16)) > 1e-15 {
		t.Errorf("MissOne(16, 4) = %g", got)
	}
	if got := ExpectedCovered(16, 4); math.Abs(got-4*(1-math.Pow(0.75, 16))) > 1e-12 {
		t.Errorf("ExpectedCovered(16, 4) = %g", got)
	}
	for _, c := range []struct {
		m    int
		miss float64
		want int
	}{{4, 0.01, 21}, {2, 0.001, 11}, {8, 0.01, 51}, {16, 0.01, 115}} {
		n := FlowsFor(c.m, c.miss, 1000)
		if n != c.want || MissAny(n, c.m) > c.miss || MissAny(n-1, c.m) <= c.miss {
			t.Errorf("FlowsFor(%d, %g) = %d (miss %g), want %d", c.m, c.miss, n, MissAny(n, c.m), c.want)
		}
	}
	if FlowsFor(64, 1e-9, 10) != 0 {
		t.Error("FlowsFor beyond its limit")
	}
}

func TestCostOf(t *testing.T) {
	c := CostOf(16, 4, time.Second, 10*time.Minute, DefaultOptions())
	t.Logf("%+v", c)
	if c.PacketsPerSecond != 1 || c.FlowInterval != 16*time.Second || c.ProbesPerFlow != 37.5 || c.MissAny != MissAny(16, 4) {
		t.Errorf("cost %+v", c)
	}
	// A lone lossy flow needs its losses to stand out against C(16,1)·15
	// tries; a member of 4 flows pools them.
	if c.MinLossOneFlow <= 0 || c.MinLossOneFlow > 0.5 || c.MinLossMember <= 0 || c.MinLossMember >= c.MinLossOneFlow {
		t.Errorf("detectable loss: one flow %g, member %g", c.MinLossOneFlow, c.MinLossMember)
	}
	if c := CostOf(1, 4, time.Second, time.Minute, DefaultOptions()); c.MinLossOneFlow != 0 || c.MissAny != 1 {
		t.Errorf("one flow: %+v", c)
	}
}
