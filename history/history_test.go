package history

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

var key = Key{"us-east", "ap-tokyo", "10.77.5.1", "sitelink", "prod", "icmp", ""}

func TestEncoding(t *testing.T) {
	prev := uint16(0)
	for us := int64(0); us < 50_000_000; us = us*101/100 + 1 {
		d := time.Duration(us) * time.Microsecond
		c := enc(d)
		if c < prev {
			t.Fatalf("not monotonic at %v", d)
		}
		prev = c
		got := dec(c)
		if us < 2048 && got != d {
			t.Fatalf("%v → %v: not exact below 2048 µs", d, got)
		}
		if e := math.Abs(float64(got-d)) / float64(d); us >= 2048 && e > 0.0005 {
			t.Fatalf("%v → %v: error %.5f", d, got, e)
		}
	}
	if dec(enc(-time.Second)) != 0 {
		t.Fatal("negative RTT")
	}
	if dec(enc(1000*time.Hour)) < 1000*time.Hour*999/1000 {
		t.Fatal("large RTTs do not fit")
	}
}

func TestMinutes(t *testing.T) {
	s := New(Options{})
	sr := s.Add(key)
	if s.Add(key) != sr {
		t.Fatal("Add of an existing key made a new series")
	}
	// Minute 0: 60 probes at 1 s, RTT 70..129 ms, every 10th lost.
	for i := range 60 {
		at := t0.Add(time.Duration(i) * time.Second)
		if i%10 == 9 {
			sr.Lost(at)
			continue
		}
		sr.Observe(at, time.Duration(70+i)*time.Millisecond)
	}
	// Minutes 1 and 2: nothing (the agent was stopped). Minute 3: all lost.
	for i := range 5 {
		sr.Lost(t0.Add(3*time.Minute + time.Duration(i)*time.Second))
	}
	// Minute 4, in progress: two answers.
	sr.Observe(t0.Add(4*time.Minute), 80*time.Millisecond)
	sr.Observe(t0.Add(4*time.Minute+time.Second), 90*time.Millisecond)

	pts := sr.Points(time.Time{}, t0.Add(4*time.Minute+30*time.Second))
	if len(pts) != 3 {
		t.Fatalf("%d points: %+v", len(pts), pts)
	}
	p := pts[0]
	// Answered: 70..128 without 79, 89, …: 54 values, median between
	// the 27th and 28th.
	var ans []int
	for i := range 60 {
		if i%10 != 9 {
			ans = append(ans, 70+i)
		}
	}
	wantMed := time.Duration(ans[26]+ans[27]) * time.Millisecond / 2
	if !p.Time.Equal(t0) || p.Sent != 60 || p.Lost != 6 || !near(p.Min, 70*time.Millisecond) || !near(p.Max, 128*time.Millisecond) ||
		!near(p.Median, wantMed) {
		t.Fatalf("minute 0: %+v, want median %v", p, wantMed)
	}
	if p := pts[1]; !p.Time.Equal(t0.Add(3*time.Minute)) || p.Sent != 5 || p.Lost != 5 || p.Median != 0 {
		t.Fatalf("lost minute: %+v", p)
	}
	if p := pts[2]; p.Sent != 2 || !near(p.Min, 80*time.Millisecond) || !near(p.Median, 85*time.Millisecond) || !near(p.Max, 90*time.Millisecond) {
		t.Fatalf("current minute: %+v", p)
	}
	// Latest: the current minute has answers.
	if p, ok := sr.Latest(t0.Add(4*time.Minute + 30*time.Second)); !ok || !near(p.Median, 85*time.Millisecond) {
		t.Fatalf("latest: %+v %v", p, ok)
	}
	// A minute later without answers the previous minute still counts;
	// two minutes later nothing does.
	sr.Lost(t0.Add(5 * time.Minute))
	if p, ok := sr.Latest(t0.Add(5*time.Minute + time.Second)); !ok || !p.Time.Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("latest after a lost minute: %+v %v", p, ok)
	}
	if _, ok := sr.Latest(t0.Add(7 * time.Minute)); ok {
		t.Fatal("latest from minutes ago")
	}
	// since cuts the start.
	if pts := sr.Points(t0.Add(time.Minute), t0.Add(4*time.Minute)); len(pts) != 2 {
		t.Fatalf("since: %+v", pts)
	}
}

func TestRingKeepsDurationOnly(t *testing.T) {
	s := New(Options{Duration: 2 * time.Hour})
	sr := s.Add(key)
	for m := range 5 * 60 {
		sr.Observe(t0.Add(time.Duration(m)*time.Minute), time.Duration(m+1)*time.Millisecond)
	}
	now := t0.Add(5*60*time.Minute - time.Second)
	pts := sr.Points(time.Time{}, now)
	if len(pts) != 120 || !pts[0].Time.Equal(t0.Add(180*time.Minute)) || !near(pts[119].Median, 300*time.Millisecond) {
		t.Fatalf("%d points, first %v", len(pts), pts[0].Time)
	}
	// Hours later without verdicts (target removed from the plan but
	// still shown, or the agent's clock jumped): nothing stale.
	if pts := sr.Points(time.Time{}, now.Add(3*time.Hour)); len(pts) != 0 {
		t.Fatalf("stale points: %d", len(pts))
	}
	// A verdict after a gap longer than the ring clears it.
	sr.Observe(now.Add(3*time.Hour), time.Millisecond)
	if pts := sr.Points(time.Time{}, now.Add(3*time.Hour)); len(pts) != 1 {
		t.Fatalf("after a long gap: %d points", len(pts))
	}
}

func TestManySamplesPerMinute(t *testing.T) {
	s := New(Options{})
	sr := s.Add(key)
	// 10 ms interval: 6000 answers in a minute, uniform 50..150 ms.
	for i := range 6000 {
		sr.Observe(t0.Add(time.Duration(i)*10*time.Millisecond), time.Duration(50_000+i*100/6)*time.Microsecond)
	}
	p := sr.Points(time.Time{}, t0.Add(59*time.Second))[0]
	if p.Sent != 6000 || !near(p.Min, 50*time.Millisecond) || p.Max < 149*time.Millisecond {
		t.Fatalf("%+v", p)
	}
	// A median of a 64-sample reservoir: within 15 ms of the true 100 ms.
	if p.Median < 85*time.Millisecond || p.Median > 115*time.Millisecond {
		t.Fatalf("median %v", p.Median)
	}
}

func TestDisabled(t *testing.T) {
	s := New(Options{Disabled: true})
	sr := s.Add(key)
	if sr != nil || s.Enabled() {
		t.Fatal("disabled store returned a series")
	}
	sr.Observe(t0, time.Millisecond) // no-ops on nil
	sr.Lost(t0)
	if sr.Points(time.Time{}, t0) != nil {
		t.Fatal("points from nothing")
	}
	rec := httptest.NewRecorder()
	s.Handler(nil).ServeHTTP(rec, httptest.NewRequest("GET", PathHistory, nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"enabled":false`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if a := testing.AllocsPerRun(1000, func() { s.Add(key).Observe(t0, time.Millisecond) }); a != 0 {
		t.Fatalf("disabled history allocates %v", a)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	sr := New(Options{}).Add(key)
	i := 0
	a := testing.AllocsPerRun(100000, func() {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		if i%13 == 0 {
			sr.Lost(at)
		} else {
			sr.Observe(at, time.Duration(i%1000)*time.Microsecond)
		}
		i++
	})
	if a != 0 {
		t.Fatalf("%v allocations per verdict", a)
	}
}

func TestHTTP(t *testing.T) {
	s := New(Options{})
	other := key
	other.TargetSite, other.Target = "eu-frankfurt", "10.77.7.1"
	for _, k := range []Key{key, other} {
		sr := s.Add(k)
		sr.Observe(t0, 70*time.Millisecond)
		sr.Lost(t0.Add(time.Second))
		sr.Lost(t0.Add(time.Minute))
	}
	srv := httptest.NewServer(s.Handler(func() time.Time { return t0.Add(90 * time.Second) }))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "?target_site=ap-tokyo&since=6h")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var r Response
	if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if !r.Enabled || r.StepSeconds != 60 || len(r.Series) != 1 || r.Series[0].Labels != key {
		t.Fatalf("%s", body)
	}
	pts := r.Series[0].Points
	if len(pts) != 2 || *pts[0][0] != float64(t0.Unix()) || !near(time.Duration(*pts[0][2]*1e9), 70*time.Millisecond) ||
		*pts[0][4] != 2 || *pts[0][5] != 1 || *pts[1][0] != float64(t0.Unix()+60) || pts[1][1] != nil || *pts[1][5] != 1 {
		t.Fatalf("points: %s", body)
	}
	for _, q := range []string{"?colour=red", "?since=later", "?target=a&target=b"} {
		resp, err := http.Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), `"error"`) {
			t.Errorf("%s: %d %s", q, resp.StatusCode, b)
		}
	}
}

// near: equal within the storage's rounding (0.05 %).
func near(got, want time.Duration) bool {
	return math.Abs(float64(got-want)) <= float64(want)*0.0005
}

// TestMemoryPerTarget measures the heap of 2,000 full 6-hour series.
func TestMemoryPerTarget(t *testing.T) {
	const n = 2000
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := New(Options{})
	for i := range n {
		k := key
		k.Target = fmt.Sprintf("10.77.%d.%d", i/250, i%250)
		sr := s.Add(k)
		for m := range 360 {
			sr.Observe(t0.Add(time.Duration(m)*time.Minute), time.Duration(m)*time.Millisecond)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("history: %.0f bytes per target for %d minutes (%.1f MiB per 10,000 targets)", per, s.Minutes(), per*10000/(1<<20))
	if per > 5000 {
		t.Fatalf("%.0f bytes per target, documented as about 4.5 kB", per)
	}
	runtime.KeepAlive(s)
}

// BenchmarkObserve is the per-probe cost.
func BenchmarkObserve(b *testing.B) {
	sr := New(Options{}).Add(key)
	i := 0
	for b.Loop() {
		sr.Observe(t0.Add(time.Duration(i)*time.Second), time.Duration(70_000+i%1000)*time.Microsecond)
		i++
	}
}
