package exporter

import (
	"math"
	"testing"
	"time"
)

func TestLossWindow(t *testing.T) {
	w := newLossWindow(4)
	if _, ok := w.ratio(); ok {
		t.Fatal("ratio before any probe")
	}
	for _, lost := range []bool{true, false, false, false} {
		w.add(lost)
	}
	if r, _ := w.ratio(); r != 0.25 {
		t.Fatalf("ratio = %v, want 0.25", r)
	}
	w.add(false) // pushes the loss out of the window
	if r, _ := w.ratio(); r != 0 {
		t.Fatalf("ratio = %v after the loss left the window", r)
	}
	w.add(true)
	w.add(true)
	if r, _ := w.ratio(); r != 0.5 {
		t.Fatalf("ratio = %v, want 0.5", r)
	}
	// Shrinking keeps the most recent outcomes: [false true true].
	w.resize(3)
	if r, _ := w.ratio(); math.Abs(r-2.0/3) > 1e-12 {
		t.Fatalf("ratio after resize = %v, want 2/3", r)
	}
	// A window larger than 64 crosses words of the bitset.
	big := newLossWindow(100)
	for i := 0; i < 1000; i++ {
		big.add(i%10 == 0)
	}
	if r, _ := big.ratio(); r != 0.1 {
		t.Fatalf("big ratio = %v", r)
	}
}

func TestJitterRFC3550(t *testing.T) {
	var j jitter
	j.add(10 * time.Millisecond)
	if j.value != 0 {
		t.Fatal("jitter after one sample")
	}
	// Alternating RTTs 10 ms / 12 ms: |D| = 2 ms every step; J converges to 2 ms
	// as J_n = 2ms * (1 - (15/16)^n).
	for i := 1; i <= 200; i++ {
		rtt := 10 * time.Millisecond
		if i%2 == 1 {
			rtt = 12 * time.Millisecond
		}
		j.add(rtt)
		want := 0.002 * (1 - math.Pow(15.0/16, float64(i)))
		if math.Abs(j.value-want) > 1e-12 {
			t.Fatalf("step %d: J = %v, want %v", i, j.value, want)
		}
	}
}

func TestNativeIndex(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want int
	}{
		{1, 0}, {2, 64}, {0.5, -64}, {1.0001, 1}, {math.Exp2(1.0 / 64), 1}, {math.Exp2(1.0/64) * 1.000001, 2}, {0.001, -637},
		{1e-12, nativeMinIndex}, {1000, nativeMaxIndex},
	} {
		if got := nativeIndex(tc.v); got != tc.want {
			t.Errorf("nativeIndex(%v) = %d, want %d", tc.v, got, tc.want)
		}
	}
}
