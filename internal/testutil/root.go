// Package testutil holds helpers shared by tests: the root check and
// throw-away network namespaces.
package testutil

import (
	"os"
	"testing"
)

// RequireRoot skips a test that needs root (raw sockets, namespaces) on a
// developer's machine, but fails it loudly under CI=true: CI runs as root, so
// a skip there would hide a test that never ran.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s needs root (raw sockets / network namespaces) and CI=true: run the suite as root", t.Name())
	}
	t.Skipf("%s needs root; skipped outside CI", t.Name())
}
