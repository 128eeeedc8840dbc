package pathmetrics

import (
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/events"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/trace"
)

// The sink emits one event per fact: a counted path change (not the first
// path, not a hop that went silent), an MTU change, a black hole's start
// (from the first search too) and end.
func TestSinkEvents(t *testing.T) {
	var got []events.Event
	s := NewSink(New(), zap.NewNop())
	s.SetEmit(func(e events.Event) { got = append(got, e) })
	spec := &config.ProbeSpec{Kind: config.KindTrace, SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.77.7.1",
		Path: "sitelink", Segment: "prod", Protocol: "icmp"}
	start := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	tr := func(i int, hops ...string) *trace.Path {
		p := &trace.Path{Reached: true, Start: start.Add(time.Duration(i) * time.Minute)}
		for n, h := range hops {
			hop := trace.Hop{TTL: n + 1, Sent: 3}
			if h != "*" {
				hop.Addr, hop.Received, hop.RTTs = netip.MustParseAddr(h), 3, []time.Duration{time.Millisecond}
			}
			p.Hops = append(p.Hops, hop)
		}
		return p
	}
	s.ObserveTrace(spec, tr(0, "10.90.17.1", "10.90.17.2", "10.77.7.1"))
	s.ObserveTrace(spec, tr(1, "10.90.17.1", "*", "10.77.7.1"))
	s.ObserveTrace(spec, tr(2, "10.90.17.1", "10.90.17.9", "10.77.7.1"))
	if len(got) != 1 || got[0].Kind != events.PathChanged || !got[0].Time.Equal(start.Add(2*time.Minute)) ||
		got[0].Labels != events.Probe("us-east", "eu-frankfurt", "10.77.7.1", "sitelink", "prod", "icmp", "") {
		t.Fatalf("path events: %v", got)
	}
	if old, cur := got[0].Details["old"].([]string), got[0].Details["new"].([]string); len(old) != 3 || old[1] != "10.90.17.2" || cur[1] != "10.90.17.9" {
		t.Errorf("path change details: %v", got[0].Details)
	}

	got = nil
	mtu := &config.ProbeSpec{Kind: config.KindMTU, SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.78.7.1",
		Path: "mpls", Segment: "prod", Protocol: "icmp"}
	for _, r := range []pmtu.Result{
		{MTU: 8500, Reached: true, Blackhole: true}, // black hole from the first search: news
		{MTU: 8500, Reached: true, Blackhole: true}, // still: nothing
		{MTU: 1500, Reached: true},                  // ended, and the MTU changed
		{MTU: 1500, Reached: true},
	} {
		s.ObserveMTU(mtu, r)
	}
	var kinds []events.Kind
	for _, e := range got {
		kinds = append(kinds, e.Kind)
	}
	want := []events.Kind{events.MTUBlackholeStarted, events.MTUBlackholeEnded, events.MTUChanged}
	if len(kinds) != len(want) || kinds[0] != want[0] || kinds[1] != want[1] || kinds[2] != want[2] {
		t.Fatalf("MTU events %v, want %v", kinds, want)
	}
	if got[0].Details["size_bytes"] != 8501 || got[1].Details["mtu_bytes"] != 1500 ||
		got[2].Details["old_bytes"] != 8500 || got[2].Details["new_bytes"] != 1500 {
		t.Errorf("MTU details: %v %v %v", got[0].Details, got[1].Details, got[2].Details)
	}
	// A first search without a black hole is the starting state.
	got = nil
	mtu.Target = "10.78.7.65"
	s.ObserveMTU(mtu, pmtu.Result{MTU: 9000, Reached: true})
	if len(got) != 0 {
		t.Errorf("first MTU search: %v", got)
	}
}
