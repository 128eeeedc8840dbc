package sla

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/config"
)

// nb builds native buckets of a schema from index → count.
func nb(schema int, counts map[int]float64) NativeBuckets {
	f := math.Exp2(float64(schema))
	out := NativeBuckets{}
	for i, c := range counts {
		out.add(math.Exp2(float64(i-1)/f), math.Exp2(float64(i)/f), c)
	}
	return out
}

// TestNativeQuantileMatchesPromQL: linear interpolation between the
// bucket's own bounds (Prometheus 2.x histogram_quantile on native
// histograms), gaps between sparse buckets skipped.
func TestNativeQuantileMatchesPromQL(t *testing.T) {
	// Schema 6 around 35 ms: buckets -310 (≈34.6–35.0 ms) and -300 (≈38.6–39.1 ms).
	h := nb(6, map[int]float64{-310: 30, -300: 10})
	lo1, hi1 := math.Exp2(-311.0/64), math.Exp2(-310.0/64)
	lo2, hi2 := math.Exp2(-301.0/64), math.Exp2(-300.0/64)
	for q, want := range map[float64]float64{
		0.5:  lo1 + (hi1-lo1)*20/30,
		0.75: hi1,
		0.95: lo2 + (hi2-lo2)*8/10,
		1:    hi2,
	} {
		if got := h.Quantile(q); math.Abs(got-want) > 1e-15 {
			t.Errorf("q%g = %.9g, want %.9g", q, got, want)
		}
	}
	if got := (NativeBuckets{}).Quantile(0.5); !math.IsNaN(got) {
		t.Errorf("empty: %g", got)
	}
	if r := h.widest(); math.Abs(r-math.Exp2(1.0/64)) > 1e-12 || nativeSchemaOf(r) != 6 {
		t.Errorf("widest %g, schema %d", r, nativeSchemaOf(r))
	}
	if s := nativeSchemaOf(nb(3, map[int]float64{-40: 1}).widest()); s != 3 {
		t.Errorf("schema of a schema-3 histogram: %d", s)
	}
}

// TestResolutionBound: however a narrow distribution sits in its schema-6
// bucket, the interpolated median and p95 stay within 1.1 % of the true
// value — the 2 % budget of docs/metrics.md, with room for the network.
func TestResolutionBound(t *testing.T) {
	worst := 0.0
	for v := 0.0001; v < 1.5; v *= 1.0037 {
		lo, hi := nativeBucketOf(v, 6)
		if !(lo < v && v <= hi*(1+1e-12)) {
			t.Fatalf("nativeBucketOf(%g) = (%g, %g]", v, lo, hi)
		}
		h := NativeBuckets{}
		h.add(lo, hi, 100) // every sample = v
		for _, q := range []float64{0.5, 0.95, 0.99} {
			worst = math.Max(worst, math.Abs(h.Quantile(q)-v)/v)
		}
	}
	if worst > 0.011 {
		t.Errorf("worst relative quantile error %.4f, want ≤ 1.1 %%", worst)
	}
	t.Logf("worst relative quantile error of a point mass, 0.1 ms–1.5 s: %.3f %%", 100*worst)
}

func TestClassicBucketOf(t *testing.T) {
	bounds := []float64{0.05, 0.075, 0.1}
	for _, c := range []struct{ v, lo, hi float64 }{
		{0.01, 0, 0.05}, {0.05, 0, 0.05}, {0.06, 0.05, 0.075}, {0.075, 0.05, 0.075}, {0.0988, 0.075, 0.1}, {0.2, 0.1, math.Inf(1)},
	} {
		if lo, hi := classicBucketOf(c.v, bounds); lo != c.lo || hi != c.hi {
			t.Errorf("classicBucketOf(%g) = (%g, %g], want (%g, %g]", c.v, lo, hi, c.lo, c.hi)
		}
	}
}

// TestToClassic: native counts spread over classic bounds keep their total
// and put a straddling bucket's counts on both sides in proportion.
func TestToClassic(t *testing.T) {
	h := NativeBuckets{}
	h.add(0.04, 0.06, 10) // straddles 0.05: 5 and 5
	h.add(0.08, 0.09, 4)
	c := h.toClassic([]float64{0.05, 0.1})
	for u, want := range map[float64]float64{0.05: 5, 0.1: 14, math.Inf(1): 14} {
		if math.Abs(c[u]-want) > 1e-12 {
			t.Errorf("le=%g: %g, want %g (%v)", u, c[u], want, c)
		}
	}
}

// TestLatencyVerdicts: a minute is bad on latency only when its p95's whole
// bucket is above the objective; inside the objective's bucket it is
// unresolved (counted good, reported), never a breach. With classic
// buckets and the docs' 80 ms objective inside (75, 100], the issue's
// 88.1 ms minute used to be a breach.
func TestLatencyVerdicts(t *testing.T) {
	from := mustTime("2026-10-01T00:00:00Z")
	rttObj := config.Duration(80 * time.Millisecond)
	b := &builder{o: Options{From: from, To: from.Add(6 * time.Minute), Step: time.Minute,
		SLA: &config.SLAConfig{Defaults: config.SLAObjectiveSpec{RTTP95: &rttObj}}}, n: 6,
		pairs: map[pairKey]*Pair{}, days: []time.Time{from}, rep: &Report{}}
	classic := b.pair(map[string]string{"source_site": "a", "target_site": "b", "path": "mpls", "segment": "prod"})
	native := b.pair(map[string]string{"source_site": "a", "target_site": "b", "path": "sitelink", "segment": "prod"})
	for _, u := range []float64{0.05, 0.075, 0.1, 0.125, math.Inf(1)} {
		classic.dayAcc[0].buckets[u] = 1 // the layout: le values seen
	}
	native.dayAcc[0].native = nb(6, map[int]float64{-233: 1})
	p95s := []float64{0.0881, 0.0988, 0.074, 0.11, 0.0795, 0.0805}
	for i, q := range p95s {
		classic.status[i], native.status[i] = stGood, stGood
		native.latQ[i] = latCand{p95: q, native: true}
		if q == 0.11 {
			q = 0.074 // classic: no minute that is surely bad
		}
		classic.latQ[i] = latCand{p95: q}
	}
	b.finish()
	// Classic (75, 100] holds the objective: 88.1, 98.8, 79.5, 80.5 ms are
	// unresolved, 74 ms good: met or breached depending on them.
	// Native: 80 ms sits in (79.32, 80.18] ms: 79.5 unresolved, 80.5 in
	// the next bucket (bad), the rest decided.
	for _, c := range []struct {
		p                    *Pair
		good, bad, unresolve int
		status               string
		res                  string
	}{
		{classic, 6, 0, 4, "unresolved", "classic"},
		{native, 2, 4, 1, "breached", "native histogram (schema 6"},
	} {
		m := c.p.Minutes
		if m.Good != c.good || m.Bad != c.bad || m.Latency != c.bad || m.LatencyUnresolved != c.unresolve || c.p.Status != c.status || !strings.HasPrefix(c.p.RTTResolution, c.res) {
			t.Errorf("%s: %+v status %s resolution %q; want good %d bad %d unresolved %d %s %s", c.p.Path, m, c.p.Status, c.p.RTTResolution, c.good, c.bad, c.unresolve, c.status, c.res)
		}
	}
	notes := strings.Join(b.rep.Notes, "\n")
	if !strings.Contains(notes, "a → b mpls/prod: the RTT objective 80ms lies inside the histogram bucket (75ms, 100ms]") ||
		!strings.Contains(notes, "4 minutes whose p95 fell in that bucket") {
		t.Errorf("notes: %s", notes)
	}
}
