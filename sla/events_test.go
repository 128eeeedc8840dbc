package sla

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/events"
)

// serveJournal serves a real journal with evs, as an agent does.
func serveJournal(t *testing.T, evs ...events.Event) (*events.Journal, string) {
	t.Helper()
	// The test's month may be older than the default retention.
	j, err := events.Open(events.Options{Dir: filepath.Join(t.TempDir(), "events"), Retention: 50 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	for _, e := range evs {
		j.Emit(e)
	}
	mux := http.NewServeMux()
	j.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return j, srv.URL
}

// A breach window names the events that concern its pair, from a step
// before its start to its end, once each, whichever journal they come
// from; the journals are read page by page.
func TestBreachEvents(t *testing.T) {
	t0 := time.Date(2026, 10, 5, 1, 0, 0, 0, time.UTC)
	pair := events.Probe("us-east", "ap-tokyo", "10.77.4.1", "sitelink", "prod", "icmp", "")
	other := events.Probe("us-west", "eu-frankfurt", "10.77.7.1", "sitelink", "prod", "icmp", "")
	bgp := func(site, seg string, at time.Time) events.Event {
		return events.NewBGPPeerChanged(at, events.Labels{Site: site, Segment: seg, VIFID: "dxvif-" + site + "-" + seg, BGPPeerID: "p"}, "169.254.0.1/30", "up", "down")
	}
	inWindow := []events.Event{
		events.NewPathChanged(t0.Add(-30*time.Second), pair, []string{"a"}, []string{"b"}), // a step before the start
		events.NewTargetDown(t0.Add(time.Second), pair, 3),
		bgp("ap-tokyo", "prod", t0.Add(2*time.Minute)),                            // the target site's prod VIF
		events.NewConfigReloaded(t0.Add(3*time.Minute), "us-east", nil, nil, nil), // the source agent
		events.NewTargetUp(t0.Add(10*time.Minute), pair, 10*time.Minute),          // at the end
	}
	noise := []events.Event{
		events.NewTargetDown(t0.Add(-2*time.Minute), pair, 3),                     // too early
		events.NewTargetDown(t0.Add(11*time.Minute), pair, 3),                     // too late
		events.NewTargetDown(t0.Add(time.Minute), other, 3),                       // another pair
		bgp("ap-tokyo", "dev", t0.Add(2*time.Minute)),                             // another segment
		bgp("eu-frankfurt", "prod", t0.Add(2*time.Minute)),                        // another site
		events.NewConfigReloaded(t0.Add(4*time.Minute), "us-west", nil, nil, nil), // another agent
		events.NewAgentStarted(t0.Add(-24*time.Hour), "us-east", "v1"),            // outside the period
		events.NewLatencyShift(t0.Add(5*time.Hour), pair, time.Millisecond, 2*time.Millisecond, t0.Add(5*time.Hour)),
	}
	// Enough events for two pages (events.MaxLimit each), in the period
	// but outside the window.
	var filler []events.Event
	for i := range events.MaxLimit + 50 {
		filler = append(filler, events.NewTargetUp(t0.Add(2*time.Hour+time.Duration(i)*time.Millisecond), other, 0))
	}
	_, east := serveJournal(t, append(append(append([]events.Event{}, inWindow...), noise...), filler...)...)
	// Tokyo's agent polled the same BGP change: listed once.
	_, tokyo := serveJournal(t, bgp("ap-tokyo", "prod", t0.Add(2*time.Minute)))

	from, to := t0.Add(-time.Hour), t0.Add(4*time.Hour)
	srcs, evs := FetchEvents(context.Background(), nil, []string{east, tokyo, "http://127.0.0.1:1"}, from, to)
	if len(srcs) != 3 || srcs[0].Events != len(inWindow)+len(noise)-2+len(filler) || srcs[0].Error != "" ||
		srcs[1].Events != 1 || !strings.Contains(srcs[2].Error, "unreachable") {
		t.Fatalf("sources: %+v", srcs)
	}
	r := &Report{From: from, To: to, StepSeconds: 60, Pairs: []*Pair{
		{Source: "us-east", Target: "ap-tokyo", Path: "sitelink", Segment: "prod",
			Breaches: []*Breach{{Start: t0, End: t0.Add(10 * time.Minute), Cause: "unreachable"}}},
	}}
	AttachEvents(r, srcs, evs)
	got := r.Pairs[0].Breaches[0].Events
	if len(got) != len(inWindow) {
		for _, e := range got {
			t.Logf("  %s %s %s", e.Time.Format(time.TimeOnly), e.Kind, e.Summary)
		}
		t.Fatalf("%d events in the window, want %d", len(got), len(inWindow))
	}
	for i, e := range got {
		if !e.Time.Equal(inWindow[i].Time) || e.Kind != string(inWindow[i].Kind) {
			t.Errorf("event %d: %s %s, want %s %s", i, e.Time, e.Kind, inWindow[i].Time, inWindow[i].Kind)
		}
	}
	if got[1].Labels["target"] != "10.77.4.1" || got[1].Agent != east {
		t.Errorf("labels and source of an event: %+v", got[1])
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "http://127.0.0.1:1") {
		t.Errorf("notes: %q", r.Notes)
	}

	for format, want := range map[string]string{
		"csv":      "breach_event,us-east,ap-tokyo,sitelink,prod,2026-10-05T01:00:00Z,2026-10-05T01:00:01Z,target_down,",
		"html":     `<li data-kind="bgp_peer_changed"><code>01:02:00</code> <b>bgp_peer_changed</b>`,
		"markdown": "  - 2026-10-05 01:03:00 `config_reloaded` configuration reloaded: 0 added, 0 removed, 0 changed\n",
		"json":     `"kind": "path_changed"`,
	} {
		var b bytes.Buffer
		if err := Render(&b, r, format); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), want) {
			t.Errorf("%s lacks %q", format, want)
		}
	}
}
