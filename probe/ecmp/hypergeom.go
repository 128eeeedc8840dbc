package ecmp

import "math"

// lchoose is log C(n, k).
func lchoose(n, k float64) float64 {
	if k < 0 || k > n {
		return math.Inf(-1)
	}
	a, _ := math.Lgamma(n + 1)
	b, _ := math.Lgamma(k + 1)
	c, _ := math.Lgamma(n - k + 1)
	return a - b - c
}

// logHyperTail is log P(X >= x) for X hypergeometric: x successes or more
// among n draws without replacement from a population of s with k
// successes. Where x is at most the mean it returns 0 (P taken as 1): an
// upper bound, so p-values built on it stay valid, and such counts are
// never evidence of excess loss anyway.
func logHyperTail(s, k, n, x uint64) float64 {
	if x == 0 || float64(x)*float64(s) <= float64(n)*float64(k) {
		return 0
	}
	hi := min(n, k)
	if x > hi {
		return math.Inf(-1)
	}
	S, K, N, X := float64(s), float64(k), float64(n), float64(x)
	first := lchoose(K, X) + lchoose(S-K, N-X) - lchoose(S, N)
	// Sum pmf(j)/pmf(x) for j = x..hi with the ratio
	// pmf(j+1)/pmf(j) = (K-j)(N-j) / ((j+1)(S-K-N+j+1)). Above the mean
	// the terms fall, geometrically once past the mode.
	sum, term := 1.0, 1.0
	for j := X; j < float64(hi); j++ {
		term *= (K - j) * (N - j) / ((j + 1) * (S - K - N + j + 1))
		sum += term
		if term < sum*1e-17 {
			break
		}
	}
	return min(0, first+math.Log(sum))
}
