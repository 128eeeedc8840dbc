package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// NSPrefix starts the name of every namespace a test makes, so a leak is
// recognisable and cleanup never touches anything else.
const NSPrefix = "probedt-"

// NetNS is a network namespace made for one test.
type NetNS struct {
	Name string
	fd   int
}

// NewNetNS creates a namespace with loopback up and removes it when the test
// ends.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	RequireRoot(t)
	cleanStaleOnce.Do(CleanStale)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	// The owner's PID is in the name, so a later run can tell a namespace
	// leaked by a killed test process from one still in use.
	name := fmt.Sprintf("%s%d-%s", NSPrefix, os.Getpid(), hex.EncodeToString(b))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open namespace %s: %v", name, err)
	}
	ns := &NetNS{Name: name, fd: fd}
	t.Cleanup(func() {
		unix.Close(ns.fd)
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace.
func (ns *NetNS) Run(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustRun runs a command inside the namespace and fails the test on error.
func (ns *NetNS) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Run(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Do runs f on an OS thread switched into the namespace. Sockets opened in f
// stay in the namespace after Do returns.
func (ns *NetNS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never switched back: it is dropped when this
		// goroutine exits while still locked, so no other goroutine can
		// land in the namespace by accident.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

var cleanStaleOnce sync.Once

// CleanStale removes namespaces left by test processes that no longer run
// (killed before their cleanup). Namespaces of live processes are kept.
func CleanStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, NSPrefix) {
			continue
		}
		pid, _, _ := strings.Cut(strings.TrimPrefix(name, NSPrefix), "-")
		if n, err := strconv.Atoi(pid); err == nil && unix.Kill(n, 0) == nil {
			continue // its test process is still running
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

// OpenNetNS opens an existing namespace by name (for a re-executed test
// process that must reach a namespace its parent made). It is not removed.
func OpenNetNS(name string) (*NetNS, error) {
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", name, err)
	}
	return &NetNS{Name: name, fd: fd}, nil
}

// Veth joins two namespaces with a veth pair and sets both ends up.
func Veth(t testing.TB, a *NetNS, aIf string, b *NetNS, bIf string) {
	t.Helper()
	a.MustRun(t, "ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	a.MustRun(t, "ip", "link", "set", aIf, "up")
	b.MustRun(t, "ip", "link", "set", bIf, "up")
}
