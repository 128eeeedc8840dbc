package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSLACommandErrors checks the exit status and message of `probed sla`
// for each kind of bad input; the report itself is tested in package sla
// against a real Prometheus.
func TestSLACommandErrors(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	badMesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(badMesh, []byte("sites:\n  - {name: a, targets: [{address: 127.0.0.1}]}\nsla:\n  defaults:\n    loss: 150\n"), 0o644)
	badClient := filepath.Join(dir, "client.yml")
	os.WriteFile(badClient, []byte("basic_auth:\n  usr: x\n"), 0o644)
	out := filepath.Join(dir, "report.html")
	now := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		f    slaFlags
		code int
		want string
	}{
		{"no period", slaFlags{promURL: closed}, 2, "give the period"},
		{"bad month", slaFlags{promURL: closed, month: "2026-1"}, 2, `--month "2026-1"`},
		{"bad objective", slaFlags{promURL: closed, month: "2026-10", cfgFile: badMesh}, 2, "mesh.yaml:5:11: sla.defaults.loss: loss is a percentage from 0 to 100, got 150"},
		{"bad client file", slaFlags{promURL: closed, month: "2026-10", promCfg: badClient}, 2, "client.yml"},
		{"bad url", slaFlags{promURL: "localhost:9090", month: "2026-10"}, 2, "must look like http://host:9090"},
		{"unreachable", slaFlags{promURL: closed, month: "2026-10", output: out, format: "html", timeout: 5 * time.Second}, 1, "is unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := slaReport(context.Background(), &stdout, &stderr, &c.f, now)
			if code != c.code || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), c.code, c.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("wrote a report on failure: %q", stdout.String())
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output file exists after a failure: %v", err)
	}
}
