package exporter

import (
	"math"
	"time"
)

// nativeSchema 3 gives buckets growing by 2^(1/8) ≈ 1.09 — the
// resolution Prometheus suggests for latency.
const (
	nativeSchema   = 3
	nativeMinIndex = -200 // 2^(-200/8) ≈ 30 ns
	nativeMaxIndex = 40   // 2^(40/8) = 32 s
	nativeBuckets  = nativeMaxIndex - nativeMinIndex + 1
	// nativeZeroThreshold is client_golang's default: only exact zeros.
	nativeZeroThreshold = 2.938735877055719e-39
)

// rttHistogram holds one target's RTT distribution twice: classic buckets
// (what Prometheus 2.x reads) and exponential native-histogram buckets (what
// newer servers read over protobuf). Guarded by the recorder's mutex.
type rttHistogram struct {
	classic [len(rttBucketsArr)]uint64 // non-cumulative; +Inf is count - sum(classic)
	count   uint64
	sum     float64
	zero    uint64
	native  [nativeBuckets]uint32
}

// rttBucketsArr fixes the classic bucket count at compile time.
var rttBucketsArr = [...]float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075,
	0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 1, 2.5, 5,
}

// RTTBuckets are the classic histogram buckets (seconds): fine below 1 ms
// for LAN and metro pairs, 25 ms steps across the 100–300 ms range where
// intercontinental SiteLink pairs live, and a tail to a few seconds.
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
	h.native[nativeIndex(v)-nativeMinIndex]++
}

// nativeBounds are the schema-3 bucket bounds within one power of two,
// as fractions in [0.5, 1): 2^(k/8 - 1) for k = 0..7.
var nativeBounds = func() [1 << nativeSchema]float64 {
	var b [1 << nativeSchema]float64
	for k := range b {
		b[k] = math.Exp2(float64(k)/(1<<nativeSchema) - 1)
	}
	return b
}()

// nativeIndex is the bucket whose upper bound 2^(i/8) is the first ≥ v
// (the same bucketing as client_golang: frexp, then a search of the bounds).
func nativeIndex(v float64) int {
	frac, exp := math.Frexp(v)
	k := 0
	for k < len(nativeBounds) && nativeBounds[k] < frac {
		k++
	}
	i := k + (exp-1)*len(nativeBounds)
	return max(nativeMinIndex, min(nativeMaxIndex, i))
}
