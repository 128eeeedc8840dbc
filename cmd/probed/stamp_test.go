package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
)

// stampMesh is a two-site mesh on loopback: site b's target 127.0.0.1 is a
// STAMP reflector (this agent's own), reached from site a.
func stampMesh(port int, withTarget bool) string {
	stampLine := ""
	if withTarget {
		stampLine = "        stamp: true\n"
	}
	return fmt.Sprintf(`site: a
probe:
  interval: 20ms
  timeout: 200ms
stamp:
  port: %d
  reflector:
    enabled: %v
    listen: ["127.0.0.1"]
sites:
  - name: a
    agent: 127.0.0.1
    targets:
      - address: 127.0.0.2
  - name: b
    targets:
      - address: 127.0.0.1
        path: sitelink
        segment: prod
%s`, port, withTarget, stampLine)
}

func loadMesh(t *testing.T, yaml string) (*config.Config, *config.Plan) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := cfg.Plan("")
	if err != nil {
		t.Fatal(err)
	}
	return cfg, plan
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

func TestSTAMPFeature(t *testing.T) {
	// The feature opens its sockets from its own goroutines (in the
	// process's namespace), so this runs on loopback with a free port.
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	f := newSTAMPFeature(ctx, &deps{Logger: zap.NewNop(), Registry: reg, Mux: http.NewServeMux()})

	cfg, plan := loadMesh(t, stampMesh(port, true))
	if err := f.Apply(ctx, cfg, plan); err != nil {
		t.Fatal(err)
	}
	const lbl = `path="sitelink",port="%d",protocol="stamp",segment="prod",source_site="a",target="127.0.0.1",target_site="b"`
	labels := fmt.Sprintf(lbl, port)
	deadline := time.Now().Add(5 * time.Second)
	var out string
	for {
		out = scrapeText(t, reg)
		if strings.Contains(out, "probed_stamp_rtt_seconds_count{"+labels+"} 1") ||
			strings.Contains(out, "probed_stamp_rtt_seconds_count{"+labels+"} 2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no STAMP reply measured:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, want := range []string{
		`probed_stamp_reflector_sessions{site="a"} 1`,
		`probed_stamp_lost_total{direction="forward",` + labels + `} 0`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}

	// Reload with the same settings: nothing restarts, counters go on.
	if err := f.Apply(ctx, cfg, plan); err != nil {
		t.Fatal(err)
	}

	// Reload without the STAMP target and with the reflector off: the
	// session's series go and the port is free again.
	cfg2, plan2 := loadMesh(t, stampMesh(port, false))
	if err := f.Apply(ctx, cfg2, plan2); err != nil {
		t.Fatal(err)
	}
	if out := scrapeText(t, reg); strings.Contains(out, `protocol="stamp"`) {
		t.Errorf("series of a removed session remain:\n%s", out)
	}
	c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("reflector port not released: %v", err)
	}
	c.Close()
}
