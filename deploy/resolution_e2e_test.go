package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/probed/probed/internal/netlab"
)

// resMesh: the us-east agent probes three paths at 10 probes a second:
// us-central over sitelink and mpls, and us-west over sitelink, where TCP
// port 8443 is closed (every TCP probe answered with a reset). us-west's
// mpls path is down from the start: its target never answers.
const resMesh = `probe:
  interval: 100ms
  timeout: 500ms
sites:
  - name: us-east
    targets:
      - {address: 10.77.1.1, path: sitelink, segment: prod}
  - name: us-central
    targets:
      - {address: 10.77.2.1, path: sitelink, segment: prod}
      - {address: 10.78.2.1, path: mpls, segment: prod}
  - name: us-west
    targets:
      - {address: 10.77.3.1, path: sitelink, segment: prod, tcp_ports: [8443]}
      - {address: 10.78.3.1, path: mpls, segment: prod}
`

// Configured round trips (both directions get half).
const (
	rttSitelink = 35 * time.Millisecond // us-east <-> us-central sitelink
	rttMPLS     = 42 * time.Millisecond // us-east <-> us-central mpls: SiteLink +20 % faster
	rttStepFrom = 55 * time.Millisecond // us-east <-> us-west sitelink, before the step
	rttStepTo   = 66 * time.Millisecond // … after it (+20 %: above the regression rule's 15 %)
)

// TestResolutionEndToEnd runs the shipped Prometheus configuration and rules
// (deploy/prometheus, on the Debian Prometheus with native histograms, as
// docs/deployment.md says) against a real agent in the WAN lab, and reads
// what a user reads: the dashboards' own queries, the alerts and the
// `probed sla` report.
//
//   - Latency: the median panels and the SLA report within 2 % of the
//     configured round trips, the SiteLink-advantage panel at +20 % ± 2
//     points, and ProbedLatencyRegression firing on a 55 → 66 ms step
//     (its windows shortened by rewriting the rule files: the 7-day
//     baseline to 90 s, the 15 m window to 20 s, "for" to 15 s) and not
//     before it.
//   - A closed TCP port on a lossless path: loss 0 (gauge, counters and
//     recording rule), no loss alert, SLA 100 %, and the refusals visible
//     as probed_probe_errors_total{reason="refused"} (ProbedTCPPortRefused
//     pending).
//   - A target that never answered since the agent started pages
//     ProbedPeerUnreachable only after a full minute of down samples.
func TestResolutionEndToEnd(t *testing.T) {
	// The two lab tests of this package mostly wait on alert timers: they
	// run side by side (each has its own lab, agents and Prometheus).
	t.Parallel()
	promBin := tool(t, "prometheus", "prometheus")
	lab := netlab.StartT(t, mustSubset(t, "us-east", "us-central", "us-west"))
	bin := probedBinary(t)
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mesh, []byte(resMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	setRTT := func(a, b, path string, rtt time.Duration, down bool) {
		t.Helper()
		for _, d := range [][2]string{{a, b}, {b, a}} {
			if err := lab.UpdatePath(d[0], d[1], path, func(p *netlab.PathParams) {
				p.Delay, p.Jitter, p.Loss, p.Down = rtt/2, 0, 0, down
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	setRTT("us-east", "us-central", netlab.PathSiteLink, rttSitelink, false)
	setRTT("us-east", "us-central", netlab.PathMPLS, rttMPLS, false)
	setRTT("us-east", "us-west", netlab.PathSiteLink, rttStepFrom, false)
	setRTT("us-east", "us-west", netlab.PathMPLS, 30*time.Millisecond, true)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	east := lab.Site("us-east")
	listen := "10.77.1.1:9447"
	logf, err := os.Create(filepath.Join(dir, "probed.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := east.Command(context.WithoutCancel(ctx), bin, "--config.file="+mesh, "--site=us-east", "--web.listen-address="+listen, "--log.format=json",
		"--storage.path="+filepath.Join(dir, "storage"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("probed log:\n%s", tail(string(b), 3000))
		}
	})
	ln, err := east.Forward(ctx, "127.0.0.1:0", listen)
	if err != nil {
		t.Fatal(err)
	}
	promURL := startShippedPrometheus(t, promBin, dir, ln.Addr().String())

	pair := func(target, path string) map[string]string {
		return map[string]string{"source_site": "us-east", "target_site": target, "path": path, "segment": "prod"}
	}
	central := func(path string) map[string]string { return pair("us-central", path) }
	west := pair("us-west", netlab.PathSiteLink)

	waitProm(t, promURL, 90*time.Second, "native RTT histograms ingested",
		`count(probed_rtt_seconds{job="probed"}) >= 3`)
	waitProm(t, promURL, 60*time.Second, "median RTT of every answering pair",
		`count(pair:probed_rtt_seconds:p50_5m >= 0) == 3`)
	if n, _ := promQuery(promURL, `probed_rtt_seconds_bucket`); n != 0 {
		t.Errorf("classic bucket series stored (%d): Prometheus did not ingest the native histogram", n)
	}
	start := time.Now()

	// --- A target that never answered: a full minute of evidence. -------
	upAt := promFirst(t, promURL, `probed_target_up{target="10.78.3.1"}`, start.Add(-2*time.Minute), time.Now())
	firing := `ALERTS{alertname="ProbedPeerUnreachable",alertstate="firing",source_site="us-east",target_site="us-west",path="mpls",segment="prod"}`
	waitProm(t, promURL, 2*time.Minute, "ProbedPeerUnreachable for the dead path", firing)
	firedAt := promFirst(t, promURL, firing, upAt.Add(-time.Minute), time.Now())
	t.Logf("first probed_target_up sample of the dead target -> ProbedPeerUnreachable firing: %v", firedAt.Sub(upAt))
	if d := firedAt.Sub(upAt); d < 59*time.Second || d > 90*time.Second {
		t.Errorf("ProbedPeerUnreachable fired %v after the target's first (down) sample, want a full minute of evidence (60s, up to 90s)", d)
	}
	if v := promValue(t, promURL, `max_over_time(probed_target_up{target="10.78.3.1"}[10m])`, time.Now()); len(v) != 1 || firstValue(v) != 0 {
		t.Errorf("the dead target was up: %v", v)
	}

	// --- Before the step: medians, advantage, no regression. -------------
	// The baseline needs 60s of p50_5m history (12 points of the shortened
	// rule); step 70s after the medians appeared.
	// The first whole minute after the start is SLA minute one; it must end
	// before the step so the report sees 55 ms there.
	min1 := start.Truncate(time.Minute).Add(time.Minute)
	step := latest(start.Add(70*time.Second), min1.Add(time.Minute+3*time.Second))
	time.Sleep(time.Until(step))
	before := step.Add(-time.Second)
	setRTT("us-east", "us-west", netlab.PathSiteLink, rttStepTo, false)
	t.Logf("step 55 -> 66 ms at %s", step.Format(time.RFC3339))

	vars := map[string]string{"source_site": "us-east", "segment": "prod", "path": "sitelink"}
	medianPanels := []struct {
		file, title, ref string
		vars             map[string]string
		target, path     string
		want             time.Duration
	}{
		{"grafana/site-pair.json", "SiteLink median RTT", "A", nil, "us-central", "sitelink", rttSitelink},
		{"grafana/site-pair.json", "MPLS median RTT", "A", nil, "us-central", "mpls", rttMPLS},
		{"grafana/site-pair.json", "SiteLink median RTT", "A", nil, "us-west", "sitelink", rttStepFrom},
		{"grafana/site-pair.json", "RTT percentiles (5m)", "A", map[string]string{"path": "mpls"}, "us-central", "mpls", rttMPLS},
		{"grafana/mesh-overview.json", "Median RTT (5m)", "A", map[string]string{"target_site": "us-central"}, "us-central", "sitelink", rttSitelink},
		{"grafana/mesh-overview.json", "Median RTT (5m)", "A", map[string]string{"target_site": "us-west"}, "us-west", "sitelink", rttStepFrom},
	}
	var table []string
	checkMedian := func(at time.Time, file, title, ref string, extra map[string]string, target, path string, want time.Duration) {
		t.Helper()
		v := mergeVars(vars, map[string]string{"target_site": target, "path": path}, extra)
		q := panelQuery(t, file, title, ref, v)
		got := promValue(t, promURL, q, at)
		if len(got) != 1 {
			t.Errorf("%s %q (%s -> %s %s): %d series at %s, want 1 (%s)", file, title, "us-east", target, path, len(got), at.Format(time.TimeOnly), q)
			return
		}
		for _, val := range got {
			err := 100 * (val - want.Seconds()) / want.Seconds()
			table = append(table, fmt.Sprintf("%-28s %-22s us-east->%s %s: configured %v, panel %.3f ms (%+.2f %%)", file, title, target, path, want, val*1000, err))
			if tol := math.Max(0.02*want.Seconds(), 0.0002); math.Abs(val-want.Seconds()) > tol {
				t.Errorf("%s %q us-east -> %s %s: %.3f ms, configured %v: off by %+.2f %% (more than 2 %%)", file, title, target, path, val*1000, want, err)
			}
		}
	}
	for _, p := range medianPanels {
		checkMedian(before, p.file, p.title, p.ref, p.vars, p.target, p.path, p.want)
	}
	adv := promValue(t, promURL, panelQuery(t, "grafana/site-pair.json", "SiteLink advantage (MPLS mean / SiteLink mean - 1)", "A",
		mergeVars(vars, map[string]string{"target_site": "us-central"})), before)
	if len(adv) != 1 {
		t.Errorf("SiteLink advantage: %d series, want 1", len(adv))
	}
	for _, a := range adv {
		table = append(table, fmt.Sprintf("SiteLink advantage us-east->us-central: configured +20.00 %%, panel %+.2f %%", 100*a))
		if math.Abs(100*a-20) > 2 {
			t.Errorf("SiteLink advantage %+.2f %%, want +20 %% ± 2 points", 100*a)
		}
	}
	regression := `ALERTS{alertname="ProbedLatencyRegression"}`
	if n := promCountOver(t, promURL, regression, start.Add(-2*time.Minute), before); n > 0 {
		t.Errorf("ProbedLatencyRegression active before the step (%d samples)", n)
	}
	if n, _ := promQuery(promURL, `pair:probed_rtt_seconds:p50_7d`); n != 3 {
		t.Errorf("regression baseline exists for %d pairs at the step, want 3", n)
	}

	// --- A closed port on a lossless path. ------------------------------
	for q, want := range map[string]float64{
		`pair:probed_loss_ratio:5m{target_site="us-west",path="sitelink"}`:                    0,
		`probed_loss_ratio{target="10.77.3.1",protocol="tcp"}`:                                0,
		`probed_probes_lost_total{target="10.77.3.1",protocol="tcp"}`:                         0,
		`probed_target_up{target="10.77.3.1",protocol="tcp"}`:                                 1,
		`probed_probe_errors_total{target="10.77.3.1",protocol="tcp",reason="refused"} > 100`: -1, // any value: present
	} {
		got := promValue(t, promURL, q, before)
		if len(got) != 1 {
			t.Errorf("%s: %d series, want 1", q, len(got))
			continue
		}
		for _, v := range got {
			if want >= 0 && v != want {
				t.Errorf("%s = %v, want %v", q, v, want)
			}
		}
	}
	if n, _ := promQuery(promURL, `ALERTS{alertname="ProbedTCPPortRefused",alertstate="pending",target="10.77.3.1",port="8443"}`); n != 1 {
		t.Errorf("ProbedTCPPortRefused not pending for the closed port")
	}

	// --- After the step: the regression fires, the median follows. -------
	waitProm(t, promURL, 2*time.Minute, "ProbedLatencyRegression for the step",
		`ALERTS{alertname="ProbedLatencyRegression",alertstate="firing",source_site="us-east",target_site="us-west",path="sitelink",segment="prod"}`)
	t.Logf("step -> ProbedLatencyRegression firing: %v", time.Since(step).Round(time.Second))
	if n, _ := promQuery(promURL, `ALERTS{alertname="ProbedLatencyRegression",target_site="us-central"}`); n != 0 {
		t.Errorf("ProbedLatencyRegression for a pair that did not change")
	}

	// Two SLA minutes: before the step where one fits, after it for us-west.
	min2 := step.Add(2 * time.Second).Truncate(time.Minute).Add(time.Minute)
	if min2.Sub(step) < 2*time.Second {
		min2 = min2.Add(time.Minute)
	}
	// The p50_5m window is 60 % post-step data 3 minutes after the step.
	after := step.Add(3 * time.Minute)
	time.Sleep(time.Until(latest(after, min2.Add(time.Minute+3*time.Second))))
	checkMedian(after, "grafana/site-pair.json", "SiteLink median RTT", "A", nil, "us-west", "sitelink", rttStepTo)
	checkMedian(after, "grafana/mesh-overview.json", "Median RTT (5m)", "A", map[string]string{"target_site": "us-west"}, "us-west", "sitelink", rttStepTo)
	checkMedian(after, "grafana/site-pair.json", "SiteLink median RTT", "A", nil, "us-central", "sitelink", rttSitelink)

	// --- probed sla. ------------------------------------------------------
	repBefore := slaJSON(t, bin, promURL, mesh, min1, min1.Add(time.Minute))
	repAfter := slaJSON(t, bin, promURL, mesh, min2, min2.Add(time.Minute))
	checkSLA := func(rep *slaReportJSON, what string, p map[string]string, want time.Duration) {
		t.Helper()
		pr := rep.pair(p)
		if pr == nil {
			t.Errorf("SLA %s: no row for %v", what, p)
			return
		}
		for _, q := range []struct {
			name string
			v    *float64
		}{{"p50", pr.RTT.P50}, {"mean", pr.RTT.Mean}} {
			if q.v == nil {
				t.Errorf("SLA %s %v: no %s", what, p, q.name)
				continue
			}
			err := 100 * (*q.v - want.Seconds()) / want.Seconds()
			table = append(table, fmt.Sprintf("probed sla %-6s %-4s us-east->%s %s: configured %v, report %.3f ms (%+.2f %%)", what, q.name, p["target_site"], p["path"], want, *q.v*1000, err))
			if math.Abs(err) > 2 {
				t.Errorf("SLA %s %s of %v: %.3f ms, configured %v (%+.2f %%, more than 2 %%)", what, q.name, p, *q.v*1000, want, err)
			}
		}
		if p95 := pr.RTT.P95; p95 != nil {
			table = append(table, fmt.Sprintf("probed sla %-6s p95  us-east->%s %s: configured %v, report %.3f ms (%+.2f %%)", what, p["target_site"], p["path"], want, *p95*1000, 100*(*p95-want.Seconds())/want.Seconds()))
		}
		if !strings.HasPrefix(pr.RTTResolution, "native") {
			t.Errorf("SLA %s %v: RTT resolution %q, want native", what, p, pr.RTTResolution)
		}
	}
	checkSLA(repBefore, "before", central("sitelink"), rttSitelink)
	checkSLA(repBefore, "before", central("mpls"), rttMPLS)
	checkSLA(repBefore, "before", west, rttStepFrom)
	checkSLA(repAfter, "after", west, rttStepTo)
	checkSLA(repAfter, "after", central("sitelink"), rttSitelink)
	for _, rep := range []*slaReportJSON{repBefore, repAfter} {
		found := false
		for _, c := range rep.Comparisons {
			if c.Source != "us-east" || c.Target != "us-central" || c.Segment != "prod" {
				continue
			}
			found = true
			if c.DiffPercent == nil || math.Abs(*c.DiffPercent-(-100.0/6)) > 2 {
				t.Errorf("SLA path comparison us-east -> us-central: sitelink %v %% against mpls, want -16.67 %% (35 vs 42 ms) ± 2 points", c.DiffPercent)
			} else {
				table = append(table, fmt.Sprintf("probed sla path comparison us-east->us-central: configured -16.67 %%, report %+.2f %%", *c.DiffPercent))
			}
		}
		if !found {
			t.Errorf("SLA: no path comparison for us-east -> us-central: %+v", rep.Comparisons)
		}
		// The closed port's pair: lossless and fully available.
		if pr := rep.pair(west); pr == nil || pr.Availability == nil || *pr.Availability != 100 || pr.Loss == nil || *pr.Loss != 0 || pr.Status != "met" {
			t.Errorf("SLA of the pair with a closed port: %+v, want 100 %% available, 0 %% loss, met", pr)
		}
	}
	// The whole run: the loss alert never even pending on the lossless
	// paths (the dead one has it, inhibited by ProbedPeerUnreachable).
	if n := promCountOver(t, promURL, `ALERTS{alertname="ProbedPacketLossHigh",target_site="us-central"} or ALERTS{alertname="ProbedPacketLossHigh",target_site="us-west",path="sitelink"}`,
		start.Add(-2*time.Minute), time.Now()); n > 0 {
		t.Errorf("ProbedPacketLossHigh active (%d samples) on lossless paths", n)
	}
	// Series cost per target as stored.
	for _, q := range []string{`count by (target, protocol) ({__name__=~"probed_rtt_seconds.*",job="probed"})`} {
		for l, v := range promValue(t, promURL, q, time.Now()) {
			table = append(table, fmt.Sprintf("RTT histogram series stored for %s: %g", l, v))
		}
	}
	for _, l := range []map[string]string{central("sitelink"), central("mpls"), west} {
		if v := promValue(t, promURL, `pair:probed_loss_ratio:5m`+selector(l), time.Now()); len(v) != 1 || firstValue(v) != 0 {
			t.Errorf("loss of %v: %v, want 0", l, v)
		}
	}
	t.Logf("measured against configured:\n  %s", strings.Join(table, "\n  "))
}

// startShippedPrometheus runs the Debian Prometheus the way
// docs/deployment.md says (--enable-feature=native-histograms) with the
// shipped deploy/prometheus/prometheus.yml: its probed job pointed at the
// test's agent, 1s scrape and evaluation intervals (scrape_timeout
// likewise), and the shipped rule files, of which only the latency
// regression's windows are shortened (the 7-day baseline, the 15-minute
// window and the alert's 10m "for").
func startShippedPrometheus(t *testing.T, bin, dir, agent string) string {
	t.Helper()
	raw, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	delete(cfg, "alerting")
	var jobs []any
	for _, j := range cfg["scrape_configs"].([]any) {
		job := j.(map[string]any)
		if job["job_name"] != "probed" {
			continue
		}
		job["scrape_timeout"] = "1s"
		job["static_configs"] = []any{map[string]any{"targets": []string{agent}, "labels": map[string]string{"agent_site": "us-east"}}}
		jobs = append(jobs, job)
	}
	if len(jobs) != 1 {
		t.Fatalf("prometheus/prometheus.yml: %d probed jobs, want 1", len(jobs))
	}
	cfg["scrape_configs"] = jobs
	rewrite := map[string][][2]string{
		"recording.rules.yml": {
			{"rate(probed_rtt_seconds[15m])", "rate(probed_rtt_seconds[20s])"},
			{"rate(probed_rtt_seconds_bucket[15m])", "rate(probed_rtt_seconds_bucket[20s])"},
			{"[7d:5m]", "[90s:5s]"},
			{"[7d:1h]", "[90s:5s]"},
			{">= 24", ">= 12"},
			{"interval: 2m", "interval: 5s"},
		},
		"alerting.rules.yml": {{"        for: 10m\n        labels:\n          severity: page", "        for: 15s\n        labels:\n          severity: page"}},
	}
	var rules []string
	for _, f := range ruleFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for _, r := range rewrite[filepath.Base(f)] {
			if !strings.Contains(s, r[0]) {
				t.Fatalf("%s: %q not found: the test's shortening of the latency regression's windows needs updating", f, r[0])
			}
			s = strings.ReplaceAll(s, r[0], r[1])
		}
		out := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(out, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		rules = append(rules, out)
	}
	cfg["rule_files"] = rules
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	startProcess(t, bin, "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--web.listen-address="+addr, "--enable-feature=native-histograms", "--log.level=info")
	u := "http://" + addr
	waitHTTP(t, u+"/-/ready", 60*time.Second)
	return u
}

// panelQuery returns a dashboard panel's query with the Grafana variables
// replaced by vars.
func panelQuery(t *testing.T, file, title, ref string, vars map[string]string) string {
	t.Helper()
	d, ok := loadDashboards(t)[file]
	if !ok {
		t.Fatalf("no dashboard %s", file)
	}
	var found string
	for _, p := range allPanels(d.Panels) {
		if p.Title != title {
			continue
		}
		for _, tg := range p.Targets {
			if tg.RefID == ref {
				found = tg.Expr
			}
		}
	}
	if found == "" {
		t.Fatalf("%s: no panel %q with query %s", file, title, ref)
	}
	return grafanaVar.ReplaceAllStringFunc(found, func(m string) string {
		s := grafanaVar.FindStringSubmatch(m)
		name := s[1] + s[2] + s[3]
		v, ok := vars[name]
		if !ok {
			t.Fatalf("%s %q: variable $%s has no test value", file, title, name)
		}
		return v
	})
}

func mergeVars(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func selector(m map[string]string) string {
	var parts []string
	for _, k := range []string{"source_site", "target_site", "path", "segment"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%q", k, v))
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// labelKey renders a label set for map keys.
func labelKey(m map[string]string) string {
	b, _ := json.Marshal(m)
	return string(b)
}

func firstValue(m map[string]float64) float64 {
	for _, v := range m {
		return v
	}
	return math.NaN()
}

// promValue runs an instant query at a time and returns each series' value.
func promValue(t *testing.T, promURL, q string, at time.Time) map[string]float64 {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	promGet(t, promURL+"/api/v1/query?"+url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}.Encode(), &r)
	if r.Status != "success" {
		t.Fatalf("query %s: %s", q, r.Error)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if err != nil {
			t.Fatalf("query %s: value %v", q, s.Value[1])
		}
		out[labelKey(s.Metric)] = v
	}
	return out
}

// promRange runs a range query at 1s steps and returns every point's time.
func promRange(t *testing.T, promURL, q string, from, to time.Time) []time.Time {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	promGet(t, promURL+"/api/v1/query_range?"+url.Values{"query": {q}, "start": {strconv.FormatInt(from.Unix(), 10)},
		"end": {strconv.FormatInt(to.Unix()+1, 10)}, "step": {"1"}}.Encode(), &r)
	if r.Status != "success" {
		t.Fatalf("range query %s: %s", q, r.Error)
	}
	var out []time.Time
	for _, s := range r.Data.Result {
		for _, v := range s.Values {
			ts, _ := v[0].(float64)
			out = append(out, time.UnixMilli(int64(ts*1000)))
		}
	}
	return out
}

// promFirst is the first time (1s resolution) the query returned anything.
func promFirst(t *testing.T, promURL, q string, from, to time.Time) time.Time {
	t.Helper()
	ts := promRange(t, promURL, q, from, to)
	if len(ts) == 0 {
		t.Fatalf("%s: no samples between %s and %s", q, from.Format(time.TimeOnly), to.Format(time.TimeOnly))
	}
	first := ts[0]
	for _, x := range ts {
		if x.Before(first) {
			first = x
		}
	}
	return first
}

// promCountOver counts the points (1s steps) at which the query returned
// something.
func promCountOver(t *testing.T, promURL, q string, from, to time.Time) int {
	t.Helper()
	return len(promRange(t, promURL, q, from, to))
}

func promGet(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v: %s", u, err, tail(string(b), 300))
	}
}

// slaReportJSON is the part of `probed sla --format=json` the test reads.
type slaReportJSON struct {
	Pairs       []slaPairJSON `json:"pairs"`
	Comparisons []struct {
		Source      string   `json:"source_site"`
		Target      string   `json:"target_site"`
		Segment     string   `json:"segment"`
		DiffPercent *float64 `json:"difference_percent"`
	} `json:"path_comparisons"`
}

type slaPairJSON struct {
	Source        string   `json:"source_site"`
	Target        string   `json:"target_site"`
	Path          string   `json:"path"`
	Segment       string   `json:"segment"`
	Availability  *float64 `json:"availability_percent"`
	Loss          *float64 `json:"loss_percent"`
	Status        string   `json:"status"`
	RTTResolution string   `json:"rtt_resolution"`
	RTT           struct {
		P50  *float64 `json:"p50_seconds"`
		P95  *float64 `json:"p95_seconds"`
		Mean *float64 `json:"mean_seconds"`
	} `json:"rtt"`
}

func (r *slaReportJSON) pair(m map[string]string) *slaPairJSON {
	for i := range r.Pairs {
		p := &r.Pairs[i]
		if p.Source == m["source_site"] && p.Target == m["target_site"] && p.Path == m["path"] && p.Segment == m["segment"] {
			return p
		}
	}
	return nil
}

// slaJSON runs `probed sla` over [from, to) and decodes its JSON.
func slaJSON(t *testing.T, bin, promURL, mesh string, from, to time.Time) *slaReportJSON {
	t.Helper()
	out := runTool(t, ".", bin, "sla", "--prometheus.url="+promURL, "--config.file="+mesh, "--format=json",
		"--from="+from.UTC().Format(time.RFC3339), "--to="+to.UTC().Format(time.RFC3339))
	var rep slaReportJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("probed sla: %v\n%s", err, tail(out, 2000))
	}
	return &rep
}
