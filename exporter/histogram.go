package exporter

import (
	"math"
	"sort"
	"time"
)

// nativeSchema 6 gives buckets growing by 2^(1/64) ≈ 1.0109: 1.09 % wide.
// PromQL's histogram_quantile interpolates linearly inside the bucket that
// holds the rank, so a quantile read from Prometheus is within one bucket
// width of the agent's exact value — at worst 1.09 % (a p95/p99 of a
// distribution that sits at a bucket's lower edge), 0.55 % for a median —
// which keeps every latency a panel, rule or SLA report shows inside the
// project's 2 % goal from 100 µs to seconds. Schema 3 (9 % buckets) could
// be off by 9 %.
//
// Only the buckets in use are kept (see nativeCounts) and exported, so the
// cost follows the spread of a target's RTTs, not the schema: a path with
// ±1 % jitter uses 2–3 buckets.
const (
	nativeSchema   = 6
	nativePerOct   = 1 << nativeSchema
	nativeMinIndex = -25 * nativePerOct // 2^-25 s ≈ 30 ns: smaller values land here
	nativeMaxIndex = 5 * nativePerOct   // 2^5 s = 32 s: larger values land here
	// nativeZeroThreshold is client_golang's default: only exact zeros.
	nativeZeroThreshold = 2.938735877055719e-39
)

// rttHistogram holds one target's RTT distribution twice: classic buckets
// (what Prometheus reads without native histograms, and the text format)
// and exponential native-histogram buckets (what Prometheus reads over
// protobuf with native histograms enabled). Guarded by the recorder's mutex.
type rttHistogram struct {
	classic [len(rttBucketsArr)]uint64 // non-cumulative; +Inf is count - sum(classic)
	count   uint64
	sum     float64
	zero    uint64
	native  nativeCounts
}

// nativeCounts are the counts of native buckets lo … lo+len(c)-1. The
// window grows (doubling, so a target's life sees a handful of
// allocations at most) only when an RTT lands outside it; a steady target
// never allocates per probe.
type nativeCounts struct {
	lo int
	c  []uint64
}

func (n *nativeCounts) inc(i int) {
	if len(n.c) == 0 {
		n.lo, n.c = i-4, make([]uint64, 16)
	}
	if i < n.lo || i >= n.lo+len(n.c) {
		n.grow(i)
	}
	n.c[i-n.lo]++
}

// grow widens the window to hold index i, at least doubling it.
func (n *nativeCounts) grow(i int) {
	lo, hi := min(n.lo, i), max(n.lo+len(n.c), i+1)
	size := max(hi-lo, 2*len(n.c))
	if i < n.lo {
		lo = hi - size // room below, where it was needed
	} else {
		hi = lo + size
	}
	lo = max(lo, nativeMinIndex)
	hi = min(hi, nativeMaxIndex+1)
	c := make([]uint64, hi-lo)
	copy(c[n.lo-lo:], n.c)
	n.lo, n.c = lo, c
}

// rttBucketsArr fixes the classic bucket count at compile time.
var rttBucketsArr = [...]float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075,
	0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 1, 2.5, 5,
}

// RTTBuckets are the classic histogram buckets (seconds): fine below 1 ms
// for LAN and metro pairs, 25 ms steps across the 100–300 ms range where
// intercontinental SiteLink pairs live, and a tail to a few seconds. They
// are coarse (25–67 % wide): what servers without native histograms get.
var RTTBuckets = rttBucketsArr[:]

func (h *rttHistogram) observe(d time.Duration) {
	v := d.Seconds()
	h.count++
	h.sum += v
	for i, b := range rttBucketsArr {
		if v <= b {
			h.classic[i]++
			break
		}
	}
	if v <= nativeZeroThreshold {
		h.zero++
		return
	}
	h.native.inc(nativeIndex(v))
}

// nativeBounds are the schema's bucket bounds within one power of two,
// as fractions in [0.5, 1): 2^(k/64 - 1) for k = 0..63.
var nativeBounds = func() []float64 {
	b := make([]float64, nativePerOct)
	for k := range b {
		b[k] = math.Exp2(float64(k)/nativePerOct - 1)
	}
	return b
}()

// nativeIndex is the bucket whose upper bound 2^(i/64) is the first ≥ v
// (the same bucketing as client_golang: frexp, then a search of the bounds).
func nativeIndex(v float64) int {
	frac, exp := math.Frexp(v)
	k := sort.SearchFloat64s(nativeBounds, frac)
	i := k + (exp-1)*nativePerOct
	return max(nativeMinIndex, min(nativeMaxIndex, i))
}
