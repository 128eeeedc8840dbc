package ecmp

import (
	"math"
	"time"
)

// MissAny is the probability that flows flow identities, each hashed
// uniformly and independently onto one of members member paths, leave at
// least one member without a flow: a member the agent never probes
// (exact, by the occupancy distribution). With one flow and several
// members it is 1.
func MissAny(flows, members int) float64 {
	if members <= 1 {
		return 0
	}
	if flows < members {
		return 1
	}
	// p[c]: probability that c members are covered after the flows so far.
	p := make([]float64, members+1)
	p[0] = 1
	m := float64(members)
	for range flows {
		for c := members; c >= 0; c-- {
			stay := p[c] * float64(c) / m
			if c > 0 {
				stay += p[c-1] * float64(members-c+1) / m
			}
			p[c] = stay
		}
	}
	miss := 0.0
	for c := range members {
		miss += p[c]
	}
	return miss
}

// MissOne is the probability that one given member (the bad one) gets no
// flow: (1 - 1/members)^flows. Loss on that member is then invisible.
func MissOne(flows, members int) float64 {
	if members <= 1 {
		return 0
	}
	return math.Pow(1-1/float64(members), float64(flows))
}

// ExpectedCovered is the expected number of members that get at least one
// flow: members × (1 − (1 − 1/members)^flows).
func ExpectedCovered(flows, members int) float64 {
	if members <= 0 {
		return 0
	}
	return float64(members) * (1 - MissOne(flows, members))
}

// FlowsFor is the smallest number of flows that leaves some member
// unprobed with probability at most maxMiss (MissAny), up to limit; 0 if
// even limit flows are not enough.
func FlowsFor(members int, maxMiss float64, limit int) int {
	for n := 1; n <= limit; n++ {
		if MissAny(n, members) <= maxMiss {
			return n
		}
	}
	return 0
}

// Cost is what N flows cost and buy for one target.
type Cost struct {
	Flows   int
	Members int
	// PacketsPerSecond is the target's probe rate: the flows share the
	// target's interval, so it does not depend on Flows.
	PacketsPerSecond float64
	// FlowInterval is how often each flow is probed (interval × flows).
	FlowInterval time.Duration
	// ProbesPerFlow is each flow's probes in one evaluation window.
	ProbesPerFlow float64
	// MissAny and MissOne: see the functions of those names.
	MissAny, MissOne float64
	// MinLossOneFlow is the smallest loss ratio on a single flow that Test
	// flags in one window when no other flow loses anything; 0 when even
	// 100% is not enough (too few probes per flow).
	MinLossOneFlow float64
	// MinLossMember is the same for a member carrying its share of the
	// flows (flows/members, at least 1).
	MinLossMember float64
}

// CostOf is the cost and reach of flows flows over members members for a
// target probed every interval, evaluated over window with o.
func CostOf(flows, members int, interval, window time.Duration, o Options) Cost {
	flows = max(flows, 1)
	members = max(members, 1)
	c := Cost{Flows: flows, Members: members, MissAny: MissAny(flows, members), MissOne: MissOne(flows, members)}
	if interval <= 0 {
		return c
	}
	c.PacketsPerSecond = float64(time.Second) / float64(interval)
	c.FlowInterval = interval * time.Duration(flows)
	c.ProbesPerFlow = float64(window) / float64(c.FlowInterval)
	n := uint64(c.ProbesPerFlow)
	c.MinLossOneFlow = minFlagged(flows, 1, n, o)
	c.MinLossMember = minFlagged(flows, max(1, flows/members), n, o)
	return c
}

// minFlagged is the smallest loss ratio that Test flags when lossy of the
// flows each lose that share of their n probes and the others none.
func minFlagged(flows, lossy int, n uint64, o Options) float64 {
	if flows < 2 || n == 0 {
		return 0
	}
	fc := make([]FlowCount, flows)
	for x := uint64(1); x <= n; x++ {
		for i := range fc {
			fc[i] = FlowCount{Sent: n}
			if i < lossy {
				fc[i].Lost = x
			}
		}
		if Test(fc, o).Concentrated {
			return float64(x) / float64(n)
		}
	}
	return 0
}
