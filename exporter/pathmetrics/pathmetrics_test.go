package pathmetrics

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

var lbl = Labels{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.77.7.1", Path: "sitelink", Segment: "prod", Protocol: "icmp"}

func tr(reached bool, addrs ...string) Trace {
	t := Trace{Reached: reached, At: time.Unix(1700000000, 0)}
	for _, a := range addrs {
		h := Hop{Addr: a, Sent: 3}
		if a != "" {
			h.Received, h.RTT = 3, 2*time.Millisecond
		}
		t.Hops = append(t.Hops, h)
	}
	return t
}

func TestDiffers(t *testing.T) {
	p := func(s string) []string { return strings.Split(s, ",") }
	cases := []struct {
		old        string
		oldReached bool
		cur        string
		curReached bool
		want       bool
	}{
		{"a,b,c,d", true, "a,b,c,d", true, false},
		{"a,b,c,d", true, "a,*,c,d", true, false},          // one hop stopped answering
		{"a,b,c,d", true, "a,x,c,d", true, true},           // another router
		{"a,b,c,d", true, "a,b,d", true, true},             // shorter
		{"a,b,c,d", true, "a,b,c", false, false},           // target silent this time
		{"a,b,c,d", true, "a,b,c,x,d", true, true},         // a hop more
		{"a,*,c,d", true, "a,b,c,d", true, false},          // a silent hop answers again
		{"a,b", false, "a,b,c,d", true, false},             // first time the target answered
		{"a,b,c,d", true, "*,*,*,d", true, false},          // nothing contradicts
		{"a,b,c,d", true, "a,b,c,d,*,*,*,*", false, false}, // unreached: longer is no evidence
		// Recovery from an outage: the probes of the low TTLs were lost
		// while the link was down, the target answered a later one.
		{"a,b,d", true, "*,*,*,*,*,d", true, false},
		{"a,b,d", true, "a,*,*,*,d", true, false},
		// The target's own TTL lost (its position known is the target,
		// not a router that could fill it): no evidence of a longer path.
		{"a,b,d", true, "a,b,*,d", true, false},
		{"a,b,c,d", true, "*,*,c,x,d", true, true}, // x answered TTL 4: longer, silent hops known
		{"a,b,c,d", true, "*,*,d", true, true},     // the target answered TTL 3: shorter
		{"a,b,d", true, "a,b,x", false, true},      // a router where the target was
	}
	for _, c := range cases {
		if got := Differs(p(c.old), c.oldReached, p(c.cur), c.curReached); got != c.want {
			t.Errorf("Differs(%s %v, %s %v) = %v, want %v", c.old, c.oldReached, c.cur, c.curReached, got, c.want)
		}
	}
}

// A change is counted once, a silent hop is no change and keeps the known
// address in path_info, and path_info is replaced rather than added.
func TestObserveTraceCountsOnce(t *testing.T) {
	s := New()
	if _, ch := s.ObserveTrace("k", lbl, tr(true, "10.0.0.1", "10.0.1.1", "10.77.7.1")); ch {
		t.Fatal("first trace counted as a change")
	}
	if _, ch := s.ObserveTrace("k", lbl, tr(true, "10.0.0.1", "", "10.77.7.1")); ch {
		t.Fatal("a silent hop counted as a change")
	}
	c, ch := s.ObserveTrace("k", lbl, tr(true, "10.0.0.1", "10.0.2.1", "10.77.7.1"))
	if !ch || strings.Join(c.Old, ",") != "10.0.0.1,10.0.1.1,10.77.7.1" || strings.Join(c.New, ",") != "10.0.0.1,10.0.2.1,10.77.7.1" {
		t.Fatalf("change = %v %v", c, ch)
	}
	for i := 0; i < 3; i++ {
		if _, ch := s.ObserveTrace("k", lbl, tr(true, "10.0.0.1", "10.0.2.1", "10.77.7.1")); ch {
			t.Fatal("the same new path counted again")
		}
	}
	s.ObserveTrace("k", lbl, tr(true, "10.0.0.1", "", "10.77.7.1"))
	s.ObserveMTU("k", lbl, 1500, true, time.Unix(1700000000, 0))
	want := `
# HELP probed_path_changes_total Path changes: a hop answered from another address, or the hop count changed. A hop that stops answering is not a change.
# TYPE probed_path_changes_total counter
probed_path_changes_total{path="sitelink",port="",protocol="icmp",segment="prod",source_site="us-east",target="10.77.7.1",target_site="eu-frankfurt"} 1
# HELP probed_path_hops Hops to the target in the current path, the target included (the hops known so far when the target does not answer).
# TYPE probed_path_hops gauge
probed_path_hops{path="sitelink",port="",protocol="icmp",segment="prod",source_site="us-east",target="10.77.7.1",target_site="eu-frankfurt"} 3
# HELP probed_path_info Always 1; hops is the current path, hop addresses in order separated by commas, * for a hop that never answered.
# TYPE probed_path_info gauge
probed_path_info{hops="10.0.0.1,10.0.2.1,10.77.7.1",path="sitelink",port="",protocol="icmp",segment="prod",source_site="us-east",target="10.77.7.1",target_site="eu-frankfurt"} 1
# HELP probed_path_hop_rtt_seconds Median round-trip time to each hop in the latest trace (hop: TTL, 1 is the first router); hops that did not answer are left out.
# TYPE probed_path_hop_rtt_seconds gauge
probed_path_hop_rtt_seconds{hop="1",path="sitelink",port="",protocol="icmp",segment="prod",source_site="us-east",target="10.77.7.1",target_site="eu-frankfurt"} 0.002
probed_path_hop_rtt_seconds{hop="3",path="sitelink",port="",protocol="icmp",segment="prod",source_site="us-east",target="10.77.7.1",target_site="eu-frankfurt"} 0.002
# HELP probed_path_mtu_blackhole 1 when packets above the path MTU vanish without Fragmentation Needed / Packet Too Big (an MTU black hole), 0 when the path reports its limit or carries the largest size.
# TYPE probed_path_mtu_blackhole gauge
probed_path_mtu_blackhole{path="sitelink",port="",protocol="icmp",segment="prod",source_site="us-east",target="10.77.7.1",target_site="eu-frankfurt"} 1
# HELP probed_path_mtu_bytes Largest IP packet (headers included) that reaches the target with don't-fragment set.
# TYPE probed_path_mtu_bytes gauge
probed_path_mtu_bytes{path="sitelink",port="",protocol="icmp",segment="prod",source_site="us-east",target="10.77.7.1",target_site="eu-frankfurt"} 1500
`
	if got := scrape(t, s); got != sortedLines(want) {
		t.Fatalf("exposition:\n%s\nwant:\n%s", got, sortedLines(want))
	}

	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/paths", nil))
	var got struct{ Paths []TargetPath }
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("/paths is not JSON: %v\n%s", err, rec.Body)
	}
	if len(got.Paths) != 1 {
		t.Fatalf("/paths has %d targets, want 1", len(got.Paths))
	}
	p := got.Paths[0]
	if p.Changes != 1 || len(p.Hops) != 3 || p.Hops[1].Address != "10.0.2.1" || p.Hops[1].LossRatio != 1 || p.Hops[1].RTTSeconds != nil ||
		p.Hops[0].RTTSeconds == nil || *p.Hops[0].RTTSeconds != 0.002 || p.LastChange == nil || *p.MTUBytes != 1500 || !*p.MTUBlackhole {
		t.Errorf("unexpected /paths entry:\n%s", rec.Body)
	}

	s.Retain(func(string) bool { return false })
	if got := scrape(t, s); got != "" {
		t.Errorf("series left after the target was removed:\n%s", got)
	}
}

// scrape gathers s through a pedantic registry (which checks descriptors
// and label consistency) and returns the sample lines, sorted.
func scrape(t *testing.T, s *Set) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return sortedLines(b.String())
}

func sortedLines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "# HELP") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

var _ prometheus.Collector = (*Set)(nil)

// trace builds a Trace from a comma-separated hop list ("" or "*" silent).
func trc(reached bool, hops string) Trace {
	var addrs []string
	for _, a := range strings.Split(hops, ",") {
		if a == "*" {
			a = ""
		}
		addrs = append(addrs, a)
	}
	return tr(reached, addrs...)
}

func pathOf(t *testing.T, s *Set) (path string, reached bool, previous string, changes uint64) {
	t.Helper()
	snap := s.Snapshot()
	if len(snap) != 1 {
		t.Fatalf("%d targets in the snapshot", len(snap))
	}
	var hops []string
	for _, h := range snap[0].Hops {
		hops = append(hops, h.Address)
	}
	return strings.Join(hops, ","), snap[0].Reached, strings.Join(snap[0].PreviousPath, ","), snap[0].Changes
}

// A trace that reached the target only after the silence of an outage (or
// that saw no router at all) is not a path: not the first one, not a
// change, never previous_path. A complete trace is; a trace with a hop
// that never answers is once the next round shows the same.
func TestObserveTraceOutages(t *testing.T) {
	type step struct {
		reached bool
		hops    string
		// what the Set shows afterwards
		path     string
		changes  uint64
		previous string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"link down at start, back during the first trace", []step{
			{true, "*,*,*,*,*,d", "", 0, ""},
			{true, "a,b,d", "a,b,d", 0, ""},
			{true, "a,b,d", "a,b,d", 0, ""},
		}},
		{"outage recovery: silence then the target", []step{
			{true, "a,b,d", "a,b,d", 0, ""},
			{true, "*,*,*,*,d", "a,b,d", 0, ""},
			{true, "a,b,d", "a,b,d", 0, ""},
			{true, "*,*,*,*,*,*,d", "a,b,d", 0, ""},
			{true, "a,*,d", "a,b,d", 0, ""},
		}},
		{"a real change is counted once, previous is the real old path", []step{
			{true, "a,b,d", "a,b,d", 0, ""},
			{true, "a,c,b,d", "a,c,b,d", 1, "a,b,d"},
			{true, "a,c,b,d", "a,c,b,d", 1, "a,b,d"},
			{true, "*,*,*,*,*,d", "a,c,b,d", 1, "a,b,d"},
		}},
		{"a new router that never answers: a change once two rounds agree", []step{
			{true, "a,b,d", "a,b,d", 0, ""},
			{true, "a,b,*,d", "a,b,d", 0, ""},
			{true, "a,b,*,d", "a,b,*,d", 1, "a,b,d"},
			{true, "a,b,*,d", "a,b,*,d", 1, "a,b,d"},
			{true, "a,b,d", "a,b,d", 2, "a,b,*,d"},
		}},
		{"the target's TTL lost once is no change", []step{
			{true, "a,b,d", "a,b,d", 0, ""},
			{true, "a,b,*,d", "a,b,d", 0, ""},
			{true, "a,b,d", "a,b,d", 0, ""},
			{true, "a,b,*,d", "a,b,d", 0, ""},
		}},
		{"first path with a router that never answers", []step{
			{true, "a,*,d", "", 0, ""},
			{true, "a,*,d", "a,*,d", 0, ""},
			{true, "a,b,d", "a,b,d", 0, ""},
		}},
		{"a target that does not answer: the routers that do", []step{
			{false, "a,b", "a,b", 0, ""},
			{true, "*,*,*,*,d", "a,b", 0, ""},
			{true, "a,b,d", "a,b,d", 0, ""},
		}},
		{"unreached with a gap waits for a second round", []step{
			{false, "*,*,c", "", 0, ""},
			{true, "a,b,c,d", "a,b,c,d", 0, ""},
		}},
		{"outage during a change: the new router counts, the fake length does not", []step{
			{true, "a,b,c,d", "a,b,c,d", 0, ""},
			{true, "*,*,x,*,*,d", "*,*,x", 1, "a,b,c,d"},
			{true, "a,b,x,d", "a,b,x,d", 1, "a,b,c,d"},
		}},
		{"shorter path", []step{
			{true, "a,b,c,d", "a,b,c,d", 0, ""},
			{true, "*,*,d", "*,*,d", 1, "a,b,c,d"},
			{true, "a,b,d", "a,b,d", 1, "a,b,c,d"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New()
			for i, st := range c.steps {
				_, changed := s.ObserveTrace("k", lbl, trc(st.reached, st.hops))
				path, _, prev, n := pathOf(t, s)
				if path != st.path || n != st.changes || prev != st.previous {
					t.Fatalf("after trace %d (%s reached=%v): path %q changes %d previous %q, want %q %d %q",
						i+1, st.hops, st.reached, path, n, prev, st.path, st.changes, st.previous)
				}
				wantChanged := i > 0 && st.changes > c.steps[i-1].changes
				if changed != wantChanged {
					t.Fatalf("after trace %d (%s): ObserveTrace said changed=%v", i+1, st.hops, changed)
				}
			}
		})
	}
}
