package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/probed/probed/config"
	"github.com/probed/probed/events"
	"github.com/probed/probed/internal/nssock"
	"github.com/probed/probed/internal/testutil"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/status"
)

// eventsMesh: an ICMP target that answers, a TCP port that refuses (a
// reset: up, not lost), and a guard that answers (a segmentation
// violation), all on the namespace's loopback.
const eventsMesh = `site: a
probe: {interval: 200ms, timeout: 150ms, down_after: 2}
sites:
  - name: a
    targets: []
  - name: b
    agent: 127.0.0.1
    targets:
      - {address: 127.0.0.2, path: lan, segment: prod, tcp_ports: [9]}
      - {address: 127.0.0.3, path: guard, segment: prod, expect: unreachable}
`

// runAgent runs an agent with storage in dir; stop ends it (Run returns,
// then Close) and returns Run's error.
func runAgent(t *testing.T, yaml, dir string, o Options) (a *testAgent, stop func()) {
	t.Helper()
	o.Version = "test"
	if dir != "" {
		o.Storage = StorageOptions{Path: dir}
	}
	ta, stopRun := launchAgent(t, yaml, o)
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		if err := stopRun(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := ta.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return ta, stop
}

func getBody(t *testing.T, mux http.Handler, path string) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, b
}

func listEvents(t *testing.T, mux http.Handler, query string) []events.Event {
	t.Helper()
	code, b := getBody(t, mux, "/api/v1/events?"+query)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/events?%s: %d %s", query, code, b)
	}
	var r events.ListResponse
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r.Events
}

// metricValues reads every probe series' value of one metric from /metrics,
// keyed by target|protocol|port.
func metricValues(t *testing.T, mux http.Handler) map[string]map[string]float64 {
	t.Helper()
	_, b := getBody(t, mux, "/metrics")
	out := map[string]map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok || !strings.HasPrefix(name, "probed_") {
			continue
		}
		labels, val, _ := strings.Cut(rest, "} ")
		l := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		if l["target"] == "" || l["reason"] != "" || l["le"] != "" {
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		k := l["target"] + "|" + l["protocol"] + "|" + l["port"]
		if out[k] == nil {
			out[k] = map[string]float64{}
		}
		out[k][name] = f
	}
	return out
}

// GET /api/v1/status shows the numbers of /metrics (the same recorders);
// verdicts reach the journal through the recorder: a refused TCP port is
// up, a guard that answers is a segmentation violation; a reload records
// what it added, removed and changed; stopping records agent_stopped and
// the journal survives.
func TestEventsWiring(t *testing.T) {
	ns := testutil.NewNetNS(t)
	dir := t.TempDir()
	a, stop := runAgent(t, eventsMesh, dir, Options{Sockets: nssock.In(ns)})

	var st status.Status
	waitUntil(t, 20*time.Second, "every series with a verdict", func() bool {
		code, b := getBody(t, a.mux, status.PathStatus)
		if code != http.StatusOK || json.Unmarshal(b, &st) != nil || len(st.Targets) != 3 {
			return false
		}
		for _, tg := range st.Targets {
			if tg.Guard && (tg.Violation == nil || !*tg.Violation) || !tg.Guard && tg.Up == nil {
				return false
			}
		}
		return true
	})
	for _, tg := range st.Targets {
		switch {
		case tg.Guard:
			if tg.Violation == nil || !*tg.Violation || tg.LossRatio != nil {
				t.Errorf("guard %s: violation %v, loss %v", tg.Target, tg.Violation, tg.LossRatio)
			}
		case tg.Protocol == "tcp":
			if !*tg.Up || tg.Lost != 0 || tg.RTTMedianSeconds != nil {
				t.Errorf("refused TCP port: up %v, lost %d, RTT %v; want up, nothing lost, no RTT", *tg.Up, tg.Lost, tg.RTTMedianSeconds)
			}
		default:
			if !*tg.Up || tg.RTTMedianSeconds == nil || *tg.RTTMedianSeconds <= 0 || tg.Since == nil {
				t.Errorf("ICMP target: %+v", tg)
			}
		}
	}
	if st.Site != "a" || st.Version != "test" || st.IntervalSeconds != 0.2 || st.Started == nil {
		t.Errorf("status header: site %q version %q interval %v started %v", st.Site, st.Version, st.IntervalSeconds, st.Started)
	}

	// The same numbers as /metrics: a status taken between two scrapes that
	// agree is equal to them.
	same := false
	for i := 0; i < 50 && !same; i++ {
		m1 := metricValues(t, a.mux)
		_, b := getBody(t, a.mux, status.PathStatus)
		m2 := metricValues(t, a.mux)
		if !mapsEqual(m1, m2) {
			continue
		}
		same = true
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		for _, tg := range st.Targets {
			m := m1[tg.Target+"|"+tg.Protocol+"|"+tg.Port]
			if tg.Guard {
				v := 0.0
				if *tg.Violation {
					v = 1
				}
				if m["probed_segmentation_violation"] != v {
					t.Errorf("guard: status violation %v, /metrics %v", *tg.Violation, m["probed_segmentation_violation"])
				}
				continue
			}
			up := 0.0
			if *tg.Up {
				up = 1
			}
			checks := map[string][2]float64{
				"probed_probes_sent_total": {float64(tg.Sent), m["probed_probes_sent_total"]},
				"probed_probes_lost_total": {float64(tg.Lost), m["probed_probes_lost_total"]},
				"probed_target_up":         {up, m["probed_target_up"]},
				"probed_loss_ratio":        {*tg.LossRatio, m["probed_loss_ratio"]},
			}
			if tg.JitterSeconds != nil {
				checks["probed_jitter_seconds"] = [2]float64{*tg.JitterSeconds, m["probed_jitter_seconds"]}
			}
			for name, v := range checks {
				if v[0] != v[1] {
					t.Errorf("%s %s: status %v, /metrics %s %v", tg.Target, tg.Protocol, v[0], name, v[1])
				}
			}
		}
	}
	if !same {
		t.Fatal("no two scrapes agreed in 50 tries")
	}

	evs := listEvents(t, a.mux, "related=false")
	kinds := map[events.Kind]int{}
	for _, e := range evs {
		kinds[e.Kind]++
	}
	if kinds[events.AgentStarted] != 1 || kinds[events.SegmentationViolation] != 1 || kinds[events.TargetDown] != 0 {
		t.Errorf("events %v, want agent_started and the guard's segmentation_violation, no target_down", kinds)
	}

	// A reload: the guard removed, a target added, the ICMP target's
	// interval changed, probe.down_after changed.
	reloaded := strings.NewReplacer(
		"      - {address: 127.0.0.3, path: guard, segment: prod, expect: unreachable}\n", "      - {address: 127.0.0.4, path: lan, segment: dev}\n",
		"{address: 127.0.0.2, path: lan, segment: prod, tcp_ports: [9]}", "{address: 127.0.0.2, path: lan, segment: prod, tcp_ports: [9], interval: 400ms}",
		"down_after: 2", "down_after: 3").Replace(eventsMesh)
	if err := a.reload(t, reloaded); err != nil {
		t.Fatal(err)
	}
	rl := listEvents(t, a.mux, "kind=config_reloaded")
	if len(rl) != 1 {
		t.Fatalf("%d config_reloaded events", len(rl))
	}
	d := rl[0].Details
	want := map[string][]string{
		"added":   {"icmp a → b 127.0.0.4 (lan/dev)"},
		"removed": {"icmp a → b 127.0.0.3 (guard/prod)"},
		"changed": {"icmp a → b 127.0.0.2 (lan/prod): interval 200ms → 400ms", "probe.down_after 2 → 3",
			"tcp/9 a → b 127.0.0.2 (lan/prod): interval 200ms → 400ms"},
	}
	for k, w := range want {
		var got []string
		for _, v := range d[k].([]any) {
			got = append(got, v.(string))
		}
		if !slices.Equal(got, w) {
			t.Errorf("config_reloaded %s = %q, want %q", k, got, w)
		}
	}
	if rl[0].Summary != "configuration reloaded: 1 added, 1 removed, 3 changed" || rl[0].Labels.Site != "a" {
		t.Errorf("config_reloaded: %s %+v", rl[0].Summary, rl[0].Labels)
	}

	// The console and the mesh view are on the same mux.
	if code, b := getBody(t, a.mux, "/"); code != http.StatusOK || !strings.Contains(string(b), "probed console") {
		t.Errorf("GET /: %d", code)
	}
	code, b := getBody(t, a.mux, status.PathMesh)
	var view status.View
	if code != http.StatusOK || json.Unmarshal(b, &view) != nil || view.Self != "a" || !slices.Equal(view.Sites, []string{"a", "b"}) ||
		len(view.Agents) != 2 || view.Agents[1].Site != "b" {
		t.Errorf("GET %s: %d %s", status.PathMesh, code, b)
	}

	// A second agent on the same storage path runs without a journal and
	// says why; one without storage says so too.
	b2, _ := runAgent(t, eventsMesh, dir, Options{Sockets: nssock.In(ns)})
	if code, body := getBody(t, b2.mux, "/api/v1/events"); code != http.StatusServiceUnavailable || !strings.Contains(string(body), "in use by another process") {
		t.Errorf("second agent on the same journal: %d %s", code, body)
	}
	c, _ := runAgent(t, eventsMesh, "", Options{Sockets: nssock.In(ns)})
	if code, body := getBody(t, c.mux, "/api/v1/events"); code != http.StatusServiceUnavailable || !strings.Contains(string(body), "storage.path") {
		t.Errorf("agent without storage: %d %s", code, body)
	}
	// Alerts see it too: probed_events_journal_up is 1 where the journal
	// records, 0 where it could not be opened, absent without storage.
	for _, c := range []struct {
		name string
		reg  *prometheus.Registry
		want string
	}{{"recording", a.reg, "probed_events_journal_up 1\n"}, {"second on the same path", b2.reg, "probed_events_journal_up 0\n"}} {
		if out := scrapeText(t, c.reg); !strings.Contains(out, c.want) {
			t.Errorf("%s: want %q in the scrape", c.name, c.want)
		}
	}
	if strings.Contains(scrapeText(t, c.reg), "probed_events_journal_up") {
		t.Error("agent without storage exports probed_events_journal_up")
	}

	// Stopping records agent_stopped; the journal is on disk.
	stop()
	j, err := events.Open(events.Options{Dir: filepath.Join(dir, "events")})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	mux := http.NewServeMux()
	j.Register(mux)
	after := listEvents(t, mux, "related=false&limit=1000")
	if len(after) != len(evs)+2 || after[0].Kind != events.AgentStopped || after[0].Details["reason"] != "stopped" {
		t.Errorf("after the stop: %d events (newest %v), want the %d before, the reload and agent_stopped", len(after), after[0], len(evs))
	}
	if _, err := os.Stat(filepath.Join(dir, "events", "lock")); err != nil {
		t.Error(err)
	}
}

func mapsEqual(a, b map[string]map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, m := range a {
		n, ok := b[k]
		if !ok || len(m) != len(n) {
			return false
		}
		for kk, v := range m {
			if n[kk] != v {
				return false
			}
		}
	}
	return true
}

// The reload event words what the engine changed: a job whose settings
// changed is "changed", not removed and added.
func TestDescribeChanges(t *testing.T) {
	base := config.ProbeSpec{Kind: config.KindICMP, SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Path: "sitelink",
		Segment: "prod", Protocol: "icmp", Interval: time.Second, Timeout: time.Second}
	tcp := base
	tcp.Kind, tcp.Protocol, tcp.Port = config.KindTCP, "tcp", 443
	tr := base
	tr.Kind, tr.TraceOpts = config.KindTrace, config.TraceJob{Method: "icmp", MaxTTL: 30}
	slow := base
	slow.Interval = 2 * time.Second
	other := base
	other.Target = "10.0.0.2"
	old := &config.Plan{Site: "a", Probes: []config.ProbeSpec{base, tcp, tr}, LossWindow: 100, DownAfter: 3}
	cur := &config.Plan{Site: "a", Probes: []config.ProbeSpec{slow, other, tr}, LossWindow: 50, DownAfter: 3}
	c := probe.Changes{Added: []*config.ProbeSpec{&other}, Removed: []*config.ProbeSpec{&tcp}, Changed: [][2]*config.ProbeSpec{{&base, &slow}}}
	added, removed, changed := describeChanges(old, cur, c)
	if !slices.Equal(added, []string{"icmp a → b 10.0.0.2 (sitelink/prod)"}) ||
		!slices.Equal(removed, []string{"tcp/443 a → b 10.0.0.1 (sitelink/prod)"}) ||
		!slices.Equal(changed, []string{"icmp a → b 10.0.0.1 (sitelink/prod): interval 1s → 2s", "probe.loss_window 100 → 50"}) {
		t.Errorf("added %q\nremoved %q\nchanged %q", added, removed, changed)
	}
	if a, r, c := describeChanges(old, old, probe.Changes{}); len(a)+len(r)+len(c) != 0 {
		t.Errorf("the same plan: %q %q %q", a, r, c)
	}
	if got := describeJob(&tr); got != "trace a → b 10.0.0.1 (sitelink/prod) of icmp" {
		t.Errorf("describeJob(trace) = %q", got)
	}
}

func TestStopReason(t *testing.T) {
	for cause, want := range map[string]string{"terminated signal received": "SIGTERM", "interrupt signal received": "SIGINT",
		"context canceled": "stopped"} {
		if got := stopReason(errorString(cause)); got != want {
			t.Errorf("stopReason(%q) = %q, want %q", cause, got, want)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
