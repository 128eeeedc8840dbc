package sla

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/probed/probed/sla/slatest"
)

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
	promtool := slatest.RequireTool(t, "promtool")
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
	if err := slatest.CreateBlocks(promtool, files, filepath.Join(dir, "blocks")); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "planted TSDB: generated %d OpenMetrics files in %s, blocks in %s total\n", len(files), gen.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return os.RemoveAll(omDir)
}
