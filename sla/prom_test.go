package sla

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// requireTool finds a Debian binary the test needs: CI installs it (.ci/run),
// so there a missing one fails; on a developer machine the test skips.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI installs it in .ci/run): %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

// monthBlocks builds the planted month's TSDB blocks once per test binary.
var monthBlocks struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if monthBlocks.dir != "" && monthBlocks.dir != os.Getenv("PROBED_SLA_TSDB") {
		os.RemoveAll(monthBlocks.dir)
	}
	os.Exit(code)
}

// blocksDir returns the directory holding the planted month as TSDB blocks
// (generated OpenMetrics → promtool tsdb create-blocks-from openmetrics).
func blocksDir(t testing.TB) string {
	t.Helper()
	promtool := requireTool(t, "promtool")
	monthBlocks.once.Do(func() {
		// PROBED_SLA_TSDB names a directory to keep the blocks in between
		// runs while working on this package (never set in CI).
		if keep := os.Getenv("PROBED_SLA_TSDB"); keep != "" {
			if _, err := os.Stat(filepath.Join(keep, "blocks")); err == nil {
				monthBlocks.dir = keep
				return
			}
			monthBlocks.err = buildBlocks(promtool, keep)
			monthBlocks.dir = keep
			return
		}
		dir, err := os.MkdirTemp("", "probed-sla-tsdb-")
		if err != nil {
			monthBlocks.err = err
			return
		}
		monthBlocks.dir = dir
		monthBlocks.err = buildBlocks(promtool, dir)
	})
	if monthBlocks.err != nil {
		t.Fatalf("building the planted TSDB: %v", monthBlocks.err)
	}
	return filepath.Join(monthBlocks.dir, "blocks")
}

func buildBlocks(promtool, dir string) error {
	start := time.Now()
	omDir := filepath.Join(dir, "om")
	if err := os.MkdirAll(omDir, 0o755); err != nil {
		return err
	}
	files, err := writeOpenMetrics(omDir)
	if err != nil {
		return err
	}
	gen := time.Since(start)
	out := filepath.Join(dir, "blocks")
	// Two promtool runs at a time: the machine has two cores.
	sem := make(chan struct{}, 2)
	errs := make(chan error, len(files))
	var wg sync.WaitGroup
	for _, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			b, err := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", f, out).CombinedOutput()
			if err != nil {
				errs <- fmt.Errorf("promtool on %s: %v: %s", f, err, b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "planted TSDB: generated %d OpenMetrics files in %s, blocks in %s total\n", len(files), gen.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return os.RemoveAll(omDir)
}

// promServer is a Debian prometheus serving a copy of the planted blocks.
type promServer struct {
	url  string
	addr string
}

// startPrometheus runs /usr/bin/prometheus on a free loopback port with no
// scrape jobs over a copy of the blocks; webConfig (optional) turns on TLS
// and basic auth. hc is used to wait until it is ready.
func startPrometheus(t *testing.T, blocks, webConfig string, hc *http.Client) *promServer {
	t.Helper()
	bin := requireTool(t, "prometheus")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if b, err := exec.Command("cp", "-a", blocks, data).CombinedOutput(); err != nil {
		t.Fatalf("copying blocks: %v: %s", err, b)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\nscrape_configs: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	args := []string{
		"--config.file=" + cfg, "--storage.tsdb.path=" + data,
		// Retention counts back from the newest block, not from today,
		// but keep it long anyway so nothing planted is ever deleted.
		"--storage.tsdb.retention.time=100y",
		// Two-hour blocks only: no compaction churning the shared CPU.
		"--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h",
		"--web.listen-address=" + addr, "--log.level=warn",
	}
	scheme := "http"
	if webConfig != "" {
		args = append(args, "--web.config.file="+webConfig)
		if strings.Contains(mustRead(t, webConfig), "tls_server_config") {
			scheme = "https"
		}
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	s := &promServer{url: scheme + "://" + addr, addr: addr}
	if hc == nil {
		hc = http.DefaultClient
	}
	// A loaded 2-core machine can take a while to open a month of blocks.
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("prometheus exited early: %s", mustRead(t, logf.Name()))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/-/ready", nil)
		resp, err := hc.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus at %s not ready after 90s (last error %v): %s", s.url, err, mustRead(t, logf.Name()))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func mustRead(t testing.TB, f string) string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
