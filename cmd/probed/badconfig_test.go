package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/probed/probed/config/configtest"
)

// Limits of one check-config run on a broken file. CPU time (user + sys,
// from rusage) rather than wall time: on a busy machine a run waits for a
// CPU without using it, and the check is about what the file costs.
const (
	maxCheckCPU = time.Second
	maxCheckRSS = 50 << 20 // bytes
	// maxAgentRSS bounds the running agent's peak after every broken reload.
	maxAgentRSS = 100 << 20
)

// buildProbed builds the probed binary once into a temporary directory.
func buildProbed(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "probed")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// rusageSrc is a tiny program that runs a command and writes its exit
// status, CPU time and max RSS to a file. The measurement needs a small
// parent: on Linux a child's max RSS starts at its parent's RSS when it is
// forked (the exec keeps the high-water mark of the parent's memory it was
// cloned from), and this test process is hundreds of MB under -race.
const rusageSrc = `package main

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

func main() {
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		os.Exit(125)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	out := fmt.Sprintf("%d %d %d", cmd.ProcessState.ExitCode(), ru.Utime.Nano()+ru.Stime.Nano(), ru.Maxrss)
	if err := os.WriteFile(os.Args[1], []byte(out), 0o644); err != nil {
		os.Exit(125)
	}
}
`

// buildRusage builds rusageSrc.
func buildRusage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string]string{"main.go": rusageSrc, "go.mod": "module rusage\n\ngo 1.21\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-o", "rusage", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the rusage helper: %v\n%s", err, out)
	}
	return filepath.Join(dir, "rusage")
}

// measured is one run of a command under the rusage helper.
type measured struct {
	exit           int
	cpu            time.Duration // user + sys
	maxRSS         int64         // bytes
	stdout, stderr string
}

func runMeasured(t *testing.T, helper string, args ...string) measured {
	t.Helper()
	report := filepath.Join(t.TempDir(), "rusage")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang, not a slow run
	defer cancel()
	cmd := exec.CommandContext(ctx, helper, append([]string{report}, args...)...)
	// Killed with its child on a hang.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var m measured
	var cpu int64
	if _, err := fmt.Sscanf(string(b), "%d %d %d", &m.exit, &cpu, &m.maxRSS); err != nil {
		t.Fatalf("rusage report %q: %v", b, err)
	}
	m.cpu, m.maxRSS = time.Duration(cpu), m.maxRSS<<10 // KiB on Linux
	m.stdout, m.stderr = stdout.String(), stderr.String()
	return m
}

// writeCases writes each broken file and returns their paths, in order.
func writeCases(t *testing.T, dir string, cases []configtest.Case) []string {
	t.Helper()
	paths := make([]string, len(cases))
	for i, c := range cases {
		paths[i] = filepath.Join(dir, fmt.Sprintf("broken-%02d.yaml", i))
		if err := os.WriteFile(paths[i], c.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

// TestBrokenConfigs feeds every broken mesh file of config/configtest to
// the probed binary. check-config must exit 2 and print the error at its
// position, within maxCheckCPU and maxCheckRSS; a running agent that is
// handed the file by SIGHUP and by POST /-/reload must keep everything as it
// was: same probe series, still counting, reload_successful 0, alive.
func TestBrokenConfigs(t *testing.T) {
	cases := configtest.Broken()
	if len(cases) < 60 {
		t.Fatalf("only %d broken files; at least 60 expected", len(cases))
	}
	bin := buildProbed(t)
	files := writeCases(t, t.TempDir(), cases)

	t.Run("check-config", func(t *testing.T) {
		var worstCPU time.Duration
		var worstRSS int64
		var worstCPUName, worstRSSName string
		leastCPU, leastRSS := time.Hour, int64(1<<62)
		helper := buildRusage(t)
		for i, c := range cases {
			m := runMeasured(t, helper, bin, "check-config", "--config.file="+files[i])
			if m.exit != 2 {
				t.Errorf("%s: check-config exit status %d, want 2\n%s", c.Name, m.exit, m.stderr)
				continue
			}
			first, _, _ := strings.Cut(m.stderr, "\n")
			if !strings.HasPrefix(first, c.Prefix(files[i])) || !strings.Contains(first, c.Msg) {
				t.Errorf("%s: stderr begins\n  %.300s\nwant\n  %s…%s…", c.Name, first, c.Prefix(files[i]), c.Msg)
			}
			if n := strings.Count(m.stderr, "\n"); n > 21 || len(m.stderr) > 32<<10 {
				t.Errorf("%s: %d lines, %d bytes on stderr: the report must stay short", c.Name, n, len(m.stderr))
			}
			cpu, rss := m.cpu, m.maxRSS
			if cpu > maxCheckCPU || rss > maxCheckRSS {
				t.Errorf("%s: check-config used %v CPU and %d MiB; limits %v and %d MiB", c.Name, cpu, rss>>20, maxCheckCPU, maxCheckRSS>>20)
			}
			leastCPU, leastRSS = min(leastCPU, cpu), min(leastRSS, rss)
			if cpu > worstCPU {
				worstCPU, worstCPUName = cpu, c.Name
			}
			if rss > worstRSS {
				worstRSS, worstRSSName = rss, c.Name
			}
		}
		t.Logf("%d files; CPU %v to %v (%s); max RSS %.1f to %.1f MiB (%s)", len(cases), leastCPU, worstCPU, worstCPUName,
			float64(leastRSS)/(1<<20), float64(worstRSS)/(1<<20), worstRSSName)

		// No file to read: the same form, the file named, status 2.
		for _, f := range []string{filepath.Join(t.TempDir(), "missing.yaml"), t.TempDir()} {
			m := runMeasured(t, helper, bin, "check-config", "--config.file="+f)
			if m.exit != 2 || !strings.HasPrefix(m.stderr, f+": reading the mesh file: ") {
				t.Errorf("check-config --config.file=%s: exit %d, stderr %q", f, m.exit, m.stderr)
			}
		}
	})

	t.Run("reload", func(t *testing.T) { testBrokenReloads(t, bin, cases, files) })
}

// agentProcess is a probed daemon started by a test.
type agentProcess struct {
	cmd  *exec.Cmd
	addr string
	// failed receives one value per "config reload failed" log line.
	failed chan struct{}
	mu     sync.Mutex
	long   int // log lines over 64 KiB
	logs   []string
}

func startAgent(t *testing.T, bin, mesh string) *agentProcess {
	t.Helper()
	a := &agentProcess{addr: freePort(t), failed: make(chan struct{}, 16)}
	args := []string{"run", "--config.file=" + mesh, "--web.listen-address=" + a.addr, "--log.format=json"}
	if help, _ := exec.Command(bin, "run", "--help").CombinedOutput(); bytes.Contains(help, []byte("storage.path")) {
		args = append(args, "--storage.path="+t.TempDir())
	}
	// --web.enable-lifecycle gates POST /-/reload (as in Prometheus); pass
	// it when this build has it.
	if help, _ := exec.Command(bin, "run", "--help").CombinedOutput(); bytes.Contains(help, []byte("web.enable-lifecycle")) {
		args = append(args, "--web.enable-lifecycle")
	}
	a.cmd = exec.Command(bin, args...)
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReaderSize(stderr, 64<<10)
		for {
			line, err := r.ReadSlice('\n')
			full := len(line) == 64<<10 && err == bufio.ErrBufferFull
			a.mu.Lock()
			if full {
				a.long++
			} else if len(line) > 0 {
				a.logs = append(a.logs, string(line))
			}
			a.mu.Unlock()
			if bytes.Contains(line, []byte(`config reload failed`)) {
				a.failed <- struct{}{}
			}
			for full { // skip the rest of an over-long line
				_, err = r.ReadSlice('\n')
				full = err == bufio.ErrBufferFull
			}
			if err != nil && err != bufio.ErrBufferFull {
				return
			}
		}
	}()
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGTERM)
		a.cmd.Wait()
		<-done
	})
	return a
}

func (a *agentProcess) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v (agent exited: %v)", err, a.cmd.ProcessState)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

var probeSeriesRE = regexp.MustCompile(`(?m)^probed_probes_sent_total\{[^}]*\} `)

// probeSeries lists the names of the per-probe sent counters.
func probeSeries(body string) []string {
	s := probeSeriesRE.FindAllString(body, -1)
	sort.Strings(s)
	return s
}

func testBrokenReloads(t *testing.T, bin string, cases []configtest.Case, files []string) {
	// TCP-only probes to a listener of ours: no privilege needed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	mesh := filepath.Join(t.TempDir(), "mesh.yaml")
	good := []byte(fmt.Sprintf("site: here\nprobe: {interval: 20ms, timeout: 200ms}\nsites:\n"+
		"  - name: here\n    targets: [{address: 127.0.0.9, icmp: false, tcp_ports: [%d]}]\n"+
		"  - name: there\n    targets: [{address: 127.0.0.1, icmp: false, tcp_ports: [%d]}]\n", port, port))
	if err := os.WriteFile(mesh, good, 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, bin, mesh)
	sent := fmt.Sprintf(`probed_probes_sent_total{source_site="here",target_site="there",target="127.0.0.1",path="default",segment="default",protocol="tcp",port="%d"}`, port)
	var series []string
	count := 0.0
	waitFor(t, "the first probes", func() bool {
		resp, err := http.Get("http://" + a.addr + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		v, ok := value(string(b), sent)
		series, count = probeSeries(string(b)), v
		return ok && v > 0
	})

	// check is run after each failed reload: nothing may have changed.
	check := func(name, how string) {
		t.Helper()
		var body string
		waitFor(t, name+": the probe counting on after "+how, func() bool {
			body = a.metrics(t)
			v, _ := value(body, sent)
			return v > count
		})
		v, _ := value(body, sent)
		count = v
		if ok, _ := value(body, "probed_config_last_reload_successful"); ok != 0 {
			t.Errorf("%s: probed_config_last_reload_successful %v after %s", name, ok, how)
		}
		if got := probeSeries(body); strings.Join(got, "\n") != strings.Join(series, "\n") {
			t.Errorf("%s: probe series changed after %s:\n%s\nwant\n%s", name, how, strings.Join(got, "\n"), strings.Join(series, "\n"))
		}
	}
	for _, c := range cases {
		if err := os.WriteFile(mesh, c.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("%s: SIGHUP: %v", c.Name, err)
		}
		select {
		case <-a.failed:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no \"config reload failed\" logged after SIGHUP", c.Name)
		}
		check(c.Name, "SIGHUP")

		resp, err := http.Post("http://"+a.addr+"/-/reload", "", nil)
		if err != nil {
			t.Fatalf("%s: POST /-/reload: %v", c.Name, err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		select { // logged too: consume it so the next SIGHUP waits for its own
		case <-a.failed:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no \"config reload failed\" logged after POST /-/reload", c.Name)
		}
		if resp.StatusCode != http.StatusInternalServerError || !bytes.Contains(msg, []byte(c.Prefix(mesh))) {
			t.Errorf("%s: POST /-/reload answered %d:\n%.300s\nwant 500 with %s", c.Name, resp.StatusCode, msg, c.Prefix(mesh))
		}
		if len(msg) > 32<<10 {
			t.Errorf("%s: a %d-byte reload answer", c.Name, len(msg))
		}
		check(c.Name, "POST /-/reload")
	}

	// The agent is whole: a good file loads again, the probe keeps its counter.
	if err := os.WriteFile(mesh, good, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+a.addr+"/-/reload", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("reloading the good file: %v %v", err, resp)
	}
	resp.Body.Close()
	body := a.metrics(t)
	if ok, _ := value(body, "probed_config_last_reload_successful"); ok != 1 {
		t.Errorf("probed_config_last_reload_successful %v after the good file", ok)
	}
	if v, _ := value(body, sent); v < count {
		t.Errorf("probe counter went from %v to %v: state lost", count, v)
	}
	// The broken files cost the agent little memory: the alias bombs are
	// refused before anything expands (an uncapped one took 677 MB).
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid)); err == nil {
		if m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(st); m != nil {
			hwm, _ := strconv.ParseInt(string(m[1]), 10, 64)
			t.Logf("agent peak RSS after %d broken reloads: %.1f MiB", 2*len(cases), float64(hwm)/1024)
			if hwm > maxAgentRSS>>10 {
				t.Errorf("agent peak RSS %d MiB after the broken reloads; limit %d MiB", hwm>>10, maxAgentRSS>>20)
			}
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.long > 0 {
		t.Errorf("%d log lines over 64 KiB: values must be shortened in logs", a.long)
	}
	for _, l := range a.logs {
		if strings.Contains(l, `"level":"error"`) && !strings.Contains(l, "config reload failed") {
			t.Errorf("unexpected error logged: %.300s", l)
		}
	}
}
