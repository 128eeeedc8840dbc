package status

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/probed/probed/internal/jsonapi"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

func b(v bool) *bool       { return &v }
func f(v float64) *float64 { return &v }

func target(src, dst, addr, path, seg, proto string, up *bool, rtt, loss float64) Target {
	t := Target{SourceSite: src, TargetSite: dst, Target: addr, Path: path, Segment: seg, Protocol: proto, Up: up,
		Sent: 100, Lost: uint64(loss * 100), LossRatio: f(loss), RTTMedianSeconds: f(rtt), JitterSeconds: f(rtt / 50)}
	if proto == "tcp" {
		t.Port = "443"
	}
	return t
}

// agentStatus is a fixed status for one site.
func agentStatus(site string) *Status {
	st := &Status{Site: site, Time: t0, IntervalSeconds: 1}
	for _, dst := range []string{"us-east", "ap-tokyo", "eu-frankfurt"} {
		if dst == site {
			continue
		}
		st.Targets = append(st.Targets,
			target(site, dst, "10.77.0.1", "sitelink", "prod", "icmp", b(true), 0.070, 0),
			target(site, dst, "10.77.0.2", "sitelink", "prod", "icmp", b(true), 0.074, 0.02),
			target(site, dst, "10.77.0.1", "sitelink", "prod", "tcp", b(true), 0.090, 0),
			target(site, dst, "10.78.0.1", "mpls", "prod", "icmp", b(true), 0.080, 0),
		)
	}
	return st
}

func peerServer(t *testing.T, st *Status) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(Handler(ProviderFunc(func(context.Context) (*Status, error) { return st, nil }), nil))
	t.Cleanup(srv.Close)
	return srv
}

func TestAggregate(t *testing.T) {
	st := agentStatus("us-east")
	// ap-tokyo sitelink/prod: one of two ICMP targets down → degraded;
	// the median is over the ICMP targets that are up.
	st.Targets[1].Up = b(false)
	// eu-frankfurt mpls/prod: down.
	st.Targets[7].Up = b(false)
	// eu-frankfurt sitelink/dev: no verdict yet.
	st.Targets = append(st.Targets, Target{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.77.0.65", Path: "sitelink", Segment: "dev", Protocol: "icmp"})
	// A guard that answers marks its cell.
	st.Targets = append(st.Targets, Target{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.99.0.1", Path: "sitelink", Segment: "prod", Protocol: "icmp", Guard: true, Violation: b(true)})
	sites := []string{"us-east", "ap-tokyo", "eu-frankfurt"}
	cells := Aggregate(sites, []Agent{{Site: "us-east", State: "ok", Status: st}, {Site: "ap-tokyo", State: CellUnknown}})
	got := map[string]Cell{}
	for _, c := range cells {
		got[c.SourceSite+">"+c.TargetSite+" "+c.Path+"/"+c.Segment] = c
	}
	check := func(k, state string, rtt, loss float64, targets, down int) {
		t.Helper()
		c, ok := got[k]
		if !ok {
			t.Fatalf("no cell %s in %+v", k, cells)
		}
		if c.State != state || c.Targets != targets || c.Down != down {
			t.Errorf("%s: %+v", k, c)
		}
		if rtt >= 0 && (c.RTTMedianSeconds == nil || math.Abs(*c.RTTMedianSeconds-rtt) > 1e-12) {
			t.Errorf("%s: rtt %v, want %v", k, c.RTTMedianSeconds, rtt)
		}
		if loss >= 0 && (c.LossRatio == nil || *c.LossRatio != loss) {
			t.Errorf("%s: loss %v, want %v", k, c.LossRatio, loss)
		}
	}
	check("us-east>ap-tokyo sitelink/prod", CellDegraded, 0.070, 0.02, 3, 1)
	check("us-east>ap-tokyo mpls/prod", CellUp, 0.080, 0, 1, 0)
	check("us-east>eu-frankfurt sitelink/prod", CellUp, 0.072, 0.02, 3, 0)
	check("us-east>eu-frankfurt mpls/prod", CellDown, -1, 0, 1, 1)
	check("us-east>eu-frankfurt sitelink/dev", CellUnknown, -1, -1, 1, 0)
	if !got["us-east>eu-frankfurt sitelink/prod"].Violation {
		t.Error("guard violation not on its cell")
	}
	// The unreachable agent: unknown towards every other site, never down.
	check("ap-tokyo>us-east /", CellUnknown, -1, -1, 0, 0)
	check("ap-tokyo>eu-frankfurt /", CellUnknown, -1, -1, 0, 0)
	// Ordered by the mesh's site order.
	if cells[0].SourceSite != "us-east" || cells[0].TargetSite != "ap-tokyo" || cells[len(cells)-1].SourceSite != "ap-tokyo" {
		t.Errorf("order: first %+v last %+v", cells[0], cells[len(cells)-1])
	}
}

// slowPeer never answers in time and records how many of its requests were
// in flight at once: fetches done one after another would see one.
type slowPeer struct {
	active atomic.Int32
	max    atomic.Int32
}

func (s *slowPeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := s.active.Add(1)
	defer s.active.Add(-1)
	for {
		m := s.max.Load()
		if a <= m || s.max.CompareAndSwap(m, a) {
			break
		}
	}
	<-r.Context().Done() // never answers in time
}

func TestMeshPeers(t *testing.T) {
	good := peerServer(t, agentStatus("ap-tokyo"))
	liar := peerServer(t, agentStatus("ap-tokyo")) // configured as eu-frankfurt
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	slow := &slowPeer{}
	slowSrv := httptest.NewServer(slow)
	defer slowSrv.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedURL := "http://" + closed.Addr().String() + PathStatus
	closed.Close()

	peers := []Peer{
		{"ap-tokyo", good.URL + PathStatus},
		{"eu-frankfurt", liar.URL + PathStatus},
		{"us-west", broken.URL + PathStatus},
		{"slow-1", slowSrv.URL + PathStatus},
		{"slow-2", slowSrv.URL + PathStatus},
		{"slow-3", slowSrv.URL + PathStatus},
		{"ap-sydney", closedURL},
	}
	sites := []string{"us-east", "ap-tokyo", "eu-frankfurt", "us-west", "slow-1", "slow-2", "slow-3", "ap-sydney"}
	m := NewMesh(MeshOptions{Site: "us-east", Self: ProviderFunc(func(context.Context) (*Status, error) { return agentStatus("us-east"), nil }),
		Sites: sites, Peers: peers, Timeout: 3 * time.Second})
	v, err := m.View(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if int(slow.max.Load()) != 3 {
		t.Errorf("peers were not fetched concurrently: at most %d slow requests in flight", slow.max.Load())
	}
	state := map[string]Agent{}
	for _, a := range v.Agents {
		state[a.Site] = a
	}
	if len(v.Agents) != len(peers)+1 || v.Agents[0].Site != "us-east" || v.Agents[0].State != "ok" {
		t.Fatalf("agents: %+v", v.Agents)
	}
	if a := state["ap-tokyo"]; a.State != "ok" || a.Status == nil || a.Status.Site != "ap-tokyo" {
		t.Errorf("good peer: %+v", a)
	}
	for site, want := range map[string]string{
		"eu-frankfurt": `answers as site "ap-tokyo"`,
		"us-west":      "500",
		"slow-1":       "no answer within 3s",
		"ap-sydney":    "connect",
	} {
		if a := state[site]; a.State != CellUnknown || !strings.Contains(a.Error, want) || a.Status != nil {
			t.Errorf("%s: %+v (want unknown with %q)", site, a, want)
		}
	}
	for _, c := range v.Cells {
		if c.SourceSite != "us-east" && c.SourceSite != "ap-tokyo" && c.State != CellUnknown {
			t.Errorf("cell of an unreachable agent is %s: %+v", c.State, c)
		}
		if c.State == CellDown {
			t.Errorf("nothing is down: %+v", c)
		}
	}
	if v.RefreshSeconds != 1 || v.Self != "us-east" || len(v.Sites) != len(sites) {
		t.Errorf("view: %+v", v)
	}
}

func TestMeshCacheAndSharing(t *testing.T) {
	var hits atomic.Int32
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		jsonapi.Write(w, agentStatus("ap-tokyo"))
	}))
	defer peer.Close()
	var mu sync.Mutex
	now := t0
	clk := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m := NewMesh(MeshOptions{Site: "us-east", Self: ProviderFunc(func(context.Context) (*Status, error) { return agentStatus("us-east"), nil }),
		Sites: []string{"us-east", "ap-tokyo"}, Peers: []Peer{{"ap-tokyo", peer.URL}}, Now: clk})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.View(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if hits.Load() != 1 {
		t.Fatalf("20 concurrent views fetched the peer %d times", hits.Load())
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if _, err := m.View(context.Background()); err != nil || hits.Load() != 2 {
		t.Fatalf("stale view not refreshed: %d fetches", hits.Load())
	}
	// A caller that gives up does not spoil the view for others.
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v, err := m.View(ctx)
	if err != nil || v.Agents[1].State != "ok" {
		t.Fatalf("%v %+v", err, v)
	}
}

func TestHTTPHandlers(t *testing.T) {
	peer := peerServer(t, agentStatus("ap-tokyo"))
	m := NewMesh(MeshOptions{Site: "us-east", Self: ProviderFunc(func(context.Context) (*Status, error) { return agentStatus("us-east"), nil }),
		Sites: []string{"us-east", "ap-tokyo"}, Peers: []Peer{{"ap-tokyo", peer.URL + PathStatus}}})
	mux := http.NewServeMux()
	m.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	code, body := get(PathStatus)
	var st Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Site != "us-east" || len(st.Targets) != 8 {
		t.Fatalf("status: %d %s", code, body)
	}
	for _, k := range []string{`"source_site":"us-east"`, `"up":true`, `"loss_ratio":0.02`, `"rtt_median_seconds":0.074`, `"port":""`} {
		if !strings.Contains(body, k) {
			t.Errorf("status JSON lacks %s", k)
		}
	}
	code, body = get(PathMesh)
	var v View
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || len(v.Agents) != 2 || v.Agents[1].State != "ok" {
		t.Fatalf("mesh: %d %s", code, body)
	}
	for _, p := range []string{PathStatus + "?x=1", PathMesh + "?site=a"} {
		if code, body := get(p); code != 400 || !strings.Contains(body, "no parameters") {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
	resp, _ := http.Post(srv.URL+PathStatus, "", nil)
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

func TestBasicAuthPeer(t *testing.T) {
	inner := Handler(ProviderFunc(func(context.Context) (*Status, error) { return agentStatus("ap-tokyo"), nil }), nil)
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "probed" || p != "secret" {
			w.Header().Set("WWW-Authenticate", "Basic")
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	defer peer.Close()
	self := ProviderFunc(func(context.Context) (*Status, error) { return agentStatus("us-east"), nil })
	for _, c := range []struct {
		client *http.Client
		want   string
	}{
		{&http.Client{}, CellUnknown},
		{&http.Client{Transport: BasicAuth(nil, "probed", "secret")}, "ok"},
	} {
		m := NewMesh(MeshOptions{Site: "us-east", Self: self, Sites: []string{"us-east", "ap-tokyo"}, Peers: []Peer{{"ap-tokyo", peer.URL}}, Client: c.client})
		v, _ := m.View(context.Background())
		if v.Agents[1].State != c.want {
			t.Errorf("%+v, want %s", v.Agents[1], c.want)
		}
	}
}
