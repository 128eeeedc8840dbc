package console

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/crypto/bcrypt"

	"github.com/probed/probed/internal/awstest"
	"github.com/probed/probed/internal/netlab"
	"github.com/probed/probed/internal/testutil"
)

// labInterval is the probe interval of the browser lab: a probe every 2 s,
// lost after 500 ms, down at the first loss (down_after: 1), so an outage
// shows on the matrix within two intervals of its first lost probe: the
// timeout, then at most one console refresh (half an interval, at least
// 1 s) and the mesh view's 1 s cache.
const labInterval = 2 * time.Second

const labMesh = `probe:
  interval: 2s
  timeout: 500ms
  down_after: 1
sites:
  - name: us-east
    region: us-east-1
    location: EqDC2
    agent: 10.78.1.1
    targets:
      - {address: 10.77.1.1, path: sitelink, segment: prod, mtu: false}
      - {address: 10.78.1.1, path: mpls, segment: prod}
  - name: us-central
    region: us-east-2
    location: EqDA2
    agent: 10.78.2.1
    targets:
      - {address: 10.77.2.1, path: sitelink, segment: prod, trace: true, mtu: false}
      - {address: 10.78.2.1, path: mpls, segment: prod}
  - name: us-west
    region: us-west-1
    location: EqSV5
    agent: 10.78.3.1
    targets:
      - {address: 10.77.3.1, path: sitelink, segment: prod, mtu: false}
      - {address: 10.78.3.1, path: mpls, segment: prod}
aws:
  interval: 10s
  timeout: 5s
  cloudwatch: false
  nsm: false
`

var labSites = []string{"us-east", "us-central", "us-west"}

// buildProbed builds ./cmd/probed into dir.
func buildProbed(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probed")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/probed")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/probed: %v: %s", err, b)
	}
	return bin
}

// labAgent is one probed of the browser lab.
type labAgent struct {
	site   *netlab.Site
	base   string // https://10.78.n.1:9447
	client *http.Client
	log    string
	done   chan struct{}
}

func (a *labAgent) get(path string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, a.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("probed", "s3cret")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b, err
}

// metricsKey is one probe series: source>target path/segment of an ICMP
// target (the lab has one per matrix entry).
type metricsKey = string

// labScrape is what /metrics says of every ICMP series of one agent.
type labScrape struct {
	up, loss, sum, count map[metricsKey]float64
}

func (a *labAgent) scrape() (labScrape, error) {
	s := labScrape{up: map[string]float64{}, loss: map[string]float64{}, sum: map[string]float64{}, count: map[string]float64{}}
	b, err := a.get("/metrics")
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var m map[string]float64
		switch {
		case strings.HasPrefix(line, "probed_target_up{"):
			m = s.up
		case strings.HasPrefix(line, "probed_loss_ratio{"):
			m = s.loss
		case strings.HasPrefix(line, "probed_rtt_seconds_sum{"):
			m = s.sum
		case strings.HasPrefix(line, "probed_rtt_seconds_count{"):
			m = s.count
		default:
			continue
		}
		if !strings.Contains(line, `protocol="icmp"`) {
			continue
		}
		l := map[string]string{}
		open, end := strings.IndexByte(line, '{'), strings.LastIndexByte(line, '}')
		for _, kv := range strings.Split(line[open+1:end], ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			return s, fmt.Errorf("%q: %w", line, err)
		}
		m[l["source_site"]+">"+l["target_site"]+" "+l["path"]+"/"+l["segment"]] = v
	}
	return s, sc.Err()
}

// nativeHist is one series' native RTT histogram: bucket index -> count.
type nativeHist struct {
	schema int32
	zero   uint64
	count  uint64
	b      map[int32]int64
}

// natives reads /metrics as protobuf: the native RTT histogram of every
// ICMP series.
func (a *labAgent) natives() (map[string]nativeHist, error) {
	req, err := http.NewRequest(http.MethodGet, a.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("probed", "s3cret")
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
	out := map[string]nativeHist{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		if mf.GetName() != "probed_rtt_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			h := m.GetHistogram()
			if l["protocol"] != "icmp" {
				continue
			}
			nh := nativeHist{schema: h.GetSchema(), zero: h.GetZeroCount(), count: h.GetSampleCount(), b: map[int32]int64{}}
			idx, count, di := int32(0), int64(0), 0
			for _, sp := range h.GetPositiveSpan() {
				idx += sp.GetOffset()
				for j := uint32(0); j < sp.GetLength(); j++ {
					count += h.GetPositiveDelta()[di]
					di++
					nh.b[idx] = count
					idx++
				}
			}
			out[l["source_site"]+">"+l["target_site"]+" "+l["path"]+"/"+l["segment"]] = nh
		}
	}
	return out, nil
}

// medianBucket is the bounds of the bucket holding the median of the
// observations between two scrapes of a native histogram (n of them).
func medianBucket(before, after nativeHist) (lo, hi float64, n uint64) {
	n = after.count - before.count
	idx := make([]int32, 0, len(after.b))
	for i := range after.b {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	base := math.Pow(2, math.Pow(2, -float64(after.schema)))
	cum := float64(after.zero - before.zero)
	for _, i := range idx {
		cum += float64(after.b[i] - before.b[i])
		if cum >= float64(n)/2 {
			return math.Pow(base, float64(i-1)), math.Pow(base, float64(i)), n
		}
	}
	return 0, 0, n
}

// TestConsoleLab loads the console of a real agent — in the WAN lab, behind
// TLS and basic auth, with two peers fetched over HTTPS with credentials
// (--peers.scheme, --peers.http-config.file) and the AWS test server —
// in headless Chromium: no console errors; every pair of the 3-site mesh in
// the matrix with the state, loss and median RTT that the agents' /metrics
// show; an outage's cell red within two probe intervals of its first lost
// probe; the chart, the path and the timeline drawn.
func TestConsoleLab(t *testing.T) {
	ctx := browser(t)
	topo, err := netlab.DefaultTopology().Subset(labSites...)
	if err != nil {
		t.Fatal(err)
	}
	lab := netlab.StartT(t, topo)
	dir := t.TempDir()
	bin := buildProbed(t, dir)
	mesh := filepath.Join(dir, "mesh.yaml")
	caFile, certFile, keyFile := testutil.WritePKI(t, dir, "10.78.1.1", "10.78.2.1", "10.78.3.1", "127.0.0.1")
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webCfg, peerCfg := filepath.Join(dir, "web.yml"), filepath.Join(dir, "peers.yml")
	for f, body := range map[string]string{
		mesh:    labMesh,
		webCfg:  fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  probed: %s\n", certFile, keyFile, hash),
		peerCfg: fmt.Sprintf("basic_auth:\n  username: probed\n  password: s3cret\ntls_config:\n  ca_file: %s\n", caFile),
	} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	aws := awstest.New(nil)
	for _, s := range lab.Sites() {
		ln, err := s.Listen("tcp", "127.0.0.1:4599")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: aws, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { hs.Close() })
	}
	env := []string{"AWS_ENDPOINT_URL=http://127.0.0.1:4599", "AWS_ACCESS_KEY_ID=AKIDCONSOLELAB", "AWS_SECRET_ACCESS_KEY=console-lab",
		"AWS_SESSION_TOKEN=", "AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(caFile); err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("CA: %v", err)
	}
	agents := map[string]*labAgent{}
	for _, s := range lab.Sites() {
		addr, _ := s.Addr(netlab.PathMPLS, false)
		listen := fmt.Sprintf("%s:9447", addr)
		logFile := filepath.Join(dir, s.Name()+".log")
		lf, err := os.Create(logFile)
		if err != nil {
			t.Fatal(err)
		}
		cmd := s.Command(context.Background(), bin, "--config.file="+mesh, "--site="+s.Name(), "--web.listen-address="+listen,
			"--web.config.file="+webCfg, "--peers.scheme=https", "--peers.http-config.file="+peerCfg,
			"--storage.path="+filepath.Join(dir, s.Name()), "--log.level=warn")
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.Env = append(os.Environ(), env...)
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		a := &labAgent{site: s, base: "https://" + listen, log: logFile, done: make(chan struct{}),
			client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: s.DialContext,
				TLSClientConfig: &tls.Config{RootCAs: pool}}}}
		go func() { _ = cmd.Wait(); lf.Close(); close(a.done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-a.done
			if t.Failed() {
				b, _ := os.ReadFile(logFile)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("probed log of %s:\n%s", s.Name(), b)
			}
		})
		agents[s.Name()] = a
	}
	east := agents["us-east"]
	fctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ln, err := lab.Site("us-east").Forward(fctx, "127.0.0.1:0", "10.78.1.1:9447")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()

	// Every agent answers and every target has a few answers (the medians
	// of the current minute).
	waitLab := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(timeout); !cond(); time.Sleep(200 * time.Millisecond) {
			for name, a := range agents {
				select {
				case <-a.done:
					t.Fatalf("probed in %s exited", name)
				default:
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, timeout)
			}
		}
	}
	waitLab("every target answered 4 times", 60*time.Second, func() bool {
		for _, a := range agents {
			s, err := a.scrape()
			if err != nil || len(s.count) != 4 {
				return false
			}
			for _, n := range s.count {
				if n < 4 {
					return false
				}
			}
		}
		return true
	})

	pg := openConsole(t, ctx, "https://probed:s3cret@"+host+"/", "console-lab")

	// --- The matrix: 3 sites × 2 others × 2 paths, all up, with the
	// numbers of /metrics: probed_target_up and probed_loss_ratio exactly;
	// the median RTT — the median of the current minute's answers — within
	// a bucket of probed_rtt_seconds's native histogram (1.09 % wide,
	// schema 6) of the median of the same minute's observations: the
	// difference of two protobuf scrapes, one at the minute's start and one
	// when the page is read.
	const entries = 12
	pg.waitFor("every matrix entry up with an RTT", fmt.Sprintf(`(() => { const es = [...document.querySelectorAll('#matrix .entry')];
		return es.length === %d && es.every(e => e.dataset.state === 'up' && /ms/.test(e.querySelector('.rtt').textContent)); })()`, entries), 60*time.Second)
	scrapeNatives := func() map[string]nativeHist {
		t.Helper()
		all := map[string]nativeHist{}
		for _, a := range agents {
			m, err := a.natives()
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range m {
				all[k] = v
			}
		}
		return all
	}
	// History minutes are wall-clock minutes of the send time: start just
	// after one begins (when the replies of the probes sent before it are
	// in: the largest RTT of the lab is about 70 ms).
	minute := time.Now().Truncate(time.Minute).Add(time.Minute)
	time.Sleep(time.Until(minute.Add(80 * time.Millisecond)))
	atStart := scrapeNatives()
	time.Sleep(time.Until(minute.Add(20 * time.Second)))
	atEnd := scrapeNatives()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]entryInfo](readEntries))
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]labScrape{}
	for name, a := range agents {
		if last[name], err = a.scrape(); err != nil {
			t.Fatal(err)
		}
	}
	pairs := map[string]bool{}
	for _, e := range got {
		k := e.Src + ">" + e.Dst + " " + e.Path + "/" + e.Segment
		pairs[e.Src+">"+e.Dst] = true
		m := last[e.Src]
		up, ok := m.up[k]
		if !ok {
			t.Errorf("the matrix shows %s, which /metrics of %s does not have", k, e.Src)
			continue
		}
		if state := map[float64]string{1: "up", 0: "down"}[up]; e.State != state {
			t.Errorf("%s: state %s, /metrics probed_target_up %v", k, e.State, up)
		}
		loss := m.loss[k]
		if e.Loss != fmtLoss(&loss) {
			t.Errorf("%s: loss %q, /metrics probed_loss_ratio %v (%q)", k, e.Loss, loss, fmtLoss(&loss))
		}
		shown, err := strconv.ParseFloat(strings.TrimSuffix(e.RTT, " ms"), 64)
		lo, hi, n := medianBucket(atStart[k], atEnd[k])
		if err != nil || n < 5 {
			t.Errorf("%s: RTT %q, %d RTTs in /metrics this minute", k, e.RTT, n)
			continue
		}
		// The bucket, one either side (the page's view may miss or
		// add the newest probe), and the page's rounding (0.05 ms).
		const growth = 1.0109
		if shown < lo*1000/growth-0.05 || shown > hi*1000*growth+0.05 {
			t.Errorf("%s: median RTT %s, /metrics' median of the minute's %d in (%.3f, %.3f] ms", k, e.RTT, n, lo*1000, hi*1000)
		}
	}
	if len(got) != entries || len(pairs) != 6 {
		t.Errorf("%d entries over %d pairs, want %d over 6", len(got), len(pairs), entries)
	}

	// --- The chart of a pair, its current path, the AWS side and the
	// timeline.
	sel := `#matrix .entry[data-src="us-east"][data-dst="us-central"][data-path="sitelink"][data-segment="prod"]`
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatal(err)
	}
	pg.waitFor("the pair's chart", `document.querySelector('#pair-title').textContent === 'us-east → us-central (sitelink/prod)' &&
		document.querySelectorAll('#chart svg path.median').length > 0 && document.querySelectorAll('#chart svg .band').length > 0`, 60*time.Second)
	pg.waitFor("the pair's current path", `/10\.77\.2\.1/.test(document.querySelector('#pair-path').textContent)`, 60*time.Second)
	pg.waitFor("the AWS tables", `document.querySelectorAll('#aws-connections tbody tr').length === 3 &&
		document.querySelector('#aws-vifs tr[data-peer="dxpeer-fp14k7x2q"]') !== null`, 60*time.Second)
	pg.waitFor("the live timeline", `document.querySelector('#stream').textContent === 'live' &&
		document.querySelector('#timeline li.event[data-kind="agent_started"]') !== null`, 60*time.Second)
	pg.shot("loaded")

	// --- An outage of us-east -> us-central sitelink: us-east's probes and
	// us-central's replies are dropped, so both directions' entries turn
	// red, and no other.
	outAt := time.Now()
	if err := lab.UpdatePath("us-east", "us-central", netlab.PathSiteLink, func(p *netlab.PathParams) { p.Down = true }); err != nil {
		t.Fatal(err)
	}
	pg.waitFor("the outage's cell to turn red", `document.querySelector('`+sel+`') !== null && document.querySelector('`+sel+`').dataset.state === 'down' &&
		getComputedStyle(document.querySelector('`+sel+`')).backgroundColor === 'rgb(198, 40, 40)'`, 30*time.Second)
	redAt := time.Now()
	var r struct {
		Events []struct {
			Time time.Time `json:"time"`
		} `json:"events"`
	}
	b, err := east.get("/api/v1/events?kind=target_down&target=10.77.2.1&related=false")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil || len(r.Events) != 1 {
		t.Fatalf("target_down of the outage: %v %s", err, b)
	}
	firstLost := r.Events[0].Time
	t.Logf("outage: first lost probe %.2fs after the injection, cell red %.2fs after it (%.2fs after the injection)",
		firstLost.Sub(outAt).Seconds(), redAt.Sub(firstLost).Seconds(), redAt.Sub(outAt).Seconds())
	if d := redAt.Sub(firstLost); d > 2*labInterval {
		t.Errorf("the cell turned red %v after the outage's first lost probe, want within 2 probe intervals (%v)", d, 2*labInterval)
	}
	reverse := `#matrix .entry[data-src="us-central"][data-dst="us-east"][data-path="sitelink"][data-segment="prod"]`
	pg.waitFor("the reverse direction red too", `document.querySelector('`+reverse+`').dataset.state === 'down'`, 30*time.Second)
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#matrix .entry.state-down').length`)); n != 2 {
		t.Errorf("%d red entries, want the outage's 2", n)
	}
	pg.waitFor("the outage in the timeline", `document.querySelector('#timeline li.event[data-kind="target_down"]') !== null`, 30*time.Second)
	pg.shot("outage")

	if errs := pg.clog.errors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
