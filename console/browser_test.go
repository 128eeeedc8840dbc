package console

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"

	"github.com/probed/probed/events"
	"github.com/probed/probed/history"
	"github.com/probed/probed/internal/testutil"
	"github.com/probed/probed/status"
)

// fixture is a status provider filled from fixed data, changed by the test.
type fixture struct {
	mu sync.Mutex
	st status.Status
}

func (f *fixture) Status(context.Context) (*status.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// A deep copy, as a real provider builds a new value per call.
	b, err := json.Marshal(f.st)
	if err != nil {
		return nil, err
	}
	var out status.Status
	err = json.Unmarshal(b, &out)
	out.Time = time.Now().UTC()
	return &out, err
}

func (f *fixture) update(fn func(*status.Status)) {
	f.mu.Lock()
	fn(&f.st)
	f.mu.Unlock()
}

var sites = []string{"us-east", "ap-tokyo", "eu-frankfurt"}

func pb(v bool) *bool           { return &v }
func pf(v float64) *float64     { return &v }
func pt(t time.Time) *time.Time { t = t.UTC(); return &t }

// siteStatus is an agent's view of the other two sites: per target site,
// sitelink prod (ICMP over IPv4 and IPv6, TCP 443), sitelink dev, mpls prod.
func siteStatus(site string, now time.Time) status.Status {
	st := status.Status{Site: site, Version: "test", Time: now, Started: pt(now.Add(-7 * time.Hour)), IntervalSeconds: 1}
	base := map[string]float64{"us-east": 0, "ap-tokyo": 0.1402, "eu-frankfurt": 0.0781}
	for i, dst := range sites {
		if dst == site {
			continue
		}
		rtt := base[dst] + base[site] + 0.0003*float64(i)
		n := i + 1
		add := func(addr, path, seg, proto string, rtt, loss float64) {
			t := status.Target{SourceSite: site, TargetSite: dst, Target: addr, Path: path, Segment: seg, Protocol: proto,
				Up: pb(true), Since: pt(now.Add(-3 * time.Hour)), Sent: 21600, Lost: uint64(loss * 21600),
				LossRatio: pf(loss), RTTMedianSeconds: pf(rtt), JitterSeconds: pf(rtt / 40)}
			if proto == "tcp" {
				t.Port = "443"
			}
			st.Targets = append(st.Targets, t)
		}
		add(fmt.Sprintf("10.77.%d.1", n), "sitelink", "prod", "icmp", rtt, 0)
		add(fmt.Sprintf("fd77:%d::1", n), "sitelink", "prod", "icmp", rtt+0.0002, 0)
		add(fmt.Sprintf("10.77.%d.1", n), "sitelink", "prod", "tcp", rtt+0.0011, 0)
		add(fmt.Sprintf("10.77.%d.65", n), "sitelink", "dev", "icmp", rtt+0.0001, 0.01)
		add(fmt.Sprintf("10.78.%d.1", n), "mpls", "prod", "icmp", rtt*1.18, 0.03)
	}
	st.Targets[0].Trace = &status.Trace{Hops: []string{"10.90.17.1", "10.90.17.9", st.Targets[0].Target},
		LastChange: pt(now.Add(-40 * time.Minute)), Changes: 1, Previous: []string{"10.90.17.1", "10.90.17.5", st.Targets[0].Target},
		MTUBytes: new(int), MTUBlackhole: pb(false)}
	*st.Targets[0].Trace.MTUBytes = 8500
	st.AWS = &status.AWS{
		Connections: []status.Connection{{ID: "dxcon-fh1k7x2q", Name: site + "-dx", Site: site, Region: "us-east-1", Location: "EqDC2",
			State: "available", Up: true, Since: pt(now.Add(-50 * time.Hour)),
			MACsec: &status.MACsec{EncryptionMode: "must_encrypt", Status: "Encryption Up", Up: true, Since: pt(now.Add(-20 * time.Hour))}}},
		VIFs: []status.VIF{
			{ID: "dxvif-fp1k7x2q", Name: "sitelink-prod", Site: site, Segment: "prod", ConnectionID: "dxcon-fh1k7x2q", State: "available", Up: true,
				Since: pt(now.Add(-50 * time.Hour)), BGPPeers: []status.BGPPeer{
					{ID: "dxpeer-fp14k7x2q", AddressFamily: "ipv4", PeerAddress: "169.254.10.1/30", Status: "up", Up: true, Since: pt(now.Add(-2 * time.Hour))},
					{ID: "dxpeer-fp16k7x2q", AddressFamily: "ipv6", PeerAddress: "fd00:10::1/125", Status: "down", Since: pt(now.Add(-10 * time.Minute))}}},
			{ID: "dxvif-fd1k7x2q", Name: "sitelink-dev", Site: site, Segment: "dev", ConnectionID: "dxcon-fh1k7x2q", State: "down",
				Since: pt(now.Add(-5 * time.Minute)), BGPPeers: []status.BGPPeer{
					{ID: "dxpeer-fd14k7x2q", AddressFamily: "ipv4", PeerAddress: "169.254.11.1/30", Status: "down", Since: pt(now.Add(-5 * time.Minute))}}},
		},
		Sources: []status.Source{{Name: "directconnect", Up: true, LastSuccess: pt(now.Add(-20 * time.Second))}},
	}
	if site != "us-east" {
		// Peers poll their own site's resources; give them other IDs.
		r := strings.NewReplacer("1k7x2q", map[string]string{"ap-tokyo": "5k7x2q", "eu-frankfurt": "7k7x2q"}[site])
		for i := range st.AWS.Connections {
			st.AWS.Connections[i].ID = r.Replace(st.AWS.Connections[i].ID)
		}
		for i := range st.AWS.VIFs {
			v := &st.AWS.VIFs[i]
			v.ID, v.ConnectionID = r.Replace(v.ID), r.Replace(v.ConnectionID)
			for k := range v.BGPPeers {
				v.BGPPeers[k].ID = r.Replace(v.BGPPeers[k].ID)
			}
		}
	}
	return st
}

// fillHistory gives every target of st six hours of minutes around its
// RTT, with a lossy quarter of an hour.
func fillHistory(h *history.Store, st status.Status, now time.Time) {
	for _, t := range st.Targets {
		sr := h.Add(history.Key{SourceSite: t.SourceSite, TargetSite: t.TargetSite, Target: t.Target, Path: t.Path,
			Segment: t.Segment, Protocol: t.Protocol, Port: t.Port})
		rtt := time.Duration(*t.RTTMedianSeconds * 1e9)
		for m := 6 * 60; m >= 0; m-- {
			minute := now.Add(-time.Duration(m) * time.Minute).Truncate(time.Minute)
			for s := 0; s < 60; s += 5 {
				at := minute.Add(time.Duration(s) * time.Second)
				if at.After(now) {
					break
				}
				if m > 100 && m < 115 && s%15 == 0 {
					sr.Lost(at)
					continue
				}
				sr.Observe(at, rtt-2*time.Millisecond+time.Duration((s*7+m)%13)*time.Millisecond)
			}
		}
	}
}

// serveTLS serves h over HTTPS with basic auth through exporter-toolkit, as
// the agent's --web.config.file does.
func serveTLS(t *testing.T, h http.Handler, user, password string) string {
	t.Helper()
	dir := t.TempDir()
	_, certFile, keyFile := testutil.WritePKI(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  %s: %s\n",
		certFile, keyFile, user, hash)), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	no := false
	flags := &web.FlagConfig{WebListenAddresses: &[]string{l.Addr().String()}, WebSystemdSocket: &no, WebConfigFile: &cfg}
	done := make(chan error, 1)
	go func() { done <- web.Serve(l, srv, flags, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return l.Addr().String()
}

// page is the console open in the test browser.
type page struct {
	t     *testing.T
	ctx   context.Context
	clog  *consoleLog
	shots string // file name prefix of the screenshots, in artifactDir
}

// openConsole captures the browser's console and opens url. The capture is
// proved first (a console.error of the page is seen, then forgotten), so a
// test's "no console errors" means something.
func openConsole(t *testing.T, ctx context.Context, url, name string) *page {
	t.Helper()
	pg := &page{t: t, ctx: ctx, clog: &consoleLog{},
		shots: filepath.Join(artifactDir(t), name+"-%s-"+time.Now().Format("20060102-150405")+".png")}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			pg.clog.mu.Lock()
			pg.clog.msgs = append(pg.clog.msgs, m)
			pg.clog.mu.Unlock()
		}
	}()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`console.error('harness check'), true`)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(pg.clog.errors()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a console.error of the page was not captured: the no-errors check would prove nothing")
		}
	}
	pg.clog.mu.Lock()
	pg.clog.msgs = nil
	pg.clog.mu.Unlock()
	return pg
}

// shot saves a screenshot of the page under artifactDir.
func (pg *page) shot(name string) {
	pg.t.Helper()
	b, err := chromedp.Run(pg.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		pg.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := fmt.Sprintf(pg.shots, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		pg.t.Error(err)
	}
	pg.t.Logf("screenshot: %s", p)
}

// waitFor polls a JavaScript condition in the page; a timeout fails the
// test with a screenshot, the console errors and the page's text. The
// condition is on state, the timeout generous (a busy 2-core machine).
func (pg *page) waitFor(what, cond string, timeout time.Duration) {
	pg.t.Helper()
	if _, err := chromedp.Run(pg.ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(timeout))); err != nil {
		pg.shot("failed")
		body, _ := chromedp.Run(pg.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 3000) : document.documentElement.outerHTML.slice(0, 3000)`))
		pg.t.Fatalf("waiting for %s: %v\nconsole errors: %v\npage: %s", what, err, pg.clog.errors(), body)
	}
}

// artifactDir is where screenshots go: $PROBED_ARTIFACTS, else a directory
// under the system's temporary directory (never the repository).
func artifactDir(t *testing.T) string {
	dir := os.Getenv("PROBED_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "probed-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser starts the Debian chromium headless with a fresh profile.
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := testutil.RequireTool(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("ignore-certificate-errors", true), // the test's self-signed certificate
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1800),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	return ctx
}

// consoleLog collects what the page writes to its console.
type consoleLog struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

func (c *consoleLog) errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			out = append(out, fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m.Text))
		}
	}
	return out
}

type entryInfo struct {
	Src, Dst, Path, Segment, State, RTT, Loss, Background string
}

const readEntries = `[...document.querySelectorAll('#matrix .entry')].map(e => ({
	src: e.dataset.src, dst: e.dataset.dst, path: e.dataset.path, segment: e.dataset.segment, state: e.dataset.state,
	rtt: (e.querySelector('.rtt') || {}).textContent || '', loss: (e.querySelector('.loss') || {}).textContent || '',
	background: getComputedStyle(e).backgroundColor}))`

// fmtRTT and fmtLoss are the page's formatting, for the expected values.
func fmtRTT(s *float64) string {
	if s == nil {
		return "–"
	}
	ms := *s * 1000
	switch {
	case ms < 1:
		return fmt.Sprintf("%.0f µs", ms*1000)
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func fmtLoss(r *float64) string {
	if r == nil {
		return "–"
	}
	p := *r * 100
	if p == 0 || p >= 10 {
		return fmt.Sprintf("%.0f%%", p)
	}
	return fmt.Sprintf("%.1f%%", p)
}

// TestConsoleInBrowser loads the console in a real headless Chromium from a
// server with TLS and basic auth, fed by fixed status providers for three
// sites, a real event journal and a real history store, and checks the page
// as a user sees it.
func TestConsoleInBrowser(t *testing.T) {
	ctx := browser(t)
	now := time.Now()

	// Three agents: this one (us-east) and two peers over plain HTTP.
	self := &fixture{st: siteStatus("us-east", now)}
	peers := map[string]*fixture{}
	var peerList []status.Peer
	peerSrv := map[string]*httptest.Server{}
	for _, s := range sites[1:] {
		peers[s] = &fixture{st: siteStatus(s, now)}
		srv := httptest.NewServer(status.Handler(peers[s], nil))
		t.Cleanup(srv.Close)
		peerSrv[s] = srv
		peerList = append(peerList, status.Peer{Site: s, URL: srv.URL + status.PathStatus})
	}
	j, err := events.Open(events.Options{Dir: filepath.Join(t.TempDir(), "events")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })
	tokyo := events.Probe("us-east", "ap-tokyo", "10.77.2.1", "sitelink", "prod", "icmp", "")
	pairEvents := []events.Event{
		events.NewPathChanged(now.Add(-40*time.Minute), tokyo, []string{"10.90.17.1", "10.90.17.5", "10.77.2.1"}, []string{"10.90.17.1", "10.90.17.9", "10.77.2.1"}),
		events.NewLatencyShift(now.Add(-39*time.Minute), tokyo, 131*time.Millisecond, 140*time.Millisecond, now.Add(-37*time.Minute)),
		events.NewTargetDown(now.Add(-3*time.Hour-5*time.Minute), tokyo, 3),
		events.NewTargetUp(now.Add(-3*time.Hour), tokyo, 5*time.Minute),
	}
	for _, e := range pairEvents {
		j.Emit(e)
	}
	j.Emit(events.NewBGPPeerChanged(now.Add(-10*time.Minute), events.Labels{Site: "us-east", Segment: "prod", VIFID: "dxvif-fp1k7x2q", BGPPeerID: "dxpeer-fp16k7x2q"}, "fd00:10::1/125", "up", "down"))
	j.Emit(events.NewAgentStarted(now.Add(-7*time.Hour), "us-east", "test"))
	hist := history.New(history.Options{})
	fillHistory(hist, self.st, now)

	mux := http.NewServeMux()
	Register(mux)
	j.Register(mux)
	mesh := status.NewMesh(status.MeshOptions{Site: "us-east", Self: self, Sites: sites, Peers: peerList, Timeout: 3 * time.Second})
	mesh.Register(mux)
	hist.Register(mux)
	addr := serveTLS(t, mux, "probed", "s3cret")

	// Basic auth: credentials in the URL, as a user types them once; the
	// page's own requests (fetch, EventSource) reuse them.
	pg := openConsole(t, ctx, "https://probed:s3cret@"+addr+"/", "console")

	// --- the matrix shows every pair with the providers' numbers.
	agents := []status.Agent{}
	for _, f := range []*fixture{self, peers["ap-tokyo"], peers["eu-frankfurt"]} {
		st, _ := f.Status(context.Background())
		agents = append(agents, status.Agent{Site: st.Site, State: "ok", Status: st})
	}
	want := status.Aggregate(sites, agents)
	pg.waitFor("every matrix entry", fmt.Sprintf(`document.querySelectorAll('#matrix .entry').length === %d`, len(want)), time.Minute)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]entryInfo](readEntries))
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]entryInfo{}
	for _, e := range got {
		byKey[e.Src+">"+e.Dst+" "+e.Path+"/"+e.Segment] = e
	}
	pairs := map[string]bool{}
	for _, c := range want {
		k := c.SourceSite + ">" + c.TargetSite + " " + c.Path + "/" + c.Segment
		e, ok := byKey[k]
		if !ok {
			t.Errorf("matrix lacks %s", k)
			continue
		}
		pairs[c.SourceSite+">"+c.TargetSite] = true
		if e.State != c.State || e.RTT != fmtRTT(c.RTTMedianSeconds) || e.Loss != fmtLoss(c.LossRatio) {
			t.Errorf("%s shows %s %q %q, provider says %s %q %q", k, e.State, e.RTT, e.Loss, c.State, fmtRTT(c.RTTMedianSeconds), fmtLoss(c.LossRatio))
		}
	}
	if len(pairs) != len(sites)*(len(sites)-1) {
		t.Errorf("%d site pairs in the matrix, want %d", len(pairs), len(sites)*(len(sites)-1))
	}

	// --- the console opens on the pair that most needs a look (the
	// lossiest: mpls), and a click on an entry of this agent's row opens
	// that pair's chart: band, median, loss bars, and the pair's four
	// events as markers.
	pg.waitFor("the first chart", `document.querySelectorAll('#chart svg path.median').length > 0`, time.Minute)
	if title, _ := chromedp.Run(ctx, chromedp.Text("#pair-title")); title != "us-east → ap-tokyo (mpls/prod)" {
		t.Errorf("opened on %q, want the lossiest pair", title)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#matrix .entry[data-src="us-east"][data-dst="ap-tokyo"][data-path="sitelink"][data-segment="prod"]`))); err != nil {
		t.Fatal(err)
	}
	pg.waitFor("the clicked pair's chart", `document.querySelector('#pair-title').textContent === 'us-east → ap-tokyo (sitelink/prod)' &&
		document.querySelectorAll('#chart svg').length === 3`, time.Minute)
	pg.waitFor("the chart", `document.querySelectorAll('#chart svg path.median').length > 0 &&
		document.querySelectorAll('#chart svg .band').length > 0 &&
		document.querySelectorAll('#chart svg rect.loss').length > 0 &&
		document.querySelectorAll('#chart svg g.event-mark').length > 0`, time.Minute)
	title, _ := chromedp.Run(ctx, chromedp.Text("#pair-title"))
	if title != "us-east → ap-tokyo (sitelink/prod)" {
		t.Errorf("selected pair %q", title)
	}
	marks, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelector('#chart svg').querySelectorAll('g.event-mark').length`))
	if marks != len(pairEvents) {
		t.Errorf("%d event markers on the chart, want %d", marks, len(pairEvents))
	}
	svgs, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#chart svg').length`))
	if svgs != 3 { // ICMP v4, ICMP v6 and TCP 443 of sitelink/prod
		t.Errorf("%d charts for the pair, want 3", svgs)
	}
	pathText, _ := chromedp.Run(ctx, chromedp.Text("#pair-path"))
	if !strings.Contains(pathText, "10.90.17.1 → 10.90.17.9 → 10.77.2.1") || !strings.Contains(pathText, "40m") {
		t.Errorf("current path and its last change not shown: %q", pathText)
	}
	pg.waitFor("the pair's events", fmt.Sprintf(`document.querySelectorAll('#pair-events li.event').length === %d`, len(pairEvents)), time.Minute)

	// --- the AWS side.
	pg.waitFor("the AWS tables", `document.querySelectorAll('#aws-connections tbody tr').length === 3 &&
		document.querySelectorAll('#aws-vifs tbody tr').length === 9`, time.Minute)
	bgpDown, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#aws-vifs tr[data-peer="dxpeer-fp16k7x2q"] td.state-cell.down').textContent`))
	if !strings.HasPrefix(bgpDown, "down") || !strings.Contains(bgpDown, "10m") {
		t.Errorf("BGP peer down 10 minutes: %q", bgpDown)
	}

	// --- the timeline: the stored events, then a live one over SSE.
	pg.waitFor("the timeline", `document.querySelectorAll('#timeline li.event').length === 6 &&
		document.querySelector('#stream').textContent === 'live'`, time.Minute)
	live := events.NewMACsecChanged(time.Now(), events.Labels{Site: "us-east", ConnectionID: "dxcon-fh1k7x2q"}, "must_encrypt", false, "Encryption Down")
	j.Emit(live)
	pg.waitFor("the live event", fmt.Sprintf(`[...document.querySelectorAll('#timeline li.event[data-kind="macsec_changed"] .summary')].some(e => e.textContent === %q)`, live.Summary), time.Minute)
	// The latency shift lists the path change a minute before it (the BGP
	// change 29 minutes later is outside the window).
	related, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#timeline li.event[data-kind="latency_shift"] details li')].map(e => e.textContent).join('\n')`))
	if !strings.Contains(related, "path_changed") || strings.Count(related, "\n") != 0 {
		t.Errorf("latency shift lists %q, want the path change", related)
	}
	pg.shot("loaded")

	// --- a pair marked down by the provider turns its cell red.
	self.update(func(st *status.Status) {
		for i := range st.Targets {
			if t := &st.Targets[i]; t.TargetSite == "ap-tokyo" && t.Path == "sitelink" && t.Segment == "prod" {
				t.Up = pb(false)
				t.LossRatio = pf(1)
			}
		}
	})
	down := `document.querySelector('#matrix .entry[data-src="us-east"][data-dst="ap-tokyo"][data-path="sitelink"][data-segment="prod"]')`
	pg.waitFor("the cell to turn red", down+`.dataset.state === 'down' && getComputedStyle(`+down+`).backgroundColor === 'rgb(198, 40, 40)'`, time.Minute)
	others, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#matrix .entry.state-down').length`))
	if others != 1 {
		t.Errorf("%d red cells, want 1", others)
	}
	pg.shot("down")

	// --- a peer that cannot be reached shows as unknown, not down.
	peerSrv["eu-frankfurt"].Close()
	pg.waitFor("the unreachable peer's row to read unknown", `(() => {
		const es = [...document.querySelectorAll('#matrix .entry[data-src="eu-frankfurt"]')];
		return es.length === 2 && es.every(e => e.dataset.state === 'unknown') &&
			document.querySelector('#matrix tr[data-src="eu-frankfurt"] .agent-state.unknown') !== null;
	})()`, time.Minute)
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#matrix .entry.state-down').length`)); n != 1 {
		t.Errorf("an unreachable peer made %d cells red", n-1)
	}
	pg.shot("peer-unknown")

	if errs := pg.clog.errors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestConsoleNeedsCredentials: without credentials the page and its APIs
// answer 401 (the console adds no way around the agent's auth).
func TestConsoleNeedsCredentials(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	addr := serveTLS(t, mux, "probed", "s3cret")
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	for _, p := range []string{"/", "/console/console.js"} {
		resp, err := c.Get("https://" + addr + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d", p, resp.StatusCode)
		}
	}
}

func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} // the test's self-signed certificate
}
