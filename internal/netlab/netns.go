package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// NSPrefix starts the name of every namespace a lab creates. Cleanup only
// ever touches names with this prefix.
const NSPrefix = "plab-"

// lockDir holds one lock file per lab namespace. The owning process keeps
// an flock on it for the namespace's lifetime, so a namespace whose lock
// can be taken belongs to a process that died: that is how stale ones are
// told from those of a lab running in another process (tests of several
// packages may run labs at the same time).
const lockDir = "/run/netlab"

// netns is one named network namespace owned by this process.
type netns struct {
	name string
	fd   int
	lock *os.File
}

func randomPrefix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return NSPrefix + hex.EncodeToString(b) + "-"
}

func lockPath(name string) string { return filepath.Join(lockDir, name+".lock") }

// createNetNS makes the namespace with loopback up, holding its lock.
func createNetNS(name string) (*netns, error) {
	if !strings.HasPrefix(name, NSPrefix) {
		return nil, fmt.Errorf("namespace %q does not start with %q", name, NSPrefix)
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating lock directory: %w", err)
	}
	lf, err := os.OpenFile(lockPath(name), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock for namespace %s: %w", name, err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("namespace %s is in use by another lab process", name)
	}
	_, _ = fmt.Fprintf(lf, "%d\n", os.Getpid())
	if _, err := os.Stat("/run/netns/" + name); err == nil {
		// We hold the lock, so it is a leftover of a crashed lab.
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		lf.Close()
		os.Remove(lockPath(name))
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		lf.Close()
		os.Remove(lockPath(name))
		return nil, fmt.Errorf("opening namespace %s: %w", name, err)
	}
	return &netns{name: name, fd: fd, lock: lf}, nil
}

// remove kills what still runs inside the namespace (e.g. an agent whose
// test forgot it), deletes the namespace, then releases its lock.
func (n *netns) remove() error {
	if n.fd < 0 {
		return nil // already removed
	}
	unix.Close(n.fd)
	n.fd = -1
	killInside(n.name)
	var err error
	if out, e := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); e != nil {
		err = fmt.Errorf("ip netns del %s: %v: %s", n.name, e, strings.TrimSpace(string(out)))
	}
	os.Remove(lockPath(n.name))
	n.lock.Close()
	return err
}

// do runs f on an OS thread switched into the namespace. Sockets opened by f
// stay in the namespace. The thread is never switched back: it exits with
// the goroutine, so no other goroutine can land in the namespace.
func (n *netns) do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering namespace %s: %w", n.name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// CleanStale removes lab namespaces left by processes that died (their lock
// is free). Namespaces of labs still running, in this process or another,
// and every name without NSPrefix are left alone. It returns the names
// removed.
func CleanStale() ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing namespaces: %w", err)
	}
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating lock directory: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, NSPrefix) {
			continue
		}
		lf, err := os.OpenFile(lockPath(name), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err != nil {
			errs = append(errs, fmt.Errorf("opening lock of %s: %w", name, err))
			continue
		}
		if unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			lf.Close() // a live lab owns it
			continue
		}
		// Processes of a crashed lab (agents) would otherwise live on
		// in a namespace without a network.
		killInside(name)
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out))))
		} else {
			removed = append(removed, name)
		}
		os.Remove(lockPath(name))
		lf.Close()
	}
	return removed, errors.Join(errs...)
}

// killInside SIGKILLs every process in the lab namespace name (only ever
// called for names with NSPrefix that this lab owns or found stale) and
// waits briefly for them to go.
func killInside(name string) {
	if !strings.HasPrefix(name, NSPrefix) {
		return
	}
	for range 50 {
		out, err := exec.Command("ip", "netns", "pids", name).Output()
		pids := strings.Fields(string(out))
		if err != nil || len(pids) == 0 {
			return
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 && pid != os.Getpid() {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}
