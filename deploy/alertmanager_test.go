package deploy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const alertmanagerConfig = "alertmanager/alertmanager.yml"

func TestAmtoolCheckConfig(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	t.Log(runTool(t, ".", amtool, "check-config", alertmanagerConfig))
}

// TestAlertmanagerRouting: pages go to the pager, everything else to the
// ticket queue.
func TestAlertmanagerRouting(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	for _, r := range loadRules(t, "prometheus/alerting.rules.yml") {
		want := map[string]string{"page": "pager", "ticket": "ticket"}[r.Labels["severity"]]
		out := runTool(t, ".", amtool, "config", "routes", "test", "--config.file="+alertmanagerConfig,
			"alertname="+r.Alert, "severity="+r.Labels["severity"], "source_site=us-east", "target_site=us-west")
		// amtool warns on stderr (merged into out); the receiver is the last line.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := lines[len(lines)-1]; got != want {
			t.Errorf("%s (severity %s) routed to %q, want %q", r.Alert, r.Labels["severity"], got, want)
		}
	}
}

// webhook is an Alertmanager webhook receiver that records notifications.
type webhook struct {
	*httptest.Server
	mu    sync.Mutex
	notes []notification
}

type notification struct {
	Receiver    string            `json:"receiver"`
	Status      string            `json:"status"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
	} `json:"alerts"`
	at time.Time
}

func newWebhook(t testing.TB) *webhook {
	w := &webhook{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var n notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("webhook: bad payload: %v", err)
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		n.at = time.Now()
		w.mu.Lock()
		w.notes = append(w.notes, n)
		w.mu.Unlock()
	}))
	t.Cleanup(w.Close)
	return w
}

// find returns the first notification (in arrival order) that delivers the
// alert with the given name and status ("firing"/"resolved") and whose
// labels include match.
func (w *webhook) find(alertname, status string, match map[string]string) (notification, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.notes {
		for _, a := range n.Alerts {
			if a.Labels["alertname"] == alertname && a.Status == status && hasLabels(a.Labels, match) {
				return n, true
			}
		}
	}
	return notification{}, false
}

// delivered lists "receiver: alertname{labels}" of every firing alert seen.
func (w *webhook) delivered() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[string]bool{}
	for _, n := range w.notes {
		for _, a := range n.Alerts {
			if a.Status == "firing" {
				seen[fmt.Sprintf("%s: %s %s->%s %s/%s", n.Receiver, a.Labels["alertname"], a.Labels["source_site"], a.Labels["target_site"], a.Labels["path"], a.Labels["segment"])] = true
			}
		}
	}
	var out []string
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func hasLabels(ls, match map[string]string) bool {
	for k, v := range match {
		if ls[k] != v {
			return false
		}
	}
	return true
}

// testAlertmanagerConfig is the example config with its routing and
// inhibition untouched, but every receiver replaced by the test's webhook
// (path /<receiver>) and the grouping timers shortened for a test.
func testAlertmanagerConfig(t testing.TB, hookURL string) string {
	t.Helper()
	b, err := os.ReadFile(alertmanagerConfig)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("parsing %s: %v", alertmanagerConfig, err)
	}
	var shorten func(r map[string]any)
	shorten = func(r map[string]any) {
		r["group_wait"], r["group_interval"] = "1s", "1s"
		if subs, ok := r["routes"].([]any); ok {
			for _, s := range subs {
				shorten(s.(map[string]any))
			}
		}
	}
	shorten(cfg["route"].(map[string]any))
	var receivers []any
	for _, r := range cfg["receivers"].([]any) {
		name := r.(map[string]any)["name"].(string)
		receivers = append(receivers, map[string]any{
			"name":            name,
			"webhook_configs": []any{map[string]any{"url": hookURL + "/" + name, "send_resolved": true}},
		})
	}
	cfg["receivers"] = receivers
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "alertmanager.yml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAlertmanager runs the Debian Alertmanager on a loopback port with the
// given config and returns its URL.
func startAlertmanager(t testing.TB, cfgPath string) string {
	t.Helper()
	am := tool(t, "prometheus-alertmanager", "prometheus-alertmanager")
	addr := freeAddr(t)
	startProcess(t, am,
		"--config.file="+cfgPath,
		"--storage.path="+t.TempDir(),
		"--web.listen-address="+addr,
		"--cluster.listen-address=", // no gossip: a single test instance
		"--log.level=debug",
	)
	url := "http://" + addr
	waitHTTP(t, url+"/-/ready", 30*time.Second)
	return url
}

type amAlert struct {
	Labels map[string]string `json:"labels"`
	Status struct {
		State       string   `json:"state"`
		InhibitedBy []string `json:"inhibitedBy"`
	} `json:"status"`
	Fingerprint string `json:"fingerprint"`
}

// amAlerts returns the alerts Alertmanager holds, with their inhibition
// state (the v2 API recomputes it on every call).
func amAlerts(t testing.TB, amURL string) []amAlert {
	t.Helper()
	resp, err := http.Get(amURL + "/api/v2/alerts")
	if err != nil {
		t.Fatalf("listing alerts: %v", err)
	}
	defer resp.Body.Close()
	var as []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&as); err != nil {
		t.Fatalf("decoding alerts: %v", err)
	}
	return as
}

// TestAlertmanagerInhibition pushes a set of alerts with amtool into a real
// Alertmanager running the example config and checks which are inhibited,
// and that only the others reach the pager.
func TestAlertmanagerInhibition(t *testing.T) {
	amtool := tool(t, "amtool", "prometheus-alertmanager")
	hook := newWebhook(t)
	amURL := startAlertmanager(t, testAlertmanagerConfig(t, hook.URL))

	pair := func(src, dst, path, seg string) []string {
		return []string{"source_site=" + src, "target_site=" + dst, "path=" + path, "segment=" + seg}
	}
	aws := func(site, seg string) []string {
		ls := []string{"site=" + site, "source_site=" + site, "target_site=" + site}
		if seg != "" {
			ls = append(ls, "segment="+seg)
		}
		return ls
	}
	cases := []struct {
		name      string
		alertname string
		severity  string
		labels    []string
		inhibited bool
	}{
		{"unreachable pair", "ProbedPeerUnreachable", "page", pair("us-east", "us-central", "sitelink", "prod"), false},
		{"loss of the unreachable pair", "ProbedPacketLossHigh", "page", pair("us-east", "us-central", "sitelink", "prod"), true},
		{"path change of the unreachable pair", "ProbedPathChanged", "ticket", append(pair("us-east", "us-central", "sitelink", "prod"), "target=10.77.2.1"), true},
		{"member path of the unreachable pair", "ProbedLossConcentratedOnMemberPath", "page", append(pair("us-east", "us-central", "sitelink", "prod"), "target=10.77.2.1", "protocol=icmp"), true},
		{"loss of the same pair on mpls", "ProbedPacketLossHigh", "page", pair("us-east", "us-central", "mpls", "prod"), false},
		{"loss of the same pair, other segment", "ProbedPacketLossHigh", "page", pair("us-east", "us-central", "sitelink", "dev"), false},

		{"BGP down at us-west dev", "DirectConnectBGPPeerDown", "page", append(aws("us-west", "dev"), "vif_id=dxvif-uw-dev", "bgp_peer_id=p4"), false},
		{"latency towards us-west, sitelink dev", "ProbedLatencyRegression", "page", pair("ap-tokyo", "us-west", "sitelink", "dev"), true},
		{"jitter from us-west, sitelink dev", "ProbedJitterHigh", "ticket", pair("us-west", "eu-frankfurt", "sitelink", "dev"), true},
		{"unreachable from us-west, sitelink dev", "ProbedPeerUnreachable", "page", pair("us-west", "ap-sydney", "sitelink", "dev"), true},
		{"loss towards us-west, sitelink prod", "ProbedPacketLossHigh", "page", pair("ap-tokyo", "us-west", "sitelink", "prod"), false},
		{"loss towards us-west, mpls dev", "ProbedPacketLossHigh", "page", pair("ap-tokyo", "us-west", "mpls", "dev"), false},

		{"connection down at ap-sydney", "DirectConnectConnectionDown", "page", append(aws("ap-sydney", ""), "connection_id=dxcon-syd"), false},
		{"VIF of the down connection", "DirectConnectVIFDown", "page", append(aws("ap-sydney", "prod"), "vif_id=dxvif-syd-prod"), true},
		{"unreachable towards ap-sydney, sitelink", "ProbedPeerUnreachable", "page", pair("eu-frankfurt", "ap-sydney", "sitelink", "prod"), true},
		{"unreachable towards ap-sydney, mpls", "ProbedPeerUnreachable", "page", pair("eu-frankfurt", "ap-sydney", "mpls", "prod"), false},
	}
	for _, c := range cases {
		args := append([]string{"alert", "add", "--alertmanager.url=" + amURL, "alertname=" + c.alertname, "severity=" + c.severity, "case=" + c.name},
			c.labels...)
		args = append(args, "--annotation=summary="+c.name)
		runTool(t, ".", amtool, args...)
	}

	byCase := map[string]amAlert{}
	deadline := time.Now().Add(20 * time.Second)
	for len(byCase) < len(cases) && time.Now().Before(deadline) {
		for _, a := range amAlerts(t, amURL) {
			byCase[a.Labels["case"]] = a
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range cases {
		a, ok := byCase[c.name]
		if !ok {
			t.Errorf("%s: alert never reached Alertmanager", c.name)
			continue
		}
		if got := len(a.Status.InhibitedBy) > 0; got != c.inhibited {
			t.Errorf("%s: inhibited=%v (state %s), want %v", c.name, got, a.Status.State, c.inhibited)
		}
	}

	// Only the alerts that are not inhibited are delivered; pages to the
	// pager. Wait for one full round of notifications (group_wait 1s).
	want := map[string]string{}
	for _, c := range cases {
		if !c.inhibited {
			want[c.name] = map[string]string{"page": "pager", "ticket": "ticket"}[c.severity]
		}
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		got := map[string]string{}
		hook.mu.Lock()
		for _, n := range hook.notes {
			for _, a := range n.Alerts {
				got[a.Labels["case"]] = n.Receiver
			}
		}
		hook.mu.Unlock()
		missing := false
		for name, recv := range want {
			if got[name] != recv {
				missing = true
			}
		}
		if !missing || time.Now().After(deadline) {
			for name, recv := range want {
				if got[name] != recv {
					t.Errorf("%s: delivered to %q, want %q", name, got[name], recv)
				}
			}
			for name := range got {
				if _, ok := want[name]; !ok {
					t.Errorf("%s: inhibited alert was delivered to %s", name, got[name])
				}
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Grouped by pair: the us-east -> us-central alerts of both paths
	// arrive in one notification group.
	if n, ok := hook.find("ProbedPeerUnreachable", "firing", map[string]string{"source_site": "us-east", "target_site": "us-central"}); ok {
		if n.GroupLabels["source_site"] != "us-east" || n.GroupLabels["target_site"] != "us-central" {
			t.Errorf("group labels %v, want the site pair", n.GroupLabels)
		}
	}
}
