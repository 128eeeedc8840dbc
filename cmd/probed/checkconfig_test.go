package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check-config says what flows cost (nothing in packets; each flow's
// interval and probes per window) and buy (the chance of missing a member
// of an M-member path, the smallest member loss one window flags), for
// M = 2, 4 and 8; a mesh without flows says nothing of them.
func TestCheckConfigFlows(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(file, []byte(`site: a
probe:
  flows: 16
sites:
  - name: a
    targets: []
  - name: b
    targets:
      - {address: 10.0.0.1, tcp_ports: [443], timeout: 1s}
      - {address: 10.0.0.2, flows: 8, interval: 200ms}
      - {address: 10.0.0.3, flows: 1}
`), 0o644)
	var out, errb bytes.Buffer
	if code := checkConfig(context.Background(), &out, &errb, file, "", true); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"site a: 4 jobs, 10.0 packets/s", // 3 echo/s + SYN/ACK/RST/s: as without flows
		"flows: 2 ICMP and 1 TCP jobs probe over several flows; their packet rate is unchanged",
		"  16     1s        2     16s            11m23s  43           ~864",
		"  8      200ms     1     1.6s           10m0s   375          ~432",
		// ecmp.MissAny / MissOne (docs/ecmp.md's table): 16 flows over 4 members 0.040 / 0.010.
		"  16     1s        3e-05 (2e-05)    4% (1%)      69.3% (11.8%)",
		"  16     1s        12%  12%  14%",
		"line 9 (16 flows)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	os.WriteFile(file, []byte("site: a\nsites:\n  - name: a\n    targets: []\n  - name: b\n    targets: [{address: 10.0.0.1}]\n"), 0o644)
	out.Reset()
	if code := checkConfig(context.Background(), &out, &errb, file, "", false); code != 0 || strings.Contains(out.String(), "flows") {
		t.Errorf("without flows: exit %d\n%s", code, out.String())
	}
}
