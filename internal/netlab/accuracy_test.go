package netlab

import (
	"net/netip"
	"testing"
	"time"
)

// measureDelayError sends n datagrams at 2,000 per second over a path with a
// fixed delay and returns the end-to-end added-delay error (one-way delay
// from the sender's clock before the send to the receiver's kernel receive
// timestamp, minus the configured delay), sorted.
func measureDelayError(t testing.TB, n int) (errs []time.Duration, lab *Lab) {
	topo, err := DefaultTopology().Subset("us-east", "ap-tokyo")
	if err != nil {
		t.Fatal(err)
	}
	lab = StartT(t, topo)
	const delay = 25 * time.Millisecond
	if err := lab.SetPath("us-east", "ap-tokyo", PathSiteLink, PathParams{Delay: delay}); err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddr("10.77.4.1")
	r := listenUDP(t, lab.Site("ap-tokyo"), dst, 9100)
	bigBuffer(t, r.conn)
	s := dialUDP(t, lab.Site("us-east"), dst, 9100)
	lab.ResetDelayError()
	s.send(t, n, 64, 500*time.Microsecond)
	got := r.collect(n, time.Second)
	if len(got) != n {
		t.Fatalf("%d of %d datagrams arrived", len(got), n)
	}
	ow := oneWays(got)
	for i := range ow {
		ow[i] -= delay
	}
	return ow, lab
}

// TestDelayAccuracy checks the emulator's own added-delay error at 2,000
// packets/s. The goal is p99 < 200 µs; the assertions are only that no
// packet is early and that the median error is under 500 µs: the tail is
// the machine's (a shared 2-vCPU VM stalls whole processes for tens of ms
// when other builds run), so it is logged, and BenchmarkDelayError reports
// it.
func TestDelayAccuracy(t *testing.T) {
	ow, lab := measureDelayError(t, 4000)
	p50, p99 := quantile(ow, 0.5), quantile(ow, 0.99)
	t.Logf("end-to-end added-delay error at 2000 pps: min %v p50 %v p99 %v max %v; emulator scheduling error %+v",
		ow[0], p50, p99, ow[len(ow)-1], lab.DelayError())
	if ow[0] < 0 {
		t.Errorf("a datagram arrived %v before its delay", -ow[0])
	}
	if p50 > 500*time.Microsecond {
		t.Errorf("added-delay error p50 %v (p99 %v), want p50 < 500µs", p50, p99)
	}
}

// BenchmarkDelayError reports the added-delay error at 2,000 packets/s;
// b.N is the number of packets (e.g. -benchtime=4000x, 2 s).
func BenchmarkDelayError(b *testing.B) {
	ow, lab := measureDelayError(b, max(b.N, 200))
	d := lab.DelayError()
	b.ReportMetric(float64(quantile(ow, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(quantile(ow, 0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(d.P50.Microseconds()), "sched-p50-µs")
	b.ReportMetric(float64(d.P99.Microseconds()), "sched-p99-µs")
}
