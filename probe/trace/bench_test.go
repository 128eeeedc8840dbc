package trace_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
	"github.com/probed/probed/probe/trace"
)

// BenchmarkDiscovery1000Targets traces 1,000 loopback targets (127.1.x.y,
// all answering at the first hop) per iteration, 64 traces at a time:
// without a packet budget it reports the packets per second the tracer can
// send and match; with pps=2000 it shows the budget holding (packets/s
// stays at 2000) and what one discovery round of 1,000 targets costs.
func BenchmarkDiscovery1000Targets(b *testing.B) {
	b.Run("unlimited", func(b *testing.B) { benchDiscovery(b, 0) })
	b.Run("pps=2000", func(b *testing.B) { benchDiscovery(b, 2000) })
}

func benchDiscovery(b *testing.B, pps int) {
	ns := testutil.NewNetNS(b)
	var tr *trace.Tracer
	if err := ns.Do(func() (err error) { tr, err = trace.New(pps); return err }); err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	targets := make([]netip.Addr, 1000)
	for i := range targets {
		targets[i] = netip.MustParseAddr(fmt.Sprintf("127.1.%d.%d", i/250, i%250+1))
	}
	ctx := context.Background()
	// The trace computes its source with a route lookup on a socket
	// opened in the namespace, so it can run on any thread.
	b.ResetTimer()
	start := time.Now()
	sent0 := tr.PacketsSent()
	var failed sync.Map
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		work := make(chan netip.Addr)
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for dst := range work {
					p, err := tr.Trace(ctx, trace.Target{Dst: dst, ProbesPerHop: 3, MaxTTL: 30, Timeout: time.Second})
					if err != nil || !p.Reached || len(p.Hops) != 1 {
						failed.Store(dst, fmt.Sprintf("err=%v path=%+v", err, p))
					}
				}
			}()
		}
		for _, d := range targets {
			work <- d
		}
		close(work)
		wg.Wait()
	}
	el := time.Since(start)
	sent := tr.PacketsSent() - sent0
	failed.Range(func(k, v any) bool { b.Errorf("trace %v failed: %v", k, v); return false })
	b.ReportMetric(float64(sent)/el.Seconds(), "packets/s")
	b.ReportMetric(float64(sent)/float64(b.N)/1000, "packets/trace")
	b.ReportMetric(float64(b.N*1000)/el.Seconds(), "traces/s")
}

// TestLimiterPaces checks the global budget: 50 sends at 500 pps take about
// 100 ms. The bound is loose on purpose (a busy 2-core CI machine only ever
// makes it slower, never faster, so the lower bound is the real check).
func TestLimiterPaces(t *testing.T) {
	l := trace.NewLimiter(500)
	start := time.Now()
	for i := 0; i < 50; i++ {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 95*time.Millisecond || el > 2*time.Second {
		t.Errorf("50 sends at 500 pps took %v, want about 98 ms", el)
	}
}
