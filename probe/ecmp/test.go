package ecmp

import (
	"math"
	"slices"
)

// FlowCount is one flow's probes over the evaluation window.
type FlowCount struct {
	Sent, Lost uint64
}

// Ratio is the flow's loss ratio (0 when nothing was sent).
func (c FlowCount) Ratio() float64 {
	if c.Sent == 0 {
		return 0
	}
	return float64(c.Lost) / float64(c.Sent)
}

// Options tune Test.
type Options struct {
	// Alpha is the largest probability that one evaluation flags a target
	// whose flows all share one loss probability (a false alarm). The
	// test guarantees it exactly, not asymptotically. Default 1e-6.
	Alpha float64
	// MaxLossyFraction is the largest share of the flows that may be
	// called lossy. Default 1: any flows but all, so that a bad member of
	// two, which may carry more than half of the flows, is found; lower
	// it to flag only a minority of lossy flows.
	MaxLossyFraction float64
	// MinDifference is the smallest difference between the loss ratio of
	// the lossy flows and that of the others worth flagging (with many
	// probes a tiny but real difference is significant). Default 0.01.
	MinDifference float64
}

// DefaultOptions are the defaults the fields' comments name.
func DefaultOptions() Options {
	return Options{Alpha: 1e-6, MaxLossyFraction: 1, MinDifference: 0.01}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Alpha <= 0 {
		o.Alpha = d.Alpha
	}
	if o.MaxLossyFraction <= 0 || o.MaxLossyFraction > 1 {
		o.MaxLossyFraction = d.MaxLossyFraction
	}
	if o.MinDifference < 0 {
		o.MinDifference = 0
	}
	return o
}

// Verdict is the outcome of Test.
type Verdict struct {
	// Concentrated: the loss is not spread evenly over the flows; Lossy
	// names the flows that carry it.
	Concentrated bool
	// P is the p-value of the first (strongest) group found: the
	// probability, were every flow equally lossy, of a concentration at
	// least as strong (an upper bound). Concentrated needs P <= Alpha.
	P float64
	// Log10P is log10(P), finite even when P underflows to 0.
	Log10P float64
	// Lossy are the indices (into the input) of the lossy flows, sorted;
	// empty unless Concentrated.
	Lossy []int
	// LossyRatio and RestRatio are the pooled loss ratios of the lossy
	// flows and of the others (RestRatio is the pooled ratio of all flows
	// when nothing is lossy).
	LossyRatio, RestRatio float64
	// Sent and Lost are the totals over all flows.
	Sent, Lost uint64
}

// Test decides whether loss concentrates on some flows.
//
// The null hypothesis is that every probe of every flow is lost with the
// same probability. Conditioned on the total number of losses K among the
// S probes, as in Fisher's exact test, the losses are then a uniformly
// random K-subset of the probes, whatever that probability is, and the
// losses of any fixed set of flows that sent n probes are hypergeometric.
// For k = 1 .. N-1 the test takes the k flows with the highest loss
// ratios, computes the exact hypergeometric probability of their pooled
// losses or more, and multiplies it by C(N, k) (every set of k flows it
// could have picked) and by N-1 (every k): a union (Bonferroni) bound over
// every set of flows it could report. The smallest of these bounds is P,
// and its k flows are the strongest group. So P(P <= Alpha) <= Alpha under
// the null, exactly, for any window, loss rate and number of flows: a scan
// statistic with a union-bound correction, conservative where the bound is
// loose.
//
// The strongest group is reported as lossy when P <= Alpha, its loss
// ratio exceeds the other flows' by MinDifference, and it holds at most
// MaxLossyFraction of the flows. The test then repeats on the remaining flows (a
// second bad member at another loss rate), each round at Alpha, until a
// round finds nothing.
//
// Losses correlated in time (bursts, a short outage) do not make flows
// look different if the flows take turns (round robin): each flow then
// samples the same moments, and the per-flow counts vary less than the
// hypergeometric, which only makes the test more conservative.
func Test(flows []FlowCount, o Options) Verdict {
	o = o.withDefaults()
	v := Verdict{P: 1}
	for _, f := range flows {
		v.Sent += f.Sent
		v.Lost += f.Lost
	}
	v.RestRatio = ratio(v.Lost, v.Sent)
	idx := make([]int, 0, len(flows))
	for i, f := range flows {
		if f.Sent > 0 {
			idx = append(idx, i)
		}
	}
	maxLossy := int(o.MaxLossyFraction * float64(len(idx)))
	first := true
	for {
		g := strongest(flows, idx)
		if first {
			v.P, v.Log10P = math.Pow(10, g.log10P), g.log10P
			first = false
		}
		if g.k == 0 || g.k+len(v.Lossy) > maxLossy || g.log10P > math.Log10(o.Alpha) || g.lossyRatio-g.restRatio < o.MinDifference {
			break
		}
		v.Lossy = append(v.Lossy, g.flows...)
		idx = g.rest
	}
	if len(v.Lossy) == 0 {
		return v
	}
	v.Concentrated = true
	slices.Sort(v.Lossy)
	var ls, ll uint64
	for _, i := range v.Lossy {
		ls += flows[i].Sent
		ll += flows[i].Lost
	}
	v.LossyRatio = ratio(ll, ls)
	v.RestRatio = ratio(v.Lost-ll, v.Sent-ls)
	return v
}

type group struct {
	k                     int
	log10P                float64
	flows, rest           []int
	lossyRatio, restRatio float64
}

// strongest finds, among the flows idx, the top-k group with the smallest
// union-bounded p-value.
func strongest(flows []FlowCount, idx []int) group {
	best := group{log10P: 0}
	if len(idx) < 2 {
		return best
	}
	var s, k uint64
	for _, i := range idx {
		s += flows[i].Sent
		k += flows[i].Lost
	}
	if k == 0 || k == s {
		return best
	}
	order := slices.Clone(idx)
	slices.SortFunc(order, func(a, b int) int {
		fa, fb := flows[a], flows[b]
		// Higher ratio first: a.Lost/a.Sent > b.Lost/b.Sent, exactly.
		if l, r := fa.Lost*fb.Sent, fb.Lost*fa.Sent; l != r {
			if l > r {
				return -1
			}
			return 1
		}
		if fa.Lost != fb.Lost {
			if fa.Lost > fb.Lost {
				return -1
			}
			return 1
		}
		return a - b
	})
	kmax := len(order) - 1
	logTries := math.Log(float64(kmax))
	var n, x uint64
	bestK := 0
	bestLog := 0.0
	for j := 1; j <= kmax; j++ {
		f := flows[order[j-1]]
		n += f.Sent
		x += f.Lost
		lp := logHyperTail(s, k, n, x) + lchoose(float64(len(order)), float64(j)) + logTries
		if lp < bestLog {
			bestLog, bestK = lp, j
		}
	}
	if bestK == 0 {
		return best
	}
	best = group{k: bestK, log10P: bestLog / math.Ln10, flows: slices.Clone(order[:bestK]), rest: slices.Clone(order[bestK:])}
	var ls, ll uint64
	for _, i := range best.flows {
		ls += flows[i].Sent
		ll += flows[i].Lost
	}
	best.lossyRatio, best.restRatio = ratio(ll, ls), ratio(k-ll, s-ls)
	return best
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Wilson is the Wilson score interval of a loss ratio: lost of sent at z
// standard deviations (1.96: 95%, 3.29: 99.9%). It stays inside [0, 1]
// and is usable with few probes, unlike the normal approximation.
func Wilson(lost, sent uint64, z float64) (lo, hi float64) {
	if sent == 0 {
		return 0, 1
	}
	n := float64(sent)
	p := float64(lost) / n
	z2 := z * z
	c := (p + z2/(2*n)) / (1 + z2/n)
	h := z / (1 + z2/n) * math.Sqrt(p*(1-p)/n+z2/(4*n*n))
	return max(0, c-h), min(1, c+h)
}
