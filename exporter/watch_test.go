package exporter

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/history"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/watch"
)

func watched(tb testing.TB, hist bool) *Metrics {
	tb.Helper()
	m := NewMetrics(prometheus.NewRegistry(), zap.NewNop())
	w, err := watch.New(watch.Options{History: history.New(history.Options{Disabled: !hist})})
	if err != nil {
		tb.Fatal(err)
	}
	m.SetWatcher(w)
	return m
}

// BenchmarkRecorderWatched is BenchmarkRecorder with the agent's watcher
// (history, latency-shift and loss-episode detectors, up/down) behind the
// recorder, as the running agent has it.
func BenchmarkRecorderWatched(b *testing.B) {
	for _, hist := range []bool{true, false} {
		b.Run(fmt.Sprintf("history=%v", hist), func(b *testing.B) {
			m := watched(b, hist)
			r := m.Add(&config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Protocol: "icmp"})
			t0 := time.Now()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				r.Sent()
				r.Succeeded(probe.Probe{Sent: t0.Add(time.Duration(i) * time.Second)}, time.Duration(70_000_000+i%1000))
			}
		})
	}
}

// The per-probe path stays allocation-free with the watcher.
func TestWatchedRecorderDoesNotAllocate(t *testing.T) {
	m := watched(t, true)
	r := m.Add(&config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Protocol: "icmp"})
	t0 := time.Now()
	i := 0
	if n := testing.AllocsPerRun(2000, func() {
		i++
		r.Sent()
		r.Succeeded(probe.Probe{Sent: t0.Add(time.Duration(i) * time.Second)}, time.Duration(70_000_000+i%1000))
		r.Failed(probe.Probe{Sent: t0.Add(time.Duration(i)*time.Second + time.Millisecond)}, probe.ReasonRefused)
	}); n != 0 {
		t.Errorf("%v allocations per verdict with the watcher", n)
	}
}

// TestMemoryPerWatchedTarget measures what a probe series costs in the
// agent: the recorder, its watcher and (with history) 6 hours of
// per-minute history, after a minute of verdicts.
func TestMemoryPerWatchedTarget(t *testing.T) {
	const n = 2000
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	per := map[string]float64{}
	for _, c := range []struct {
		name string
		make func() *Metrics
	}{
		{"recorder", func() *Metrics { return NewMetrics(prometheus.NewRegistry(), zap.NewNop()) }},
		{"watched, no history", func() *Metrics { return watched(t, false) }},
		{"watched, 6 h history", func() *Metrics { return watched(t, true) }},
	} {
		before := heap()
		m := c.make()
		recs := make([]probe.Recorder, n)
		t0 := time.Now()
		for i := range recs {
			recs[i] = m.Add(&config.ProbeSpec{SourceSite: "us-east", TargetSite: "ap-tokyo", Target: fmt.Sprintf("10.77.%d.%d", i/250, i%250),
				Path: "sitelink", Segment: "prod", Protocol: "icmp"})
			for k := range 60 {
				recs[i].Succeeded(probe.Probe{Sent: t0.Add(time.Duration(k) * time.Second)}, 70*time.Millisecond)
			}
		}
		per[c.name] = float64(heap()-before) / n
		runtime.KeepAlive(recs)
		runtime.KeepAlive(m)
		t.Logf("%s: %.0f bytes per target", c.name, per[c.name])
	}
	hist := per["watched, 6 h history"] - per["watched, no history"]
	watchOnly := per["watched, no history"] - per["recorder"]
	t.Logf("history: %.0f bytes per target for 6 h; watcher without history: %.0f bytes", hist, watchOnly)
	if hist > 6000 || watchOnly > 2000 {
		t.Errorf("history %.0f B (want ≤ 6000), watcher %.0f B (want ≤ 2000) per target", hist, watchOnly)
	}
}
