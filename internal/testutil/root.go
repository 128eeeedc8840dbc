// Package testutil holds helpers shared by tests: the root check and
// throw-away network namespaces.
package testutil

import (
	"os"
	"os/exec"
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

// RequireTool returns the path of a binary from a Debian package that the
// test needs. Missing it skips on a developer's machine but fails under
// CI=true, where .ci/run installs it: a skip there would hide a check that
// never ran.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (Debian package %s) and CI=true: install it (.ci/run does)", name, pkg)
	}
	t.Skipf("%s not found: apt-get install %s", name, pkg)
	return ""
}
