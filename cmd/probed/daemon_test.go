package main

import (
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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"

	"github.com/probed/probed/internal/testutil"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("site: a\nsites:\n  - name: a\n    targets: [{address: 127.0.0.1}]\n  - name: b\n    targets:\n      - address: 127.0.0.2\n        tcp_ports: [22]\n"), 0o644)
	var out, errb bytes.Buffer
	if code := checkConfig(context.Background(), &out, &errb, good, "", true); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"good.yaml: OK", "site a: 2 jobs, 4.0 packets/s", "icmp  1     1.00", "tcp   1     3.00", "127.0.0.2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("sites:\n  - name: a\n    targets:\n      - adress: 10.0.0.1\n"), 0o644)
	out.Reset()
	errb.Reset()
	if code := checkConfig(context.Background(), &out, &errb, bad, "", false); code != 2 {
		t.Fatalf("bad config: exit %d", code)
	}
	if want := bad + `:4:9: sites[0].targets[0].adress: unknown field "adress" (did you mean "address"?)`; !strings.Contains(errb.String(), want) {
		t.Fatalf("stderr %q lacks %q", errb.String(), want)
	}
	// --site naming a site that is not in the file.
	errb.Reset()
	if code := checkConfig(context.Background(), &out, &errb, good, "zz", false); code != 2 || !strings.Contains(errb.String(), `unknown site "zz"`) {
		t.Fatalf("unknown site: exit %d, %s", code, errb.String())
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func webFlags(addr string) *web.FlagConfig {
	sd := false
	cfg := ""
	return &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebSystemdSocket: &sd, WebConfigFile: &cfg}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "" // not listening yet
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// value returns the sample of the series whose line starts with prefix.
func value(body, series string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(l[len(series):]), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const meshTmpl = `site: here
probe: {interval: 50ms, timeout: 200ms}
sites:
  - name: here
    targets: [{address: 127.0.0.1}]
  - name: there
    targets:
%s`

func sentSeries(target string) string {
	return fmt.Sprintf(`probed_probes_sent_total{source_site="here",target_site="there",target="%s",path="default",segment="default",protocol="icmp",port=""}`, target)
}

// TestReload runs the daemon in-process: targets that stay keep their
// counters, added ones start, removed ones disappear; a bad file changes
// nothing and sets probed_config_last_reload_successful to 0; SIGHUP reloads too.
func TestReload(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	write := func(targets ...string) {
		var b strings.Builder
		for _, x := range targets {
			fmt.Fprintf(&b, "      - address: %s\n", x)
		}
		if err := os.WriteFile(file, []byte(fmt.Sprintf(meshTmpl, b.String())), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("127.0.0.2", "127.0.0.3")
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runDaemon(ctx, &daemonFlags{configFile: file, logLevel: "warn", logFormat: "json", lifecycle: true, web: webFlags(addr)})
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("daemon exit %d", code)
		}
	}()
	waitFor(t, "first probes", func() bool {
		v, ok := value(scrape(t, addr), sentSeries("127.0.0.3"))
		return ok && v >= 3
	})
	resp, err := http.Get("http://" + addr + "/-/ready")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ready: %v %v", err, resp)
	}
	before, _ := value(scrape(t, addr), sentSeries("127.0.0.2"))

	write("127.0.0.2", "127.0.0.4")
	resp, err = http.Post("http://"+addr+"/-/reload", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("reload: %v %v", err, resp)
	}
	waitFor(t, "the added target", func() bool {
		_, ok := value(scrape(t, addr), sentSeries("127.0.0.4"))
		return ok
	})
	body := scrape(t, addr)
	if after, _ := value(body, sentSeries("127.0.0.2")); after < before {
		t.Fatalf("kept target's counter went from %v to %v: state lost on reload", before, after)
	}
	if strings.Contains(body, `target="127.0.0.3"`) {
		t.Fatal("removed target's series are still exported")
	}
	if v, _ := value(body, "probed_config_last_reload_successful"); v != 1 {
		t.Fatalf("reload_successful = %v", v)
	}

	// A broken file: reload fails, everything keeps running as it was.
	os.WriteFile(file, []byte("sites:\n  - name: here\n    targets: [{address: 300.1.1.1}]\n"), 0o644)
	resp, err = http.Post("http://"+addr+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 500 || !strings.Contains(string(msg), "mesh.yaml:3:") {
		t.Fatalf("bad reload answered %d: %s", resp.StatusCode, msg)
	}
	body = scrape(t, addr)
	if v, _ := value(body, "probed_config_last_reload_successful"); v != 0 {
		t.Fatalf("reload_successful = %v after a bad file", v)
	}
	n1, _ := value(body, sentSeries("127.0.0.4"))
	time.Sleep(300 * time.Millisecond)
	if n2, _ := value(scrape(t, addr), sentSeries("127.0.0.4")); n2 <= n1 {
		t.Fatal("probing stopped after a failed reload")
	}

	// SIGHUP with a good file.
	write("127.0.0.5")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	waitFor(t, "SIGHUP reload", func() bool {
		b := scrape(t, addr)
		v, _ := value(b, "probed_config_last_reload_successful")
		_, ok := value(b, sentSeries("127.0.0.5"))
		return v == 1 && ok && !strings.Contains(b, `target="127.0.0.4"`)
	})
}

// TestPrivilege runs the daemon as an unprivileged user in a fresh network
// namespace: without ping_group_range it must say what to grant and exit 1;
// with it, it must fall back to ICMP datagram sockets and probe.
func TestPrivilege(t *testing.T) {
	if os.Getenv("PROBED_TEST_UNPRIV") != "" {
		unprivChild()
		return
	}
	testutil.RequireRoot(t)
	ns := testutil.NewNetNS(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // nobody must read the mesh file
	file := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(meshTmpl, "      - address: 127.0.0.2\n")), 0o644)
	run := func(d time.Duration) (string, error) {
		cmd := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "-test.run=^TestPrivilege$")
		cmd.Env = append(os.Environ(), "PROBED_TEST_UNPRIV="+file, "PROBED_TEST_DURATION="+d.String(), "PROBED_TEST_ADDR="+freePort(t))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	ns.MustRun(t, "sysctl", "-qw", "net.ipv4.ping_group_range=1 0")
	out, err := run(3 * time.Second)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, "CAP_NET_RAW") || !strings.Contains(out, "ping_group_range") {
		t.Fatalf("without privilege: %v\n%s", err, out)
	}
	ns.MustRun(t, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
	out, err = run(2 * time.Second)
	if err != nil || !regexp.MustCompile(`"mode": ?"datagram"`).MatchString(out) || !strings.Contains(out, "answered=") {
		t.Fatalf("with ping_group_range: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`answered=(\d+)`).FindStringSubmatch(out)
	if n, _ := strconv.Atoi(m[1]); n < 10 {
		t.Fatalf("datagram sockets answered only %d probes:\n%s", n, out)
	}
}

// unprivChild drops to nobody, runs the daemon for a while and prints how
// many probes were answered.
func unprivChild() {
	if err := syscall.Setgroups(nil); err != nil {
		panic(err)
	}
	if err := syscall.Setgid(65534); err != nil {
		panic(err)
	}
	if err := syscall.Setuid(65534); err != nil {
		panic(err)
	}
	d, _ := time.ParseDuration(os.Getenv("PROBED_TEST_DURATION"))
	addr := os.Getenv("PROBED_TEST_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	go func() {
		time.Sleep(d - 500*time.Millisecond)
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return
		}
		b, _ := io.ReadAll(resp.Body)
		v, _ := value(string(b), `probed_rtt_seconds_count{source_site="here",target_site="there",target="127.0.0.2",path="default",segment="default",protocol="icmp",port=""}`)
		fmt.Printf("answered=%d\n", int(v))
	}()
	code := runDaemon(ctx, &daemonFlags{configFile: os.Getenv("PROBED_TEST_UNPRIV"), logLevel: "info", logFormat: "json", web: webFlags(addr)})
	os.Exit(code)
}

// TestWebConfig: --web.config.file enables basic auth (exporter-toolkit).
func TestWebConfig(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(meshTmpl, "      - address: 127.0.0.2\n")), 0o644)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webFile := filepath.Join(dir, "web.yml")
	os.WriteFile(webFile, []byte("basic_auth_users:\n  prometheus: "+string(hash)+"\n"), 0o600)
	addr := freePort(t)
	flags := webFlags(addr)
	*flags.WebConfigFile = webFile
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runDaemon(ctx, &daemonFlags{configFile: file, logLevel: "warn", logFormat: "json", web: flags})
	}()
	defer func() { cancel(); <-done }()
	var code int
	waitFor(t, "the server", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		code = resp.StatusCode
		return true
	})
	if code != http.StatusUnauthorized {
		t.Fatalf("no credentials: status %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	req.SetBasicAuth("prometheus", "s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("with credentials: %v %v", err, resp)
	}
	resp.Body.Close()
}
