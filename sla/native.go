package sla

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
)

// Native histograms: Prometheus run with --enable-feature=native-histograms
// stores probed_rtt_seconds as one native-histogram series per target
// (schema 6 from current agents: buckets 2^(1/64) ≈ 1.09 % wide) instead of
// the classic _bucket/_sum/_count series. The report reads whichever the
// server has.

// nativeBucket is one native-histogram bucket (lower, upper] and its count.
type nativeBucket struct{ lower, count float64 }

// NativeBuckets are native-histogram bucket counts keyed by upper bound.
type NativeBuckets map[float64]nativeBucket

func (n NativeBuckets) add(lower, upper, count float64) {
	b := n[upper]
	b.lower = lower
	b.count += count
	n[upper] = b
}

func (n NativeBuckets) merge(o NativeBuckets) {
	for u, b := range o {
		n.add(b.lower, u, b.count)
	}
}

type boundedBucket struct{ lower, upper, count float64 }

func (n NativeBuckets) sorted() []boundedBucket {
	bs := make([]boundedBucket, 0, len(n))
	for u, b := range n {
		if b.count > 0 {
			bs = append(bs, boundedBucket{b.lower, u, b.count})
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	return bs
}

// Quantile estimates the q-quantile the way PromQL's histogram_quantile
// does for native histograms in Prometheus 2.x: linear interpolation
// inside the bucket that holds the rank, between its own bounds.
func (n NativeBuckets) Quantile(q float64) float64 {
	bs := n.sorted()
	if len(bs) == 0 || q < 0 || q > 1 {
		return math.NaN()
	}
	total := 0.0
	for _, b := range bs {
		total += b.count
	}
	rank := q * total
	cum := 0.0
	for _, b := range bs {
		if cum+b.count >= rank {
			lower := b.lower
			if lower < 0 {
				lower = 0 // the zero bucket of a histogram without negative buckets
			}
			return lower + (b.upper-lower)*((rank-cum)/b.count)
		}
		cum += b.count
	}
	return bs[len(bs)-1].upper
}

// widest is the largest upper/lower ratio among the buckets: the coarsest
// resolution the data has (a sum over agents with different schemas has
// the coarsest of them).
func (n NativeBuckets) widest() float64 {
	r := 0.0
	for u, b := range n {
		if b.lower > 0 && b.count > 0 {
			r = math.Max(r, u/b.lower)
		}
	}
	return r
}

// toClassic spreads the native counts over classic bucket bounds (linear
// inside a native bucket that straddles a bound: the assumption every
// quantile estimate makes), for periods that have both kinds of data.
func (n NativeBuckets) toClassic(bounds []float64) Buckets {
	all := append(append([]float64(nil), bounds...), math.Inf(1))
	sort.Float64s(all)
	per := make([]float64, len(all))
	for _, nb := range n.sorted() {
		lo := math.Max(nb.lower, 0)
		if nb.upper <= lo {
			per[sort.SearchFloat64s(all, nb.upper)] += nb.count
			continue
		}
		prev := 0.0
		for i, ub := range all {
			if a, z := math.Max(lo, prev), math.Min(nb.upper, ub); z > a {
				per[i] += nb.count * (z - a) / (nb.upper - lo)
			}
			prev = ub
		}
	}
	out := Buckets{}
	cum := 0.0
	for i, ub := range all {
		cum += per[i]
		out[ub] += cum
	}
	return out
}

// nativeSchemaOf is the schema whose bucket ratio is r: 2^(2^-schema).
func nativeSchemaOf(r float64) int {
	if r <= 1 {
		return 6
	}
	return int(math.Round(-math.Log2(math.Log2(r))))
}

// nativeBucketOf returns the bounds (lower, upper] of the bucket of a
// schema that holds v.
func nativeBucketOf(v float64, schema int) (float64, float64) {
	f := math.Exp2(float64(schema))
	i := math.Ceil(math.Log2(v)*f - 1e-9)
	return math.Exp2((i - 1) / f), math.Exp2(i / f)
}

// classicBucketOf returns the bounds (lower, upper] of the classic bucket
// that holds v; bounds sorted, finite.
func classicBucketOf(v float64, bounds []float64) (float64, float64) {
	i := sort.Search(len(bounds), func(i int) bool { return bounds[i] >= v*(1-1e-12) })
	switch {
	case i == len(bounds):
		if len(bounds) == 0 {
			return 0, math.Inf(1)
		}
		return bounds[len(bounds)-1], math.Inf(1)
	case i == 0:
		return 0, bounds[0]
	}
	return bounds[i-1], bounds[i]
}

// histSeries is one native-histogram result of an instant query.
type histSeries struct {
	Metric     map[string]string
	Count, Sum float64
	Buckets    []boundedBucket
}

// queryHistograms runs an instant query whose result is a vector of native
// histograms (the "histogram" field of the Prometheus 2.40+ API).
func (c *Client) queryHistograms(ctx context.Context, q string, at float64) ([]histSeries, error) {
	form := url.Values{"query": {q}, "time": {strconv.FormatFloat(at, 'f', -1, 64)}}
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric    map[string]string `json:"metric"`
			Histogram *[2]any           `json:"histogram"`
		} `json:"result"`
	}
	if err := c.call(ctx, http.MethodPost, "/api/v1/query", form, q, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: Prometheus at %s answered with a %s, expected a vector", q, c.base, data.ResultType)
	}
	var out []histSeries
	for _, r := range data.Result {
		if r.Histogram == nil {
			continue
		}
		h, ok := r.Histogram[1].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("query %q: bad histogram %v", q, r.Histogram[1])
		}
		s := histSeries{Metric: r.Metric}
		var err error
		num := func(v any) float64 {
			str, ok := v.(string)
			if !ok {
				err = fmt.Errorf("query %q: bad histogram number %v", q, v)
				return 0
			}
			f, e := strconv.ParseFloat(str, 64)
			if e != nil {
				err = fmt.Errorf("query %q: bad histogram number %q", q, str)
			}
			return f
		}
		s.Count, s.Sum = num(h["count"]), num(h["sum"])
		bs, _ := h["buckets"].([]any)
		for _, b := range bs {
			row, ok := b.([]any)
			if !ok || len(row) != 4 {
				return nil, fmt.Errorf("query %q: bad histogram bucket %v", q, b)
			}
			s.Buckets = append(s.Buckets, boundedBucket{lower: num(row[1]), upper: num(row[2]), count: num(row[3])})
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
