package agent

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/probed/probed/exporter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap/zaptest"
)

// testAgent is an agent running in the test process.
type testAgent struct {
	*Agent
	reg  *prometheus.Registry
	mux  *http.ServeMux
	file string
	ctx  context.Context
}

// launchAgent loads yaml and runs an agent behind the daemon's HTTP mux
// (the endpoints Mount adds, /metrics and /-/ready). stop cancels it, waits
// for Run and returns Run's error; later calls return nil.
func launchAgent(t *testing.T, yaml string, o Options) (ta *testAgent, stop func() error) {
	t.Helper()
	ta = &testAgent{reg: prometheus.NewPedanticRegistry(), file: filepath.Join(t.TempDir(), "mesh.yaml")}
	ta.write(t, yaml)
	o.ConfigFile, o.Registry = ta.file, ta.reg
	if o.Log == nil {
		o.Log = zaptest.NewLogger(t)
	}
	ta.Agent = New(o)
	ta.mux = exporter.NewServer(ta.reg, ta.Metrics, o.Log, nil, exporter.ServerOptions{Ready: ta.Ready}).Mux
	ta.Mount(ta.mux)
	ctx, cancel := context.WithCancel(context.Background())
	ta.ctx = ctx
	if err := ta.Load(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ta.Run(ctx) }()
	var once sync.Once
	stop = func() (err error) {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	return ta, stop
}

// startAgent loads yaml and runs an agent until the test ends.
func startAgent(t *testing.T, yaml string, o Options) *testAgent {
	t.Helper()
	ta, stop := launchAgent(t, yaml, o)
	t.Cleanup(func() { _ = stop() })
	return ta
}

func (ta *testAgent) write(t *testing.T, yaml string) {
	t.Helper()
	if err := os.WriteFile(ta.file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload writes yaml over the config file and loads it.
func (ta *testAgent) reload(t *testing.T, yaml string) error {
	t.Helper()
	ta.write(t, yaml)
	return ta.Load(ta.ctx)
}

func scrapeText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		expfmt.MetricFamilyToText(&b, mf)
	}
	return b.String()
}

// waitUntil polls cond every 20 ms until it holds, failing the test after
// timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return waitEvery(t, timeout, 20*time.Millisecond, what, cond)
}

// waitEvery polls cond every period until it holds, failing the test after
// timeout; it returns how long that took.
func waitEvery(t *testing.T, timeout, period time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(period)
	}
	return time.Since(start)
}
