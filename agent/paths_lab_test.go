package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/probed/probed/exporter/pathmetrics"
	"github.com/probed/probed/internal/netlab"
	"github.com/probed/probed/internal/nssock"
)

// pathLabMesh traces two sitelink targets (IPv4 and IPv6) and searches the
// MTU of two sitelink targets (IPv4 and IPv6) and one mpls target of
// eu-frankfurt from us-east.
// trace.interval is the 1 s minimum, so "detected within one interval" is
// checked against a short, real interval.
const pathLabMesh = `
site: us-east
probe:
  interval: 1s
  timeout: 300ms
trace:
  interval: 1s
  probes_per_hop: 2
  max_ttl: 8
  pps: 1000
mtu:
  interval: 1s
  retries: 1
sites:
  - name: us-east
    targets: []
  - name: eu-frankfurt
    targets:
      - {address: 10.77.7.1, path: sitelink, segment: prod, trace: true, mtu: false}
      - {address: "fd77:7::1", path: sitelink, segment: prod, trace: true, mtu: false}
      - {address: 10.77.7.65, path: sitelink, segment: dev, mtu: true}
      - {address: "fd77:7::41", path: sitelink, segment: dev, mtu: true}
      - {address: 10.78.7.1, path: mpls, segment: prod, mtu: true}
`

type pathsDoc struct {
	Paths []pathmetrics.TargetPath `json:"paths"`
}

func pathsGet(t *testing.T, mux *http.ServeMux) map[string]pathmetrics.TargetPath {
	t.Helper()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/paths", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /paths: %d %s", rec.Code, rec.Body)
	}
	var d pathsDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatalf("GET /paths: %v", err)
	}
	out := map[string]pathmetrics.TargetPath{}
	for _, p := range d.Paths {
		out[p.Target] = p
	}
	return out
}

func pathHopList(p pathmetrics.TargetPath) string {
	var s []string
	for _, h := range p.Hops {
		s = append(s, h.Address)
	}
	return strings.Join(s, ",")
}

func pathJoinAddrs(as ...netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}

// pathGauge returns the value of metric name for target (and its labels).
func pathGauge(t *testing.T, reg *prometheus.Registry, name, target string) (float64, map[string]string, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["target"] != target {
				continue
			}
			return pathMetricValue(m), l, true
		}
	}
	return 0, nil, false
}

func pathMetricValue(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

// pathWaitUntil polls cond every 20 ms until it holds or timeout passes.

// The path feature in the WAN lab: the hop list is the lab's; a change at
// run time is found within one trace interval and counted once; a hop that
// stops answering is no change; the MTU is found exactly behind a path that
// reports it (1500) and behind a black hole (8500), and the two are told
// apart.
func TestPathJobsLab(t *testing.T) {
	topo, err := netlab.DefaultTopology().Subset("us-east", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	lab := netlab.StartT(t, topo)
	a := netip.MustParseAddr
	hops := []netip.Addr{a("10.90.17.1"), a("fd90:1:7::1"), a("10.90.17.2"), a("fd90:1:7::2")}
	set := func(from, to, path string, p netlab.PathParams) {
		t.Helper()
		if err := lab.SetPath(from, to, path, p); err != nil {
			t.Fatalf("SetPath %s->%s %s: %v", from, to, path, err)
		}
	}
	// Short delays keep traces quick; the figures under test are hops
	// and sizes, not latency.
	set("us-east", "eu-frankfurt", "sitelink", netlab.PathParams{Delay: 2 * time.Millisecond, Hops: hops, MTU: 1500})
	set("eu-frankfurt", "us-east", "sitelink", netlab.PathParams{Delay: 2 * time.Millisecond})
	set("us-east", "eu-frankfurt", "mpls", netlab.PathParams{Delay: 2 * time.Millisecond, MTU: 8500, MTUBlackhole: true})
	set("eu-frankfurt", "us-east", "mpls", netlab.PathParams{Delay: 2 * time.Millisecond})

	core, logs := observer.New(zap.InfoLevel)
	ag := startAgent(t, pathLabMesh, Options{Log: zap.New(core), Sockets: nssock.In(lab.Site("us-east"))})
	reg, mux := ag.reg, ag.mux

	v4, v6 := "10.77.7.1", "fd77:7::1"
	want := map[string]string{
		v4: pathJoinAddrs(hops[0], hops[2], a(v4)),
		v6: pathJoinAddrs(hops[1], hops[3], a(v6)),
	}
	waitUntil(t, 15*time.Second, "first traces", func() bool {
		p := pathsGet(t, mux)
		return pathHopList(p[v4]) == want[v4] && pathHopList(p[v6]) == want[v6]
	})
	for _, tg := range []string{v4, v6} {
		v, l, ok := pathGauge(t, reg, "probed_path_info", tg)
		if !ok || v != 1 || l["hops"] != want[tg] || l["source_site"] != "us-east" || l["target_site"] != "eu-frankfurt" || l["path"] != "sitelink" || l["protocol"] != "icmp" {
			t.Errorf("probed_path_info for %s = %v %v", tg, v, l)
		}
		if v, _, _ := pathGauge(t, reg, "probed_path_hops", tg); v != 3 {
			t.Errorf("probed_path_hops for %s = %v, want 3", tg, v)
		}
		if v, _, ok := pathGauge(t, reg, "probed_path_changes_total", tg); !ok || v != 0 {
			t.Errorf("probed_path_changes_total for %s = %v before any change", tg, v)
		}
	}

	// MTU: Fragmentation Needed on sitelink, a black hole on mpls.
	waitUntil(t, 30*time.Second, "MTU results", func() bool {
		p := pathsGet(t, mux)
		return p["10.77.7.65"].MTUBytes != nil && p["fd77:7::41"].MTUBytes != nil && p["10.78.7.1"].MTUBytes != nil
	})
	for tg, w := range map[string][2]float64{"10.77.7.65": {1500, 0}, "fd77:7::41": {1500, 0}, "10.78.7.1": {8500, 1}} {
		mtu, _, _ := pathGauge(t, reg, "probed_path_mtu_bytes", tg)
		bh, _, _ := pathGauge(t, reg, "probed_path_mtu_blackhole", tg)
		if mtu != w[0] || bh != w[1] {
			t.Errorf("%s: probed_path_mtu_bytes %v probed_path_mtu_blackhole %v, want %v %v", tg, mtu, bh, w[0], w[1])
		}
	}

	// A path change right after a trace finished (so no trace straddles
	// it and sees half of each path).
	before := pathsGet(t, mux)[v4].LastTrace
	waitUntil(t, 5*time.Second, "a new trace", func() bool {
		lt := pathsGet(t, mux)[v4].LastTrace
		return lt != nil && before != nil && lt.After(*before)
	})
	newHops := []netip.Addr{hops[0], hops[1], a("10.90.17.9"), a("fd90:1:7::9"), hops[2], hops[3]}
	set("us-east", "eu-frankfurt", "sitelink", netlab.PathParams{Delay: 2 * time.Millisecond, Hops: newHops, MTU: 1500})
	want[v4] = pathJoinAddrs(hops[0], a("10.90.17.9"), hops[2], a(v4))
	want[v6] = pathJoinAddrs(hops[1], a("fd90:1:7::9"), hops[3], a(v6))
	// The next round starts at most one interval (1 s) after the change
	// and takes a few 4 ms round trips; 1.5 s more covers a loaded CI
	// machine without letting a second interval slip through unnoticed.
	took := waitUntil(t, 2500*time.Millisecond, "path change not detected within one trace interval", func() bool {
		p := pathsGet(t, mux)
		return pathHopList(p[v4]) == want[v4] && pathHopList(p[v6]) == want[v6]
	})
	t.Logf("path change detected after %v (trace interval 1s)", took)

	// A hop that stops answering: the lab's hop still forwards, but its
	// Time Exceeded never reaches us-east: a policy rule drops ICMP from
	// it on input. Input to a local address matches the local table's
	// rule (priority 0) first, so that rule moves behind ours.
	us := lab.Site("us-east")
	for _, args := range [][]string{
		{"ip", "rule", "add", "pref", "10", "from", "10.90.17.9", "ipproto", "icmp", "blackhole"},
		{"ip", "rule", "add", "pref", "100", "table", "local"},
		{"ip", "rule", "del", "pref", "0", "table", "local"},
		{"ip", "-6", "rule", "add", "pref", "10", "from", "fd90:1:7::9", "ipproto", "ipv6-icmp", "blackhole"},
		{"ip", "-6", "rule", "add", "pref", "100", "table", "local"},
		{"ip", "-6", "rule", "del", "pref", "0", "table", "local"},
	} {
		if out, err := us.Exec(args...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	silentSince := time.Now()
	waitUntil(t, 5*time.Second, "hop 2 silent in /paths", func() bool {
		p := pathsGet(t, mux)
		for _, tg := range []string{v4, v6} {
			x := p[tg]
			if x.LastTrace == nil || x.LastTrace.Before(silentSince) || len(x.Hops) != 4 || x.Hops[1].Sent == 0 || x.Hops[1].Received != 0 {
				return false
			}
		}
		return true
	})
	// Two more rounds with the silent hop.
	time.Sleep(2 * time.Second)
	p := pathsGet(t, mux)
	for _, tg := range []string{v4, v6} {
		if p[tg].Changes != 1 {
			t.Errorf("%s: %d path changes, want exactly 1", tg, p[tg].Changes)
		}
		if pathHopList(p[tg]) != want[tg] || p[tg].Hops[1].LossRatio != 1 || p[tg].Hops[1].RTTSeconds != nil {
			t.Errorf("%s: /paths hops %s (hop 2 loss %v), want %s with hop 2 silent but known", tg, pathHopList(p[tg]), p[tg].Hops[1].LossRatio, want[tg])
		}
		if v, _, _ := pathGauge(t, reg, "probed_path_changes_total", tg); v != 1 {
			t.Errorf("probed_path_changes_total for %s = %v, want 1", tg, v)
		}
		if _, l, _ := pathGauge(t, reg, "probed_path_info", tg); l["hops"] != want[tg] {
			t.Errorf("probed_path_info for %s has hops %q, want %q", tg, l["hops"], want[tg])
		}
	}
	changes := logs.FilterMessage("path changed").All()
	if len(changes) != 2 {
		t.Errorf("%d \"path changed\" logs, want one per target", len(changes))
	}
	for _, e := range changes {
		c := e.ContextMap()
		if fmt.Sprint(c["old"]) == "" || fmt.Sprint(c["new"]) == fmt.Sprint(c["old"]) {
			t.Errorf("path change log without old and new path: %v", c)
		}
	}
}
