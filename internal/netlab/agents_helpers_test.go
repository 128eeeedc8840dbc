package netlab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The agent tests run the real probed binary, one per site namespace, all
// loading the same mesh file.

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// TestMain removes the probed binary the agent tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildBin != "" {
		os.RemoveAll(filepath.Dir(buildBin))
	}
	os.Exit(code)
}

// probedBinary builds ./cmd/probed once per test process.
func probedBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "netlab-probed-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "probed")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/probed")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/probed: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// meshTarget is one target line of a generated mesh file.
type meshTarget struct {
	addr, path, segment string
	tcp                 bool
}

// writeMesh writes a mesh file for the lab's sites, each with the targets
// pick returns for it.
func writeMesh(t testing.TB, lab *Lab, interval, timeout time.Duration, downAfter int, pick func(s *Site) []meshTarget) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "probe:\n  interval: %s\n  timeout: %s\n  down_after: %d\n  loss_window: 100\nsites:\n", interval, timeout, downAfter)
	for _, s := range lab.Sites() {
		agent, _ := s.Addr(PathSiteLink, false)
		fmt.Fprintf(&b, "  - name: %s\n    agent: %s\n    targets:\n", s.Name(), agent)
		for _, tg := range pick(s) {
			fmt.Fprintf(&b, "      - address: %q\n        path: %s\n        segment: %s\n", tg.addr, tg.path, tg.segment)
			if tg.tcp {
				b.WriteString("        tcp_ports: [443]\n")
			}
		}
	}
	file := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// agent is one running probed.
type agent struct {
	site   *Site
	client *http.Client // keeps its connection: no dial (and thread) per scrape
	url    string
	log    string
	done   chan struct{} // closed when the process exited
}

func logTail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// startAgents starts one probed per site, listening on the site's first
// sitelink address, and stops them when the test ends.
func startAgents(t testing.TB, lab *Lab, mesh string) map[string]*agent {
	t.Helper()
	bin := probedBinary(t)
	agents := map[string]*agent{}
	logDir := t.TempDir()
	for _, s := range lab.Sites() {
		addr, _ := s.Addr(PathSiteLink, false)
		listen := fmt.Sprintf("%s:9447", addr)
		logFile := filepath.Join(logDir, s.Name()+".log")
		lf, err := os.Create(logFile)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cmd := s.Command(ctx, bin, "--config.file="+mesh, "--site="+s.Name(), "--web.listen-address="+listen, "--log.level=warn",
			"--storage.path="+filepath.Join(logDir, s.Name()))
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatalf("starting probed in %s: %v", s.Name(), err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); lf.Close(); close(done) }()
		t.Cleanup(func() {
			cancel()
			<-done
			if t.Failed() {
				t.Logf("probed log of %s (tail):\n%s", s.Name(), logTail(logFile))
			}
		})
		agents[s.Name()] = &agent{site: s, client: s.keepAliveClient(), url: "http://" + listen + "/metrics", log: logFile, done: done}
	}
	return agents
}

// sample is one series of a scrape.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func (s sample) l(k string) string { return s.labels[k] }

// scrape reads the agent's /metrics (text format).
func (a *agent) scrape() ([]sample, error) {
	resp, err := a.client.Get(a.url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("scraping %s: %s: %s", a.url, resp.Status, b)
	}
	return parseText(resp.Body)
}

// parseText is a minimal reader of the Prometheus text format: enough for
// probed's output (no escaped quotes in label values).
func parseText(r io.Reader) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// parseLine reads one sample line.
func parseLine(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	var rest string
	if i := strings.IndexByte(line, '{'); i >= 0 {
		s.name = line[:i]
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return s, fmt.Errorf("bad line %q", line)
		}
		for _, kv := range splitLabels(line[i+1 : j]) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return s, fmt.Errorf("bad label %q in %q", kv, line)
			}
			s.labels[k] = strings.Trim(v, `"`)
		}
		rest = strings.TrimSpace(line[j+1:])
	} else {
		f := strings.Fields(line)
		s.name, rest = f[0], strings.Join(f[1:], " ")
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return s, fmt.Errorf("no value in %q", line)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, fmt.Errorf("value in %q: %w", line, err)
	}
	s.value = v
	return s, nil
}

func splitLabels(s string) []string {
	var out []string
	inQ, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inQ = !inQ
		case ',':
			if !inQ {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// seriesKey identifies a probe series across scrapes.
type seriesKey struct {
	src, dstSite, target, path, protocol string
}

func keyOf(s sample) seriesKey {
	return seriesKey{s.l("source_site"), s.l("target_site"), s.l("target"), s.l("path"), s.l("protocol")}
}

// values picks one metric per series from a scrape.
func values(ss []sample, name string) map[seriesKey]float64 {
	out := map[seriesKey]float64{}
	for _, s := range ss {
		if s.name == name {
			out[keyOf(s)] = s.value
		}
	}
	return out
}

// scrapeAll scrapes every agent and merges the series.
func scrapeAll(t testing.TB, agents map[string]*agent) []sample {
	t.Helper()
	var all []sample
	for name, a := range agents {
		ss, err := a.scrape()
		if err != nil {
			t.Fatalf("scraping the %s agent: %v", name, err)
		}
		all = append(all, ss...)
	}
	return all
}

// waitAgents waits until every agent answers /metrics and reports cond.
func waitAgents(t testing.TB, agents map[string]*agent, timeout time.Duration, what string, cond func([]sample) bool) []sample {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		var all []sample
		ok := true
		for name, a := range agents {
			select {
			case <-a.done:
				t.Fatalf("the %s agent exited:\n%s", name, logTail(a.log))
			default:
			}
			ss, err := a.scrape()
			if err != nil {
				lastErr, ok = err, false
				break
			}
			all = append(all, ss...)
		}
		if ok && cond(all) {
			return all
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("agents: %s not reached within %v (last error: %v)", what, timeout, lastErr)
	return nil
}

func ms(d float64) string { return strconv.FormatFloat(d*1000, 'f', 3, 64) }

// rttSamples recovers (nearly) individual RTTs from probed's histogram:
// scraping each agent (one goroutine per agent) twice per probe interval,
// a series whose _count grew by n >= 1 since the previous scrape
// contributes the mean of those n probes, its _sum growth / n; n is 1 when
// the scrapes keep pace and a few when a loaded machine slows them. The
// median of these small-group means is the median RTT for all practical
// purposes (an outlier spoils one group only), where the histogram's
// buckets would be far too coarse for a 0.3 ms check.
func rttSamples(t testing.TB, agents map[string]*agent, dur, interval time.Duration) map[seriesKey][]float64 {
	t.Helper()
	type sc struct{ sum, count float64 }
	var mu sync.Mutex
	out := map[seriesKey][]float64{}
	errc := make(chan error, len(agents))
	var wg sync.WaitGroup
	for name, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prev := map[seriesKey]sc{}
			client := a.site.keepAliveClient()
			deadline := time.Now().Add(dur)
			for next := time.Now(); time.Now().Before(deadline); next = next.Add(interval / 2) {
				time.Sleep(time.Until(next))
				resp, err := client.Get(a.url)
				if err != nil {
					errc <- fmt.Errorf("scraping the %s agent: %w", name, err)
					return
				}
				cur := map[seriesKey]sc{}
				s := bufio.NewScanner(resp.Body)
				s.Buffer(make([]byte, 64<<10), 1<<20)
				for s.Scan() {
					b := s.Bytes()
					isSum := bytes.HasPrefix(b, []byte("probed_rtt_seconds_sum{"))
					if !isSum && !bytes.HasPrefix(b, []byte("probed_rtt_seconds_count{")) {
						continue
					}
					line := string(b)
					smp, err := parseLine(line)
					if err != nil {
						errc <- err
						resp.Body.Close()
						return
					}
					k := keyOf(smp)
					v := cur[k]
					if isSum {
						v.sum = smp.value
					} else {
						v.count = smp.value
					}
					cur[k] = v
				}
				resp.Body.Close()
				mu.Lock()
				for k, v := range cur {
					if p, ok := prev[k]; ok && v.count > p.count {
						out[k] = append(out[k], (v.sum-p.sum)/(v.count-p.count))
					}
					prev[k] = v
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return out
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return math.NaN()
	}
	return s[len(s)/2]
}

// keepAliveClient is HTTPClient with connection reuse, for frequent scrapes.
func (s *Site) keepAliveClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: s.DialContext, MaxIdleConnsPerHost: 2, DisableCompression: true}}
}
