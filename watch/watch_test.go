package watch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/events"
	"github.com/probed/probed/history"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

var tokyo = events.Probe("us-east", "ap-tokyo", "10.77.5.1", "sitelink", "prod", "icmp", "")

func setup(t *testing.T) (*Watcher, *events.Journal, *history.Store) {
	t.Helper()
	j, err := events.Open(events.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	h := history.New(history.Options{})
	w, err := New(Options{Emit: j.Emit, History: h})
	if err != nil {
		t.Fatal(err)
	}
	return w, j, h
}

func all(t *testing.T, j *events.Journal) []events.Event {
	t.Helper()
	evs, err := j.Query(context.Background(), events.Query{Limit: events.MaxLimit, Related: true})
	if err != nil {
		t.Fatal(err)
	}
	// Oldest first reads better in tests.
	for i, k := 0, len(evs)-1; i < k; i, k = i+1, k-1 {
		evs[i], evs[k] = evs[k], evs[i]
	}
	return evs
}

func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }

// TestOutage: 10 minutes of answers, a 30-second outage, answers again. The
// journal gets the outage and the loss episode, stamped with the send time of
// the first lost probe and of the first answer after it.
func TestOutage(t *testing.T) {
	w, j, h := setup(t)
	tg := w.Add(tokyo, false)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range 900 {
		if i >= 600 && i < 630 {
			tg.Lost(at(i))
			continue
		}
		tg.Answered(at(i), 70*time.Millisecond+time.Duration(rng.IntN(3000))*time.Microsecond)
	}
	evs := all(t, j)
	want := []struct {
		kind events.Kind
		at   time.Time
	}{
		{events.TargetDown, at(600)},
		{events.LossStarted, at(600)},
		{events.LossEnded, at(629)},
		{events.TargetUp, at(630)},
	}
	if len(evs) != len(want) {
		for _, e := range evs {
			t.Logf("%s %s %s", e.Time, e.Kind, e.Summary)
		}
		t.Fatalf("%d events, want %d", len(evs), len(want))
	}
	for i, w := range want {
		if evs[i].Kind != w.kind || !evs[i].Time.Equal(w.at) || evs[i].Labels != tokyo {
			t.Errorf("event %d: %s at %v, want %s at %v", i, evs[i].Kind, evs[i].Time, w.kind, w.at)
		}
	}
	if evs[3].Details["down_seconds"] != float64(30) || evs[2].Details["lost"] != float64(30) || evs[2].Details["sent"] != float64(30) {
		t.Errorf("details: up %v, loss %v", evs[3].Details, evs[2].Details)
	}
	if up, since := tg.State(); up == nil || !*up || !since.Equal(at(630)) {
		t.Errorf("state: %v since %v", up, since)
	}
	// The outage lists the loss episode nearby.
	if len(evs[0].Related) != 3 {
		t.Errorf("target_down lists %d related events, want the other 3", len(evs[0].Related))
	}
	// And the history has the minutes, the lost ones counted.
	pts := h.Get(history.Key{SourceSite: "us-east", TargetSite: "ap-tokyo", Target: "10.77.5.1", Path: "sitelink", Segment: "prod", Protocol: "icmp"}).
		Points(time.Time{}, at(900))
	lost := 0
	for _, p := range pts {
		lost += p.Lost
	}
	if len(pts) != 15 || lost != 30 {
		t.Errorf("history: %d minutes, %d lost", len(pts), lost)
	}
}

func TestLatencyStep(t *testing.T) {
	w, j, _ := setup(t)
	tg := w.Add(tokyo, false)
	rng := rand.New(rand.NewPCG(2, 2))
	for i := range 1200 {
		base := 70 * time.Millisecond
		if i >= 600 {
			base = 95 * time.Millisecond
		}
		tg.Answered(at(i), base+time.Duration(rng.NormFloat64()*2e6))
	}
	evs := all(t, j)
	if len(evs) != 1 || evs[0].Kind != events.LatencyShift {
		t.Fatalf("%+v", evs)
	}
	if d := evs[0].Time.Sub(at(600)); d < -10*time.Second || d > 10*time.Second {
		t.Errorf("onset %v, step at %v", evs[0].Time, at(600))
	}
}

func TestDownFromTheStart(t *testing.T) {
	w, j, _ := setup(t)
	tg := w.Add(tokyo, false)
	for i := range 5 {
		tg.Lost(at(i))
	}
	evs := all(t, j)
	var down int
	for _, e := range evs {
		if e.Kind == events.TargetDown {
			down++
			if !e.Time.Equal(at(0)) {
				t.Errorf("down at %v", e.Time)
			}
		}
	}
	if down != 1 {
		t.Fatalf("a target down from the start: %d target_down", down)
	}
	if up, since := tg.State(); up == nil || *up || !since.Equal(at(0)) {
		t.Errorf("state: %v since %v", up, since)
	}
	if up, _ := w.Add(tokyo, false).State(); up != nil {
		t.Error("a new target has a state")
	}
}

func TestGuard(t *testing.T) {
	w, j, _ := setup(t)
	g := w.Add(events.Probe("us-east", "ap-tokyo", "10.99.5.1", "sitelink", "dev", "icmp", ""), true)
	for i := range 10 {
		g.Lost(at(i)) // a silent guard is the normal state
	}
	if evs := all(t, j); len(evs) != 0 {
		t.Fatalf("silent guard: %+v", evs)
	}
	g.Answered(at(10), time.Millisecond)
	g.Answered(at(11), time.Millisecond)
	g.Lost(at(12))
	g.Lost(at(13))
	g.Lost(at(14))
	evs := all(t, j)
	if len(evs) != 2 || evs[0].Kind != events.SegmentationViolation || !evs[0].Time.Equal(at(10)) ||
		evs[1].Kind != events.SegmentationRestored || !evs[1].Time.Equal(at(12)) {
		t.Fatalf("%+v", evs)
	}
}

func TestNilTargetAndDisabledHistory(t *testing.T) {
	var tg *Target
	tg.Answered(t0, time.Millisecond)
	tg.Lost(t0)
	w, err := New(Options{History: history.New(history.Options{Disabled: true})})
	if err != nil {
		t.Fatal(err)
	}
	x := w.Add(tokyo, false)
	x.Answered(t0, time.Millisecond)
	x.Lost(t0)
	w.Remove(x)
}

func TestVerdictDoesNotAllocate(t *testing.T) {
	w, _, _ := setup(t)
	tg := w.Add(tokyo, false)
	i := 0
	if a := testing.AllocsPerRun(20000, func() {
		tg.Answered(at(i), 70*time.Millisecond+time.Duration(i%5)*time.Millisecond)
		i++
	}); a != 0 {
		t.Fatalf("%v allocations per verdict", a)
	}
}

// BenchmarkVerdict is the per-probe cost of history, detectors and up/down.
func BenchmarkVerdict(b *testing.B) {
	h := history.New(history.Options{})
	w, _ := New(Options{History: h})
	tg := w.Add(tokyo, false)
	i := 0
	for b.Loop() {
		if i%97 == 0 {
			tg.Lost(at(i))
		} else {
			tg.Answered(at(i), 70*time.Millisecond+time.Duration(i%7)*time.Millisecond)
		}
		i++
	}
}

// TestMemoryPerTarget measures a watched target with 6 hours of history, and
// without history.
func TestMemoryPerTarget(t *testing.T) {
	const n = 2000
	for _, disabled := range []bool{false, true} {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		w, _ := New(Options{History: history.New(history.Options{Disabled: disabled})})
		ts := make([]*Target, n)
		for i := range n {
			l := tokyo
			l.Target = fmt.Sprintf("10.77.%d.%d", i/250, i%250)
			ts[i] = w.Add(l, false)
			for m := range 360 {
				ts[i].Answered(t0.Add(time.Duration(m)*time.Minute), 70*time.Millisecond)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(after.HeapAlloc-before.HeapAlloc) / n
		t.Logf("history disabled=%v: %.0f bytes per target", disabled, per)
		if (!disabled && per > 6000) || (disabled && per > 1500) {
			t.Errorf("%.0f bytes per target (history disabled=%v)", per, disabled)
		}
		runtime.KeepAlive(ts)
	}
}

// The exporter's rules, verdict for verdict: a TCP reset is an answer
// without an RTT (up, not lost, nothing in the history's RTTs), a slot at
// which no probe left counts towards down but is no loss episode, a guard
// that gets a reset violates, down_after changes apply at once, and a
// removed target stays silent.
func TestRecorderRules(t *testing.T) {
	w, j, h := setup(t)
	tcp := events.Probe("us-east", "ap-tokyo", "10.77.5.1", "sitelink", "prod", "tcp", "443")
	tg := w.Add(tcp, false)
	for i := range 30 {
		tg.Failed(at(i), true)
	}
	if up, _ := tg.State(); up == nil || !*up {
		t.Fatalf("refused: up %v, want up", up)
	}
	key := history.Key{SourceSite: "us-east", TargetSite: "ap-tokyo", Target: "10.77.5.1", Path: "sitelink", Segment: "prod", Protocol: "tcp", Port: "443"}
	if _, ok := h.Get(key).Latest(at(30)); ok {
		t.Error("refused probes gave the history an RTT")
	}
	// Unsent slots: down after down_after (3), no loss episode.
	for range 3 {
		tg.Unsent()
	}
	if up, _ := tg.State(); up == nil || *up {
		t.Fatalf("after 3 unsent slots: up %v, want down", up)
	}
	evs := all(t, j)
	if len(evs) != 1 || evs[0].Kind != events.TargetDown || evs[0].Details["unsent"] != float64(3) ||
		!strings.Contains(evs[0].Summary, "3 of them not sent") {
		t.Fatalf("events %v, want one target_down saying the probes were not sent, and no loss episode", evs)
	}
	tg.Failed(time.Now(), true)
	if evs := all(t, j); len(evs) != 2 || evs[1].Kind != events.TargetUp {
		t.Fatalf("a reset after down: %v, want target_up", evs)
	}

	// down_after 5 applies to an existing target at once.
	w.SetDownAfter(5)
	for i := range 4 {
		tg.Failed(at(50+i), false)
	}
	if up, _ := tg.State(); up == nil || !*up {
		t.Fatal("down after 4 losses with down_after 5")
	}
	tg.Failed(at(54), false)
	if up, _ := tg.State(); up == nil || *up {
		t.Fatal("not down after 5 losses with down_after 5")
	}

	// A guard answering with a reset violates.
	g := w.Add(events.Probe("us-east", "ap-tokyo", "10.77.5.9", "sitelink", "dev", "tcp", "22"), true)
	g.Failed(at(60), true)
	if !slices.ContainsFunc(all(t, j), func(e events.Event) bool {
		return e.Kind == events.SegmentationViolation && e.Labels.Target == "10.77.5.9"
	}) {
		t.Errorf("guard reset: no segmentation_violation in %v", all(t, j))
	}
	g.Unsent() // no effect on a guard

	// Removed: silent.
	n := len(all(t, j))
	w.Remove(tg)
	for i := range 10 {
		tg.Answered(at(70+i), 70*time.Millisecond)
	}
	if got := len(all(t, j)); got != n {
		t.Errorf("a removed target emitted %d events", got-n)
	}
	var nilW *Watcher
	if nilW.Add(tcp, false) != nil {
		t.Error("a nil Watcher made a target")
	}
	nilW.Remove(tg)
	nilW.SetDownAfter(2)
}
