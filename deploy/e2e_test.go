package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/internal/awstest"
	"github.com/probed/probed/internal/netlab"
)

// e2eSites are the lab sites of the end-to-end test: us-east <-> us-central
// is blackholed on sitelink; us-west's dev BGP peer goes down in AWS.
var e2eSites = []string{"us-east", "us-central", "us-west"}

// e2eMesh is the three-site subset of configs/example-mesh.yaml with fast
// probes (a target is down 3 probes after the fault, within a second) and
// AWS polling of the test server every 10s (the minimum the config allows).
const e2eMesh = `probe:
  interval: 200ms
  timeout: 500ms
  down_after: 3
sites:
  - name: us-east
    region: us-east-1
    location: EqDC2
    targets:
      - {address: 10.77.1.1, path: sitelink, segment: prod}
      - {address: 10.77.1.65, path: sitelink, segment: dev}
      - {address: 10.78.1.1, path: mpls, segment: prod}
  - name: us-central
    region: us-east-2
    location: EqDA2
    targets:
      - {address: 10.77.2.1, path: sitelink, segment: prod}
      - {address: 10.77.2.65, path: sitelink, segment: dev}
      - {address: 10.78.2.1, path: mpls, segment: prod}
  - name: us-west
    region: us-west-1
    location: EqSV5
    targets:
      - {address: 10.77.3.1, path: sitelink, segment: prod}
      - {address: 10.77.3.65, path: sitelink, segment: dev}
      - {address: 10.78.3.1, path: mpls, segment: prod}
aws:
  interval: 10s
  timeout: 5s
  cloudwatch: false
  nsm: false
`

// awsNSPort is where the AWS test server answers inside every site
// namespace (each has its own loopback).
const awsNSPort = 4599

// TestEndToEndAlerting runs the whole alerting chain for real: a 3-site
// lab, one probed per site, the AWS test server, the Debian Prometheus
// loaded with deploy/prometheus's rules, and the Debian Alertmanager with
// deploy/alertmanager's routing and inhibition, delivering to a webhook in
// this test. Faults: us-east <-> us-central blackholed on sitelink, and
// us-west's dev BGP peer (IPv4) taken down in AWS.
func TestEndToEndAlerting(t *testing.T) {
	// The two lab tests of this package mostly wait on alert timers: they
	// run side by side (each has its own lab, agents and Prometheus).
	t.Parallel()
	promBin := tool(t, "prometheus", "prometheus")
	lab := netlab.StartT(t, mustSubset(t, e2eSites...))
	bin := probedBinary(t)
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mesh, []byte(e2eMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, ".", bin, "check-config", "--config.file="+mesh, "--site=us-east")

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	aws, awsEnv := startAWSInLab(t, ctx, lab)

	// One agent per site, exposed on the host for Prometheus.
	var targets []string
	for _, s := range lab.Sites() {
		addr, _ := s.Addr(netlab.PathSiteLink, false)
		listen := fmt.Sprintf("%s:9447", addr)
		logf, err := os.Create(filepath.Join(dir, s.Name()+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := s.Command(context.WithoutCancel(ctx), bin, "--config.file="+mesh, "--site="+s.Name(), "--web.listen-address="+listen, "--log.format=json",
			"--storage.path="+filepath.Join(dir, s.Name()))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = append(os.Environ(), awsEnv...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting probed in %s: %v", s.Name(), err)
		}
		name := s.Name()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("probed %s log:\n%s", name, tail(string(b), 3000))
			}
		})
		ln, err := s.Forward(ctx, "127.0.0.1:0", listen)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, fmt.Sprintf("{targets: ['%s'], labels: {agent_site: %s}}", ln.Addr(), s.Name()))
	}

	hook := newWebhook(t)
	amURL := startAlertmanager(t, testAlertmanagerConfig(t, hook.URL))
	promURL := startPrometheus(t, promBin, dir, amURL, targets)

	// Healthy mesh first: every agent scraped, every pair reachable.
	waitProm(t, promURL, 90*time.Second, "all agents scraped", `count(up{job="probed"} == 1) == 3`)
	waitProm(t, promURL, 90*time.Second, "every pair reachable",
		`count(pair:probed_target_up:max == 1) == 18`) // 6 directed pairs x (sitelink prod, sitelink dev, mpls prod)
	waitProm(t, promURL, 90*time.Second, "BGP state polled", `count(probed_dx_bgp_peer_up{site="us-west"} == 1) >= 2`)

	// The faults.
	const bgpVIF, bgpPeer = "dxvif-fd3k7x2q", "dxpeer-fd34k7x2q" // us-west dev, IPv4
	fault := time.Now()
	setDown(t, lab, "us-east", "us-central", true)
	if err := aws.SetBGPStatus(bgpVIF, bgpPeer, "down"); err != nil {
		t.Fatal(err)
	}

	// The site-pair dashboard's event annotation marks the outage (the
	// us-east agent's target_down) on the pair's latency panels.
	_, events := dashboardAnnotation(t, "grafana/site-pair.json", "Agent events", map[string]string{"source_site": "us-east", "target_site": "us-central"})
	waitProm(t, promURL, time.Minute, "the Agent events annotation for the outage",
		`(`+events+`) and on (kind) count by (kind) (probed_events_total{kind="target_down"})`)

	unreachable := map[string]string{"source_site": "us-east", "target_site": "us-central", "path": "sitelink", "segment": "prod"}
	page := waitHook(t, hook, 4*time.Minute, "ProbedPeerUnreachable", "firing", unreachable)
	if page.Receiver != "pager" {
		t.Errorf("ProbedPeerUnreachable went to %q, want pager", page.Receiver)
	}
	t.Logf("fault -> ProbedPeerUnreachable page: %v", page.at.Sub(fault).Round(100*time.Millisecond))

	bgp := waitHook(t, hook, 3*time.Minute, "DirectConnectBGPPeerDown", "firing", map[string]string{"site": "us-west", "segment": "dev", "bgp_peer_id": bgpPeer})
	if bgp.Receiver != "pager" {
		t.Errorf("DirectConnectBGPPeerDown went to %q, want pager", bgp.Receiver)
	}
	t.Logf("BGP down -> DirectConnectBGPPeerDown page: %v", bgp.at.Sub(fault).Round(100*time.Millisecond))

	// The loss alert of the unreachable pair fires in Prometheus ...
	waitProm(t, promURL, 4*time.Minute, "the loss alert firing in Prometheus",
		`ALERTS{alertname="ProbedPacketLossHigh",alertstate="firing",source_site="us-east",target_site="us-central",path="sitelink",segment="prod"}`)
	// ... reaches Alertmanager, which holds it inhibited and never delivers it.
	var inhibitedBy []string
	deadline := time.Now().Add(30 * time.Second)
	for len(inhibitedBy) == 0 && time.Now().Before(deadline) {
		for _, a := range amAlerts(t, amURL) {
			if a.Labels["alertname"] == "ProbedPacketLossHigh" && hasLabels(a.Labels, unreachable) {
				inhibitedBy = a.Status.InhibitedBy
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(inhibitedBy) == 0 {
		t.Errorf("ProbedPacketLossHigh of the unreachable pair is not inhibited in Alertmanager")
	}
	time.Sleep(3 * time.Second) // several group_intervals: time to be (wrongly) delivered
	if n, ok := hook.find("ProbedPacketLossHigh", "firing", unreachable); ok {
		t.Errorf("inhibited loss alert delivered to %s", n.Receiver)
	}
	// mpls between the same sites is fine: nothing about it may page.
	if n, ok := hook.find("ProbedPeerUnreachable", "firing", map[string]string{"path": "mpls"}); ok {
		t.Errorf("mpls reported unreachable: %+v", n.GroupLabels)
	}

	// Restore: the resolved notification arrives.
	restore := time.Now()
	setDown(t, lab, "us-east", "us-central", false)
	resolved := waitHook(t, hook, 3*time.Minute, "ProbedPeerUnreachable", "resolved", unreachable)
	t.Logf("restore -> ProbedPeerUnreachable resolved: %v", resolved.at.Sub(restore).Round(100*time.Millisecond))
	// The outage's losses stay in the 5m loss window after recovery; they
	// must not page once the inhibiting alert is gone.
	time.Sleep(5 * time.Second)
	for _, lbl := range []map[string]string{unreachable, {"source_site": "us-central", "target_site": "us-east", "path": "sitelink"}} {
		if n, ok := hook.find("ProbedPacketLossHigh", "firing", lbl); ok {
			t.Errorf("loss of the recovered pair paged after recovery (%s, %v)", n.Receiver, lbl)
		}
	}
	t.Logf("delivered: %s", strings.Join(hook.delivered(), "; "))
}

func mustSubset(t *testing.T, sites ...string) netlab.Topology {
	t.Helper()
	topo, err := netlab.DefaultTopology().Subset(sites...)
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// setDown blackholes (or restores) both directions of a sitelink path,
// keeping its delays.
func setDown(t *testing.T, lab *netlab.Lab, a, b string, down bool) {
	t.Helper()
	for _, d := range [][2]string{{a, b}, {b, a}} {
		if err := lab.UpdatePath(d[0], d[1], netlab.PathSiteLink, func(p *netlab.PathParams) { p.Down = down }); err != nil {
			t.Fatal(err)
		}
	}
}

// startAWSInLab serves the AWS test server (built-in 7-site fixture) on
// 127.0.0.1:awsNSPort inside every site namespace and returns the
// environment that points the agents' SDK at it.
func startAWSInLab(t *testing.T, ctx context.Context, lab *netlab.Lab) (*awstest.Server, []string) {
	t.Helper()
	srv := awstest.New(nil)
	for _, s := range lab.Sites() {
		ln, err := s.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", awsNSPort))
		if err != nil {
			t.Fatalf("AWS test server in %s: %v", s.Name(), err)
		}
		hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { hs.Close() })
	}
	return srv, []string{
		fmt.Sprintf("AWS_ENDPOINT_URL=http://127.0.0.1:%d", awsNSPort),
		"AWS_ACCESS_KEY_ID=AKIDDEPLOYE2E", "AWS_SECRET_ACCESS_KEY=deploy-e2e", "AWS_SESSION_TOKEN=",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
}

// startPrometheus runs the Debian Prometheus as docs/deployment.md says
// (native histograms enabled) with deploy/prometheus's rule
// files, 1s scrape and evaluation intervals (the rules' own "for" durations
// and windows are unchanged), and the test's Alertmanager.
func startPrometheus(t *testing.T, bin, dir, amURL string, targets []string) string {
	t.Helper()
	var rules []string
	for _, f := range ruleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, "'"+abs+"'")
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%s]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['%s']
scrape_configs:
  - job_name: probed
    static_configs: [%s]
`, strings.Join(rules, ", "), strings.TrimPrefix(amURL, "http://"), strings.Join(targets, ", "))
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	startProcess(t, bin, "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--web.listen-address="+addr, "--rules.alert.resend-delay=2s", "--enable-feature=native-histograms", "--log.level=info")
	u := "http://" + addr
	waitHTTP(t, u+"/-/ready", 60*time.Second)
	return u
}

// promQuery runs an instant query and returns the number of series.
func promQuery(promURL, q string) (int, error) {
	resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %s: %s", q, r.Error)
	}
	return len(r.Data.Result), nil
}

// waitProm waits until the query returns at least one series.
func waitProm(t *testing.T, promURL string, timeout time.Duration, what, q string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := promQuery(promURL, q)
		if err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (%s): %v", timeout, what, q, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitHook waits for the webhook to receive the alert with this status.
func waitHook(t *testing.T, hook *webhook, timeout time.Duration, alertname, status string, match map[string]string) notification {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if n, ok := hook.find(alertname, status, match); ok {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s %s %v; delivered so far: %v", timeout, alertname, status, match, hook.delivered())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
