package sla

import (
	"math"
	"sort"
	"strconv"
)

// Buckets are classic-histogram bucket counts keyed by upper bound (le).
type Buckets map[float64]float64

// addLe adds count to the bucket named by an le label value.
func (b Buckets) addLe(le string, count float64) bool {
	u, err := strconv.ParseFloat(le, 64)
	if err != nil {
		return false
	}
	b[u] += count
	return true
}

// add merges other into b.
func (b Buckets) add(other Buckets) {
	for u, c := range other {
		b[u] += c
	}
}

// Quantile estimates the q-quantile the way PromQL's histogram_quantile
// does for classic buckets (linear interpolation inside the bucket, the
// lowest bucket starting at 0, the +Inf bucket answering with the highest
// finite bound), so report figures match what a dashboard shows.
func (b Buckets) Quantile(q float64) float64 {
	type bucket struct{ upper, count float64 }
	bs := make([]bucket, 0, len(b))
	for u, c := range b {
		bs = append(bs, bucket{u, c})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	if len(bs) < 2 || !math.IsInf(bs[len(bs)-1].upper, 1) || q < 0 || q > 1 {
		return math.NaN()
	}
	// Counts from increase() may be slightly non-monotonic; PromQL fixes that the same way.
	for i := 1; i < len(bs); i++ {
		if bs[i].count < bs[i-1].count {
			bs[i].count = bs[i-1].count
		}
	}
	total := bs[len(bs)-1].count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.Search(len(bs)-1, func(i int) bool { return bs[i].count >= rank })
	if i == len(bs)-1 {
		return bs[len(bs)-2].upper
	}
	if i == 0 && bs[0].upper <= 0 {
		return bs[0].upper
	}
	start, end, count := 0.0, bs[i].upper, bs[i].count
	if i > 0 {
		start = bs[i-1].upper
		count -= bs[i-1].count
		rank -= bs[i-1].count
	}
	return start + (end-start)*(rank/count)
}
