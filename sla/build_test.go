package sla

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/probed/probed/config"

	"github.com/probed/probed/sla/slatest"
)

const testMesh = `
sites:
  - name: us-east
    targets: [{address: 127.0.0.1}]
  - name: us-west
    targets: [{address: 127.0.0.2}]
  - name: ap-tokyo
    targets: [{address: 127.0.0.3}]
  - name: ap-sydney
    targets: [{address: 127.0.0.4}]
  - name: eu-frankfurt
    targets: [{address: 127.0.0.5}]
sla:
  defaults: {availability: 99.9, loss: 1, rtt_p95: 300ms}
  objectives:
    - {source: us-east, target: us-west, path: sitelink, availability: 99.5, rtt_p95: 100ms}
    - {source: ap-sydney, target: eu-frankfurt, rtt_p95: 500ms}
`

func testSLA(t testing.TB) *config.SLAConfig {
	t.Helper()
	cfg, err := config.Parse([]byte(testMesh), "mesh.yaml")
	if err != nil {
		t.Fatalf("parsing test mesh: %v", err)
	}
	return &cfg.SLA
}

func approx(t *testing.T, what string, got Num, want float64) {
	t.Helper()
	if !got.Valid() || math.Abs(float64(got)-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %v, want %v", what, float64(got), want)
	}
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

type wantBreach struct {
	start, end string
	cause      string
	causes     string
	aws        int // number of AWS changes in the window
}

func checkBreaches(t *testing.T, p *Pair, want []wantBreach) {
	t.Helper()
	if len(p.Breaches) != len(want) {
		for _, b := range p.Breaches {
			t.Logf("  %s breach %s – %s %s", p.Name(), b.Start, b.End, b.Cause)
		}
		t.Fatalf("%s: %d breach windows, want %d", p.Name(), len(p.Breaches), len(want))
	}
	for i, w := range want {
		b := p.Breaches[i]
		start, end := mustTime(w.start), mustTime(w.end)
		if !b.Start.Equal(start) || !b.End.Equal(end) || b.Cause != w.cause || strings.Join(b.Causes, ",") != w.causes ||
			b.Minutes != int(end.Sub(start)/time.Minute) || b.DurationSeconds != end.Sub(start).Seconds() {
			t.Errorf("%s breach %d = %s – %s (%d min, %gs) cause %s %v; want %s – %s cause %s [%s]",
				p.Name(), i, b.Start, b.End, b.Minutes, b.DurationSeconds, b.Cause, b.Causes, start, end, w.cause, w.causes)
		}
		if len(b.AWSChanges) != w.aws || b.AWSChanged != (w.aws > 0) {
			t.Errorf("%s breach %d: %d AWS changes (changed=%v) %+v, want %d", p.Name(), i, len(b.AWSChanges), b.AWSChanged, b.AWSChanges, w.aws)
		}
	}
}

// monthReport runs the report over the planted month on a fresh Prometheus.
func monthReport(t *testing.T) *Report {
	t.Helper()
	srv := slatest.StartPrometheus(t, blocksDir(t), "", nil)
	ct := &countingTransport{}
	c, err := NewClient(srv.URL, &http.Client{Transport: ct})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := Build(context.Background(), c, Options{From: monthFrom, To: monthTo, SLA: testSLA(t), Now: mustTime("2026-11-02T08:00:00Z")})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Logf("report over a month of %d pairs built in %s: %d queries, %d KiB answered in all, largest answer %d KiB",
		len(r.Pairs), time.Since(start).Round(time.Millisecond), ct.n, ct.total>>10, ct.max>>10)
	// Bounded steps: one day of one-minute points per range query, so no
	// answer grows with the length of the period.
	if ct.max > 1<<20 {
		t.Errorf("largest answer %d bytes: queries are not bounded", ct.max)
	}
	return r
}

// countingTransport counts the queries and answer sizes the report costs.
type countingTransport struct {
	mu            sync.Mutex
	n, total, max int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	c.mu.Lock()
	c.n++
	c.total += int64(len(body))
	c.max = max(c.max, int64(len(body)))
	c.mu.Unlock()
	return resp, err
}

func TestMonthReport(t *testing.T) {
	r := monthReport(t)
	if len(r.Pairs) != 4 {
		t.Fatalf("%d pairs, want 4", len(r.Pairs))
	}
	// sortPairs: ap-sydney first, then us-east → ap-tokyo, us-west mpls, us-west sitelink.
	syd, tyo, mpls, sl := r.Pairs[0], r.Pairs[1], r.Pairs[2], r.Pairs[3]
	if syd.Target != "eu-frankfurt" || tyo.Target != "ap-tokyo" || mpls.Path != "mpls" || sl.Path != "sitelink" || sl.Target != "us-west" {
		t.Fatalf("unexpected pair order: %s, %s, %s, %s", syd.Name(), tyo.Name(), mpls.Name(), sl.Name())
	}
	if !r.AWSState {
		t.Error("AWS state metrics not found")
	}

	t.Run("objectives", func(t *testing.T) {
		if sl.Objective != (Objective{99.5, 1, 0.1}) || mpls.Objective != (Objective{99.9, 1, 0.3}) ||
			tyo.Objective != (Objective{99.9, 1, 0.3}) || syd.Objective != (Objective{99.9, 1, 0.5}) {
			t.Errorf("objectives: %+v %+v %+v %+v", sl.Objective, mpls.Objective, tyo.Objective, syd.Objective)
		}
	})

	t.Run("minutes and availability", func(t *testing.T) {
		for _, c := range []struct {
			p                                         *Pair
			good, bad, noData, unreach, loss, latency int
			status                                    string
		}{
			// 120 minutes of 190ms against a 100ms objective.
			{sl, 44520, 120, 0, 0, 0, 120, "met"},
			{mpls, 44640, 0, 0, 0, 0, 0, "met"},
			// 45 min outage + 5 min 30% loss + 30 min 10% loss.
			{tyo, 44560, 80, 0, 45, 35, 0, "breached"},
			// 20 min outage + 10 min 50% loss; 360 missing samples and the
			// restart leave 361 minutes without two samples to compare.
			{syd, 44249, 30, 361, 20, 10, 0, "met"},
		} {
			m := c.p.Minutes
			if m.Total != monthMinutes || m.Good != c.good || m.Bad != c.bad || m.NoData != c.noData ||
				m.Unreachable != c.unreach || m.Loss != c.loss || m.Latency != c.latency || c.p.Status != c.status {
				t.Errorf("%s: minutes %+v status %s, want good %d bad %d no data %d (unreachable %d loss %d latency %d) %s",
					c.p.Name(), m, c.p.Status, c.good, c.bad, c.noData, c.unreach, c.loss, c.latency, c.status)
			}
			approx(t, c.p.Name()+" availability", c.p.AvailabilityPercent, 100*float64(c.good)/float64(c.good+c.bad))
		}
		approx(t, "tokyo error budget", tyo.ErrorBudgetUsedPercent, 100*80/(0.001*44640))
		approx(t, "mpls error budget", mpls.ErrorBudgetUsedPercent, 0)
	})

	t.Run("loss and jitter", func(t *testing.T) {
		approx(t, "tokyo loss", tyo.LossPercent, 100*float64(45*60+5*18+30*6)/float64(44640*60))
		approx(t, "sydney loss", syd.LossPercent, 100*float64(20*60+10*30)/float64(44279*60))
		approx(t, "sitelink loss", sl.LossPercent, 0)
		approx(t, "sitelink jitter", sl.JitterSeconds, 0.002)
		approx(t, "mpls jitter", mpls.JitterSeconds, 0.003)
	})

	t.Run("percentiles", func(t *testing.T) {
		// us-west sitelink: 27960 minutes at 60ms in (0.05, 0.075], 16560 at
		// 90ms in (0.075, 0.1], 120 at 190ms in (0.1, 0.2]; 60 answers each.
		lo, mid, n := 27960.0, 16560.0, 44640.0
		approx(t, "sitelink p50", sl.RTT.P50, 0.05+0.025*(0.5*n/lo))
		approx(t, "sitelink p95", sl.RTT.P95, 0.075+0.025*(0.95*n-lo)/mid)
		approx(t, "sitelink p99", sl.RTT.P99, 0.075+0.025*(0.99*n-lo)/mid)
		approx(t, "sitelink mean", sl.RTT.Mean, (lo*0.06+mid*0.09+120*0.19)/n)
		approx(t, "mpls p50", mpls.RTT.P50, 0.0625)
		approx(t, "mpls p95", mpls.RTT.P95, 0.07375)
		approx(t, "mpls p99", mpls.RTT.P99, 0.07475)
		approx(t, "tokyo p95", tyo.RTT.P95, 0.195)
		approx(t, "tokyo mean", tyo.RTT.Mean, 0.16)
		approx(t, "sydney p99", syd.RTT.P99, 0.2+0.3*0.99)
		// Daily: day 1 all 60ms, day 10 has the excursion, day 21 all 90ms.
		approx(t, "day 1 p50", sl.Days[0].RTT.P50, 0.0625)
		approx(t, "day 10 p99", sl.Days[9].RTT.P99, 0.1+0.1*(0.99*1440-1320)/120)
		approx(t, "day 21 p50", sl.Days[20].RTT.P50, 0.0875)
		if d := sl.Days[9]; d.Date != "2026-10-10" || d.Bad != 120 || d.Good != 1320 {
			t.Errorf("day 10: %+v", d)
		}
		if d := syd.Days[24]; d.NoData != 361 || d.Good != 1440-361 {
			t.Errorf("sydney day 25: %+v", d)
		}
	})

	t.Run("breach windows", func(t *testing.T) {
		checkBreaches(t, sl, []wantBreach{{"2026-10-10T10:00:00Z", "2026-10-10T12:00:00Z", "latency", "latency", 0}})
		checkBreaches(t, mpls, nil)
		checkBreaches(t, tyo, []wantBreach{
			{"2026-10-05T03:00:00Z", "2026-10-05T03:50:00Z", "unreachable", "unreachable,loss", 0},
			// MACsec on us-east's connection dropped at 08:10 and came back at 08:13.
			{"2026-10-15T08:00:00Z", "2026-10-15T08:30:00Z", "loss", "loss", 2},
		})
		checkBreaches(t, syd, []wantBreach{
			// eu-frankfurt's dev BGP peer was down from 14:02 to 14:18.
			{"2026-10-12T14:00:00Z", "2026-10-12T14:20:00Z", "unreachable", "unreachable", 2},
			{"2026-10-18T09:00:00Z", "2026-10-18T09:10:00Z", "loss", "loss", 0},
		})
		if len(syd.Breaches) == 2 {
			c := syd.Breaches[0].AWSChanges
			if len(c) == 2 && (c[0].From != "up" || c[0].To != "down" || !c[0].Time.Equal(mustTime("2026-10-12T14:02:00Z")) ||
				c[1].To != "up" || !c[1].Time.Equal(mustTime("2026-10-12T14:19:00Z")) || !strings.Contains(c[0].Resource, "dxpeer-fra-dev-v4") || c[0].Site != "eu-frankfurt") {
				t.Errorf("BGP changes: %+v", c)
			}
		}
		if len(tyo.Breaches) == 2 {
			c := tyo.Breaches[1].AWSChanges
			if len(c) == 2 && (c[0].Site != "us-east" || !strings.Contains(c[0].Resource, "MACsec on connection dxcon-iad1") || c[0].To != "down") {
				t.Errorf("MACsec changes: %+v", c)
			}
		}
	})

	t.Run("path comparison", func(t *testing.T) {
		if len(r.Comparisons) != 1 {
			t.Fatalf("%d comparisons, want 1", len(r.Comparisons))
		}
		c := r.Comparisons[0]
		if c.Source != "us-east" || c.Target != "us-west" || c.Segment != "prod" || len(c.Days) != 31 {
			t.Fatalf("comparison %+v", c)
		}
		// Sitelink is faster for 18 days (60ms vs 70ms); the excursion day
		// (10th), the step day (20th) and the 11 days after go to mpls.
		if c.DaysSitelinkBetter != 18 || c.DaysMPLSBetter != 13 {
			t.Errorf("days sitelink better %d, mpls better %d, want 18 and 13", c.DaysSitelinkBetter, c.DaysMPLSBetter)
		}
		approx(t, "day 1 difference", c.Days[0].DiffPercent, 100*(0.06-0.07)/0.07)
		approx(t, "day 10 difference", c.Days[9].DiffPercent, 100*((1320*0.06+120*0.19)/1440-0.07)/0.07)
		approx(t, "day 20 difference", c.Days[19].DiffPercent, 100*(0.075-0.07)/0.07)
		approx(t, "month difference", c.DiffPercent, 100*(float64(sl.RTT.Mean)-0.07)/0.07)
		if c.Days[0].Better != "sitelink" || c.Days[30].Better != "mpls" {
			t.Errorf("better: %s, %s", c.Days[0].Better, c.Days[30].Better)
		}
	})

	t.Run("render", func(t *testing.T) { checkRenders(t, r) })
}
