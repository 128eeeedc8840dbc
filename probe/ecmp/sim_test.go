package ecmp

import (
	"math/rand/v2"
	"slices"
)

// window simulates one evaluation window: probes sent round robin over
// len(loss) flows (probe i goes to flow i mod N), probe of flow f lost with
// probability loss[f].
func window(rng *rand.Rand, probes int, loss []float64) []FlowCount {
	fc := make([]FlowCount, len(loss))
	for i := range probes {
		f := i % len(loss)
		fc[f].Sent++
		if rng.Float64() < loss[f] {
			fc[f].Lost++
		}
	}
	return fc
}

// hashed assigns n flows to m members uniformly at random (as a good
// 5-tuple hash does) and returns each flow's member.
func hashed(rng *rand.Rand, n, m int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = rng.IntN(m)
	}
	return out
}

type simResult struct {
	trials, alarms, covered, detectedCovered, exact int
}

// simulate runs trials windows; members[f] is flow f's member, memberLoss
// the loss of each member (a fresh hash per trial when members is nil).
func simulate(rng *rand.Rand, trials, flows, probes int, memberLoss []float64, o Options) simResult {
	var r simResult
	loss := make([]float64, flows)
	for range trials {
		mem := hashed(rng, flows, len(memberLoss))
		var truth []int
		for f := range loss {
			loss[f] = memberLoss[mem[f]]
			if loss[f] > memberLoss[0] {
				truth = append(truth, f)
			}
		}
		v := Test(window(rng, probes, loss), o)
		r.trials++
		if v.Concentrated {
			r.alarms++
		}
		if len(truth) > 0 {
			r.covered++
			if v.Concentrated {
				r.detectedCovered++
				if slices.Equal(v.Lossy, truth) {
					r.exact++
				}
			}
		}
	}
	return r
}
