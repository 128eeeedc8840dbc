package deploy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// repoRoot is where the tests find the Dockerfile, docs/ and configs/
// (go test runs in the package directory).
const repoRoot = ".."

// tool returns the path of a Debian-packaged binary the test needs. Missing
// it is a skip on a developer's machine but a failure in CI, where .ci/run
// installs it: a skipped test there would hide a check that never ran.
func tool(t testing.TB, name, pkg string) string {
	t.Helper()
	return testutil.RequireTool(t, name, pkg)
}

// runTool runs a command and fails the test with its output when it fails.
func runTool(t testing.TB, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago, for a child process to listen on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProcess starts a long-running child, logs its output to a file in
// the test's temp dir, and kills it when the test ends.
func startProcess(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), filepath.Base(name)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s output:\n%s", filepath.Base(name), tail(string(b), 4000))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// waitHTTP polls url until it answers 200 or the timeout passes.
func waitHTTP(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v: %v", url, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
