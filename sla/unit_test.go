package sla

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/config"
)

func TestQuantileMatchesPromQL(t *testing.T) {
	b := Buckets{}
	for le, c := range map[string]float64{"0.1": 10, "0.2": 30, "0.5": 40, "+Inf": 40} {
		b.addLe(le, c)
	}
	for q, want := range map[float64]float64{
		0.25: 0.1,                  // rank 10: end of the first bucket
		0.5:  0.1 + 0.1*10/20,      // rank 20, 10 into a bucket of 20
		0.95: 0.2 + 0.3*(38-30)/10, // rank 38
		0:    0,
		1:    0.5,
	} {
		if got := b.Quantile(q); math.Abs(got-want) > 1e-12 {
			t.Errorf("q%g = %g, want %g", q, got, want)
		}
	}
	// Observations above the highest finite bound answer with that bound.
	b[math.Inf(1)] = 100
	if got := b.Quantile(0.99); got != 0.5 {
		t.Errorf("q0.99 in +Inf = %g, want 0.5", got)
	}
	for name, bad := range map[string]Buckets{"empty": {}, "no +Inf": {0.1: 5, 0.2: 7}, "zero": {0.1: 0, math.Inf(1): 0}} {
		if got := bad.Quantile(0.5); !math.IsNaN(got) {
			t.Errorf("%s: %g, want NaN", name, got)
		}
	}
}

func TestParsePeriod(t *testing.T) {
	now := mustTime("2026-11-26T02:05:31Z")
	for _, c := range []struct {
		month, from, to string
		want            [2]string
		err             string
	}{
		{month: "2026-10", want: [2]string{"2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z"}},
		{month: "2026-11", want: [2]string{"2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"}}, // Build cuts it at now
		{month: "2026-12", err: "--month 2026-12 has not started yet"},
		{from: "2026-11-26T02:05", err: "has not started yet"},
		{from: "2026-11-26T02:04", want: [2]string{"2026-11-26T02:04:00Z", "2026-11-26T02:05:00Z"}},
		{from: "2026-11-01", want: [2]string{"2026-11-01T00:00:00Z", "2026-11-26T02:05:00Z"}},
		{from: "2026-11-01T08:00", to: "2026-11-02T00:00:00+01:00", want: [2]string{"2026-11-01T08:00:00Z", "2026-11-01T23:00:00Z"}},
		{month: "2026-10", from: "2026-10-01", err: "either --month or --from/--to"},
		{month: "Oct", err: `--month "Oct"`},
		{err: "give the period"},
		{from: "yesterday", err: `--from: "yesterday" is not a time`},
		{from: "2026-11-02", to: "2026-11-01", err: "is not before"},
	} {
		f, to, err := ParsePeriod(c.month, c.from, c.to, now)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: error %v, want %q", c, err, c.err)
			}
		case err != nil:
			t.Errorf("%+v: %v", c, err)
		case !f.Equal(mustTime(c.want[0])) || !to.Equal(mustTime(c.want[1])):
			t.Errorf("%+v: %s – %s", c, f, to)
		}
	}
}

func TestObjectiveMatching(t *testing.T) {
	cfg, err := config.Parse([]byte(`
sites:
  - {name: a, targets: [{address: 127.0.0.1}]}
  - {name: b, targets: [{address: 127.0.0.2}]}
sla:
  defaults: {loss: 0.5}
  objectives:
    - {path: mpls, availability: 99}
    - {source: a, target: b, rtt_p95: 80ms}
    - {source: a, target: b, path: mpls, rtt_p95: 120ms}
    - {source: a, target: b, path: mpls, rtt_p95: 999ms}
  aws_paths: [sitelink, dx]
`), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := &cfg.SLA
	for _, c := range []struct {
		src, dst, path string
		want           config.SLAObjective
	}{
		{"b", "a", "sitelink", config.SLAObjective{Availability: 99.9, Loss: 0.5, RTTP95: 300 * time.Millisecond}},
		{"b", "a", "mpls", config.SLAObjective{Availability: 99, Loss: 0.5, RTTP95: 300 * time.Millisecond}},
		{"a", "b", "sitelink", config.SLAObjective{Availability: 99.9, Loss: 0.5, RTTP95: 80 * time.Millisecond}},
		// The most specific entry wins; among equals the first written.
		{"a", "b", "mpls", config.SLAObjective{Availability: 99.9, Loss: 0.5, RTTP95: 120 * time.Millisecond}},
	} {
		if got := s.Objective(c.src, c.dst, c.path, "prod"); got != c.want {
			t.Errorf("%s→%s %s: %+v, want %+v", c.src, c.dst, c.path, got, c.want)
		}
	}
	if p := s.AWSPathSet(); !p["dx"] || !p["sitelink"] || p["mpls"] {
		t.Errorf("aws paths %v", p)
	}
	if p := (&config.SLAConfig{}).AWSPathSet(); len(p) != 1 || !p["sitelink"] {
		t.Errorf("default aws paths %v", p)
	}
}

func TestObjectiveErrorsNameLine(t *testing.T) {
	_, err := config.Parse([]byte(`sites:
  - {name: a, targets: [{address: 127.0.0.1}]}
sla:
  objectives:
    - source: a
      availability: 120
      rtt_p95: -5ms
`), "mesh.yaml")
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"mesh.yaml:6:21: sla.objectives[0].availability: availability is a percentage above 0 and at most 100, got 120",
		"mesh.yaml:7:16: sla.objectives[0].rtt_p95: rtt_p95 must be a positive duration",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestBreachWindows checks run splitting: no-data minutes end a window,
// the worst cause names it and AWS changes are matched by site, segment,
// path and time.
func TestBreachWindows(t *testing.T) {
	from := mustTime("2026-10-01T00:00:00Z")
	b := &builder{o: Options{From: from, Step: time.Minute, SLA: &config.SLAConfig{}}}
	p := &Pair{Source: "a", Target: "b", Path: "sitelink", Segment: "prod",
		status: []byte{stGood, stLatency, stLoss, stNoData, stUnreachable, stLatency, stGood, stLoss}}
	at := func(m int) time.Time { return from.Add(time.Duration(m) * time.Minute) }
	changes := []AWSChange{
		{Time: at(1), Site: "b", Segment: "prod", Resource: "in first window"},
		{Time: at(4), Site: "c", Resource: "other site"},
		{Time: at(5), Site: "a", Segment: "dev", Resource: "other segment"},
		{Time: at(6), Site: "a", Resource: "connection-wide, recovery minute"},
		{Time: at(8), Site: "b", Resource: "last window's end"},
	}
	got := b.breaches(p, changes)
	want := []struct {
		start, end int
		cause      string
		causes     string
		aws        string
	}{
		{1, 3, "loss", "loss,latency", "in first window"},
		{4, 6, "unreachable", "unreachable,latency", "connection-wide, recovery minute"},
		{7, 8, "loss", "loss", "last window's end"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d windows, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		var res []string
		for _, c := range g.AWSChanges {
			res = append(res, c.Resource)
		}
		if !g.Start.Equal(at(w.start)) || !g.End.Equal(at(w.end)) || g.Cause != w.cause || strings.Join(g.Causes, ",") != w.causes || strings.Join(res, "|") != w.aws {
			t.Errorf("window %d: %s–%s %s %v aws %v", i, g.Start, g.End, g.Cause, g.Causes, res)
		}
	}
	// mpls is not checked against AWS.
	p.Path = "mpls"
	for _, g := range b.breaches(p, changes) {
		if g.AWSChanged {
			t.Errorf("mpls window %s has AWS changes", g.Start)
		}
	}
}

func TestNumJSON(t *testing.T) {
	b, err := json.Marshal([]Num{1.5, Num(math.NaN()), Num(math.Inf(1))})
	if err != nil || string(b) != "[1.5,null,null]" {
		t.Errorf("%s %v", b, err)
	}
}

func TestStepText(t *testing.T) {
	for s, want := range map[float64]string{60: "1m", 30: "30s", 3600: "1h", 90: "1m30s"} {
		if got := stepText(&Report{StepSeconds: s}); got != want {
			t.Errorf("%gs: %q, want %q", s, got, want)
		}
	}
}

// TestAWSChangesDedupe: the same BGP change exported by two agents (two
// instance labels) is one change; a MACsec change gets its site from the
// connection.
func TestAWSChangesDedupe(t *testing.T) {
	at := mustTime("2026-10-12T14:02:00Z")
	bgp := func(instance string) map[string]string {
		return map[string]string{"__name__": metricBGP, "instance": instance, "vif_id": "v1", "bgp_peer_id": "p1", "address_family": "ipv4", "peer_address": "169.254.0.1/30", "site": "b", "segment": "prod"}
	}
	b := &builder{conn: map[string]string{"dxcon-1": "a"}, events: []awsEvent{
		{t: at, metric: metricBGP, labels: bgp("agent-1:9447"), from: 1, to: 0},
		{t: at, metric: metricBGP, labels: bgp("agent-2:9447"), from: 1, to: 0},
		{t: at, metric: metricMACsec, labels: map[string]string{"connection_id": "dxcon-1", "encryption_mode": "must_encrypt"}, from: 1, to: math.NaN()},
		{t: at.Add(time.Minute), metric: metricVIF, labels: map[string]string{"vif_id": "v1", "vif_name": "x", "site": "b", "segment": "prod"}, from: 1, to: 1},
	}}
	got := b.awsChanges()
	if len(got) != 3 {
		t.Fatalf("%d changes, want 3: %+v", len(got), got)
	}
	if got[0].To != "down" || got[1].Site != "a" || got[1].To != "absent" || got[2].From != "flapped" {
		t.Errorf("changes %+v", got)
	}
}
