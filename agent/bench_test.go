package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// meshOf is a mesh of n loopback ICMP targets, with the targets from
// shift on moved to other addresses (what a reload changes).
func meshOf(n, shift int) string {
	var b strings.Builder
	b.WriteString("site: bench\nprobe: {interval: 1s, timeout: 2s}\nsites:\n  - name: bench\n    targets: []\n  - name: loopback\n    targets:\n")
	for i := 0; i < n; i++ {
		j := i
		if i >= shift {
			j = i + n
		}
		fmt.Fprintf(&b, "      - address: 127.%d.%d.%d\n", 1+j/62500, j/250%250, 1+j%250)
	}
	return b.String()
}

// BenchmarkReload10k is one reload of a 10,000-target mesh in which 100
// targets changed: read, validate, plan, and reconcile the engine and the
// exporter. B/op is the reload's allocation.
func BenchmarkReload10k(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs raw ICMP sockets")
	}
	dir := b.TempDir()
	files := []string{filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")}
	os.WriteFile(files[0], []byte(meshOf(10000, 9900)), 0o600)
	os.WriteFile(files[1], []byte(meshOf(10000, 10000)), 0o600)
	a := New(Options{ConfigFile: files[0], Log: zap.NewNop(), Registry: prometheus.NewRegistry()})
	ctx := context.Background()
	if err := a.Load(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.o.ConfigFile = files[(i+1)%2]
		if err := a.Load(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
