// Package slatest runs the real Prometheus tools for tests of SLA reports:
// promtool to turn OpenMetrics text into TSDB blocks, and the Debian
// prometheus binary to serve them on a loopback port.
package slatest

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

	"github.com/probed/probed/internal/testutil"
)

// RequireTool finds a Debian binary the test needs: CI installs it
// (.ci/run), so there a missing one fails; elsewhere the test skips.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	return testutil.RequireTool(t, name, debianPackage(name))
}

// debianPackage names the package that installs a tool the tests use.
func debianPackage(name string) string {
	if name == "promtool" {
		return "prometheus"
	}
	return name
}

// CreateBlocks runs `promtool tsdb create-blocks-from openmetrics` on each
// file into out, two at a time (the machine has two cores).
func CreateBlocks(promtool string, files []string, out string) error {
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
	return <-errs
}

// Prometheus is a running Debian prometheus.
type Prometheus struct {
	URL  string // http(s)://127.0.0.1:port
	Addr string // 127.0.0.1:port
}

// StartPrometheus runs /usr/bin/prometheus on a free loopback port with no
// scrape jobs over a copy of blocks; webConfig (optional) turns on TLS and
// basic auth, and hc (optional) is the client that can pass them. It is
// stopped when the test ends.
func StartPrometheus(t *testing.T, blocks, webConfig string, hc *http.Client) *Prometheus {
	t.Helper()
	bin := RequireTool(t, "prometheus")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if b, err := exec.Command("cp", "-a", blocks, data).CombinedOutput(); err != nil {
		t.Fatalf("copying blocks: %v: %s", err, b)
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\nscrape_configs: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
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
		b, err := os.ReadFile(webConfig)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "tls_server_config") {
			scheme = "https"
		}
	}
	logFile := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	p := &Prometheus{URL: scheme + "://" + addr, Addr: addr}
	if hc == nil {
		hc = http.DefaultClient
	}
	readLog := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	// A loaded 2-core machine can take a while to open a month of blocks.
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("prometheus exited early: %s", readLog())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/-/ready", nil)
		resp, err := hc.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus at %s not ready after 90s (last error %v): %s", p.URL, err, readLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address with a port nothing listens on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
