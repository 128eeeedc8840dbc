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
