package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/events"
	"github.com/probed/probed/sla/slatest"
)

// TestSLACommandErrors checks the exit status and message of `probed sla`
// for each kind of bad input; the report itself is tested in package sla
// against a real Prometheus.
func TestSLACommandErrors(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	badMesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(badMesh, []byte("sites:\n  - {name: a, targets: [{address: 127.0.0.1}]}\nsla:\n  defaults:\n    loss: 150\n"), 0o644)
	badClient := filepath.Join(dir, "client.yml")
	os.WriteFile(badClient, []byte("basic_auth:\n  usr: x\n"), 0o644)
	out := filepath.Join(dir, "report.html")
	now := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	// What Prometheus answers while it starts up or shuts down
	// (web.Handler.testReady): 503, a plain-text body, and
	// X-Prometheus-Stopping saying which.
	stopping := func(state string) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Prometheus-Stopping", state)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "Service Unavailable")
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		return "http://" + l.Addr().String()
	}
	shuttingDown, startingUp := stopping("true"), stopping("false")
	for _, c := range []struct {
		name string
		f    slaFlags
		code int
		want string
	}{
		{"no period", slaFlags{promURL: closed}, 2, "give the period"},
		{"bad month", slaFlags{promURL: closed, month: "2026-1"}, 2, `--month "2026-1"`},
		{"bad objective", slaFlags{promURL: closed, month: "2026-10", cfgFile: badMesh}, 2, "mesh.yaml:5:11: sla.defaults.loss: loss is a percentage from 0 to 100, got 150"},
		{"bad client file", slaFlags{promURL: closed, month: "2026-10", promCfg: badClient}, 2, "client.yml"},
		{"url without scheme", slaFlags{promURL: "localhost:9090", month: "2026-10"}, 2, `has no scheme: add http://`},
		{"address without scheme", slaFlags{promURL: "10.0.0.1:9090", month: "2026-10"}, 2, `add http:// (or https://), e.g. --prometheus.url=http://10.0.0.1:9090`},
		{"bad scheme", slaFlags{promURL: "ftp://prom:9090", month: "2026-10"}, 2, "must look like http://host:9090"},
		{"future month", slaFlags{promURL: closed, month: "2026-12"}, 2, "--month 2026-12 has not started yet"},
		{"future from", slaFlags{promURL: closed, from: "2026-11-27"}, 2, "--from 2026-11-27T00:00:00Z has not started yet"},
		{"bad match", slaFlags{promURL: closed, month: "2026-10", match: `source_site=us-east`}, 2, `--query.match "source_site=us-east" is not a list of label matchers`},
		{"match breaking out of the selector", slaFlags{promURL: closed, month: "2026-10", match: `a="b"} or vector(1) or {a="b"`}, 2, "--query.match"},
		{"shutting down", slaFlags{promURL: shuttingDown, month: "2026-10", timeout: 5 * time.Second}, 1, "answered 503 Service Unavailable: it is shutting down; try again once"},
		{"starting up", slaFlags{promURL: startingUp, month: "2026-10", timeout: 5 * time.Second}, 1, "it is starting up (not ready yet)"},
		{"unreachable", slaFlags{promURL: closed, month: "2026-10", output: out, format: "html", timeout: 5 * time.Second}, 1, "is unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := slaReport(context.Background(), &stdout, &stderr, &c.f, now)
			if code != c.code || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), c.code, c.want)
			}
			// Only a URL that reaches no Prometheus API may be blamed.
			if c.code == 1 && !strings.Contains(c.name, "unreachable") && strings.Contains(stderr.String(), "--prometheus.url right") {
				t.Errorf("blames the URL: %q", stderr.String())
			}
			if stdout.Len() > 0 {
				t.Errorf("wrote a report on failure: %q", stdout.String())
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output file exists after a failure: %v", err)
	}
}

// TestSLACommandReport runs `probed sla` end to end: three hours of one
// pair scraped every 15s (with a 10-minute outage) go through promtool into
// a real Prometheus, and the command writes the JSON and HTML reports with
// the objective from the mesh file.
func TestSLACommandReport(t *testing.T) {
	promtool := slatest.RequireTool(t, "promtool")
	dir := t.TempDir()
	om := filepath.Join(dir, "data.om")
	from := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC)
	var b strings.Builder
	lbl := `{source_site="us-east",target_site="ap-tokyo",target="10.77.4.1",path="sitelink",segment="prod",protocol="icmp"}`
	type point struct{ sent, lost, replies, sum float64 }
	pts := make([]point, 3*240+1) // a sample every 15s, 15 probes between samples
	for i := 1; i < len(pts); i++ {
		p := pts[i-1]
		p.sent += 15
		if at := from.Add(time.Duration(i) * 15 * time.Second); at.After(from.Add(time.Hour)) && !at.After(from.Add(70*time.Minute)) {
			p.lost += 15
		} else {
			p.replies += 15
			p.sum += 15 * 0.16
		}
		pts[i] = p
	}
	for _, s := range []struct {
		name string
		v    func(p point) float64
	}{
		{"probed_probes_sent_total", func(p point) float64 { return p.sent }},
		{"probed_probes_lost_total", func(p point) float64 { return p.lost }},
		{`probed_rtt_seconds_bucket{le="0.1",`, func(p point) float64 { return 0 }},
		{`probed_rtt_seconds_bucket{le="0.2",`, func(p point) float64 { return p.replies }},
		{`probed_rtt_seconds_bucket{le="+Inf",`, func(p point) float64 { return p.replies }},
		{"probed_rtt_seconds_count", func(p point) float64 { return p.replies }},
		{"probed_rtt_seconds_sum", func(p point) float64 { return p.sum }},
	} {
		for i, p := range pts {
			name, labels := s.name, lbl
			if strings.HasSuffix(name, ",") {
				name, labels = strings.TrimSuffix(name, ","), ","+lbl[1:]
			}
			fmt.Fprintf(&b, "%s%s %g %d\n", name, labels, s.v(p), from.Unix()+int64(i)*15)
		}
	}
	b.WriteString("# EOF\n")
	if err := os.WriteFile(om, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	blocks := filepath.Join(dir, "blocks")
	if err := slatest.CreateBlocks(promtool, []string{om}, blocks); err != nil {
		t.Fatal(err)
	}
	prom := slatest.StartPrometheus(t, blocks, "", nil)
	mesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(mesh, []byte("sites:\n  - {name: us-east, targets: [{address: 127.0.0.1}]}\n  - {name: ap-tokyo, targets: [{address: 127.0.0.2}]}\n"+
		"sla:\n  objectives:\n    - {source: us-east, target: ap-tokyo, availability: 99, rtt_p95: 200ms}\n"), 0o644)

	// us-east's journal: the outage's events, one outside the window and
	// one of another pair; and an agent that does not answer.
	j, err := events.Open(events.Options{Dir: filepath.Join(dir, "events"), Retention: 50 * 365 * 24 * time.Hour}) // an old month
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	tokyo := events.Probe("us-east", "ap-tokyo", "10.77.4.1", "sitelink", "prod", "icmp", "")
	j.Emit(events.NewPathChanged(from.Add(59*time.Minute+30*time.Second), tokyo, []string{"10.90.4.1", "10.77.4.1"}, []string{"10.90.4.9", "10.77.4.1"}))
	j.Emit(events.NewTargetDown(from.Add(time.Hour+time.Second), tokyo, 3))
	j.Emit(events.NewTargetUp(from.Add(70*time.Minute), tokyo, 10*time.Minute))
	j.Emit(events.NewTargetDown(from.Add(2*time.Hour), tokyo, 3))
	j.Emit(events.NewTargetDown(from.Add(time.Hour+time.Second), events.Probe("us-east", "us-west", "10.77.3.1", "sitelink", "prod", "icmp", ""), 3))
	jmux := http.NewServeMux()
	j.Register(jmux)
	agentSrv := httptest.NewServer(jmux)
	defer agentSrv.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()

	out := filepath.Join(dir, "report.json")
	f := slaFlags{promURL: prom.URL, from: "2026-10-05", to: "2026-10-05T03:00", cfgFile: mesh, format: "json", output: out, chunk: time.Hour, timeout: time.Minute,
		eventURLs: []string{agentSrv.URL, gone.URL}}
	var stdout, stderr bytes.Buffer
	reportTime := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	if code := slaReport(context.Background(), &stdout, &stderr, &f, reportTime); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var rep struct {
		Pairs []struct {
			Objective struct {
				Availability float64 `json:"availability_percent"`
				RTTP95       float64 `json:"rtt_p95_seconds"`
			} `json:"objective"`
			Minutes struct {
				Good        int `json:"good"`
				Bad         int `json:"bad"`
				NoData      int `json:"no_data"`
				Unreachable int `json:"unreachable"`
				Total       int `json:"total"`
			} `json:"minutes"`
			Status   string `json:"status"`
			Breaches []struct {
				Start, End time.Time
				Cause      string
				Events     []struct {
					Time    time.Time
					Kind    string
					Summary string
					Agent   string
				}
			} `json:"breaches"`
		} `json:"pairs"`
		Notes        []string
		EventSources []struct {
			URL    string
			Events int
			Error  string
		} `json:"event_sources"`
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	if len(rep.Pairs) != 1 {
		t.Fatalf("pairs: %s", data)
	}
	p := rep.Pairs[0]
	if p.Objective.Availability != 99 || p.Objective.RTTP95 != 0.2 || p.Minutes.Good != 170 || p.Minutes.Bad != 10 || p.Minutes.Unreachable != 10 ||
		p.Minutes.NoData != 0 || p.Minutes.Total != 180 || p.Status != "breached" || len(p.Breaches) != 1 ||
		!p.Breaches[0].Start.Equal(from.Add(time.Hour)) || !p.Breaches[0].End.Equal(from.Add(70*time.Minute)) || p.Breaches[0].Cause != "unreachable" {
		t.Errorf("report: %+v", p)
	}

	// The window names the pair's events inside it (from a minute before
	// its start); the unreachable agent is a note, not a failure.
	var kinds []string
	if len(p.Breaches) == 1 {
		for _, e := range p.Breaches[0].Events {
			kinds = append(kinds, e.Kind)
			if e.Agent != agentSrv.URL {
				t.Errorf("event from %q", e.Agent)
			}
		}
	}
	if strings.Join(kinds, " ") != "path_changed target_down target_up" {
		t.Errorf("breach events %v, want the path change, the outage's down and up", kinds)
	}
	if len(rep.EventSources) != 2 || rep.EventSources[0].Events != 5 || rep.EventSources[1].Error == "" ||
		!strings.Contains(strings.Join(rep.Notes, "\n"), "Events of "+gone.URL+" could not be read") ||
		!strings.Contains(stderr.String(), "events of "+gone.URL) {
		t.Errorf("event sources %+v, notes %q, stderr %s", rep.EventSources, rep.Notes, stderr.String())
	}
	f.format, f.output = "markdown", ""
	stdout.Reset()
	if code := slaReport(context.Background(), &stdout, &stderr, &f, reportTime); code != 0 ||
		!strings.Contains(stdout.String(), "- 2026-10-05 01:00 – 2026-10-05 01:10:\n  - 2026-10-05 00:59:30 `path_changed` us-east → ap-tokyo") {
		t.Errorf("markdown: exit %d, breach events missing:\n%s", code, stdout.String())
	}
	if code := slaReport(context.Background(), &stdout, &stderr, &slaFlags{promURL: prom.URL, from: "2026-10-05", to: "2026-10-05T03:00",
		eventsFromConfig: true, format: "json", chunk: time.Hour, timeout: time.Minute}, reportTime); code != exitConfig ||
		!strings.Contains(stderr.String(), "--events.from-config needs --config.file") {
		t.Errorf("--events.from-config without --config.file: exit %d %s", code, stderr.String())
	}
	stderr.Reset()
	if code := slaReport(context.Background(), &stdout, &stderr, &slaFlags{promURL: prom.URL, from: "2026-10-05", to: "2026-10-05T03:00",
		eventURLs: []string{"10.79.1.1:9447"}, format: "json", chunk: time.Hour, timeout: time.Minute}, reportTime); code != exitConfig ||
		!strings.Contains(stderr.String(), `--events.url="10.79.1.1:9447": want http://`) {
		t.Errorf("a bad --events.url: exit %d %s", code, stderr.String())
	}
	f.eventURLs = nil

	f.format, f.output = "html", ""
	stdout.Reset()
	if code := slaReport(context.Background(), &stdout, &stderr, &f, reportTime); code != 0 || !strings.Contains(stdout.String(), `<svg class="chart chart-timeline"`) {
		t.Errorf("html to stdout: exit %d, %d bytes, %s", code, stdout.Len(), stderr.String())
	}
}
