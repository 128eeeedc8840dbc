package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// TestMain lets the tests run the command itself in a child process: with
// PROBED_TEST_ARGS set, the test binary is probed.
func TestMain(m *testing.M) {
	if a, ok := os.LookupEnv("PROBED_TEST_ARGS"); ok {
		os.Exit(run(strings.Split(a, "\x1f")))
	}
	os.Exit(m.Run())
}

// probed runs the command in a child process; the child is returned
// started, for the caller to wait on.
func probed(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	return probedEnv(t, nil, args...)
}

func probedEnv(t *testing.T, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(append(os.Environ(), env...), "PROBED_TEST_ARGS="+strings.Join(args, "\x1f"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out, &errb
}

func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// The exit statuses the README documents: 0 for help, 2 for bad flags and
// bad web config files, 1 for a listen address that cannot be bound — and
// the agent says it started only once it listens.
func TestExitStatuses(t *testing.T) {
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(mesh, []byte("site: a\nsites:\n  - name: a\n    targets: []\n  - name: b\n    targets: [{address: 127.0.0.1, icmp: false, tcp_ports: [9]}]\n"), 0o644)
	badWeb := filepath.Join(dir, "web.yml")
	os.WriteFile(badWeb, []byte("basic_auth_users: [not, a, map]\n"), 0o644)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	cmd, out, _ := probed(t, "--help")
	if code := exitCode(t, cmd); code != 0 || !strings.Contains(out.String(), "--config.file") ||
		!strings.Contains(out.String(), "web.enable-lifecycle") || !strings.Contains(out.String(), "check-config") {
		t.Errorf("--help: exit %d, output lacks the run flags or the commands:\n%s", code, out)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad flag", []string{"--no-such-flag"}, 2, "unknown long flag"},
		{"bad web config", []string{"--config.file=" + mesh, "--storage.path=" + dir, "--web.listen-address=127.0.0.1:0", "--web.config.file=" + badWeb}, 2, badWeb},
		{"missing web config", []string{"--config.file=" + mesh, "--storage.path=" + dir, "--web.listen-address=127.0.0.1:0", "--web.config.file=" + badWeb + ".nope"}, 2, badWeb + ".nope"},
		{"busy port", []string{"--config.file=" + mesh, "--storage.path=" + dir, "--web.listen-address=" + busy.Addr().String()}, 1, "address already in use"},
		{"missing mesh", []string{"--config.file=" + mesh + ".nope", "--storage.path=" + dir}, 2, mesh + ".nope"},
	} {
		cmd, _, errb := probed(t, c.args...)
		code := exitCode(t, cmd)
		if code != c.code || !strings.Contains(errb.String(), c.msg) {
			t.Errorf("%s: exit %d, want %d with %q in:\n%s", c.name, code, c.code, c.msg, errb)
		}
		if strings.Contains(errb.String(), "probed started") {
			t.Errorf("%s: the agent said it started before failing:\n%s", c.name, errb)
		}
	}
}

// check-config stops at once on SIGTERM and Ctrl-C, even while it waits on
// AWS discovery (here an endpoint that accepts connections and never
// answers).
func TestCheckConfigStopsOnSignals(t *testing.T) {
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	asked := make(chan struct{}, 16)
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			asked <- struct{}{}
		}
	}()
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(mesh, []byte(("site: a\nsites:\n  - {name: a, region: us-east-1, targets: []}\n  - {name: b, targets: [{address: 127.0.0.1}]}\n" +
		"aws:\n  timeout: 60s\n  interval: 60s\n  dx_gateway_ids: [5f294f92-bafb-4011-916d-9b0b7e1a0001]\n  discovery: {enabled: true}\n")), 0o644)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		env := []string{"AWS_ENDPOINT_URL=http://" + hang.Addr().String(), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y",
			"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=" + filepath.Join(dir, "c"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "k")}
		cmd, _, _ := probedEnv(t, env, "check-config", "--config.file="+mesh)
		select {
		case <-asked: // it waits on AWS now
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("check-config never asked AWS")
		}
		cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			// Stopped by the signal itself, not by finishing its work.
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("check-config after %v: %v, want killed by it", sig, cmd.ProcessState)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("check-config ignored %v", sig)
		}
	}
}

// With --log.format=json every line the agent writes is JSON: a TLS
// handshake that fails (any client can cause one) included.
func TestTLSErrorsAreLoggedAsJSON(t *testing.T) {
	dir := t.TempDir()
	_, cert, key := testutil.WritePKI(t, dir)
	web := filepath.Join(dir, "web.yml")
	os.WriteFile(web, []byte("tls_server_config:\n  cert_file: "+cert+"\n  key_file: "+key+"\n"), 0o600)
	mesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(mesh, []byte("site: a\nsites:\n  - name: a\n    targets: []\n  - name: b\n    targets: [{address: 127.0.0.1, icmp: false, tcp_ports: [9]}]\n"), 0o644)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd, _, errb := probed(t, "--config.file="+mesh, "--web.listen-address="+addr, "--web.config.file="+web, "--log.format=json")
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var c net.Conn
	deadline := time.Now().Add(20 * time.Second)
	for c == nil {
		if c, err = net.Dial("tcp", addr); err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("the agent never listened: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.Write([]byte("GET /metrics HTTP/1.1\r\n\r\n")) // plain HTTP to a TLS port
	io.ReadAll(c)
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	out := errb.String()
	if !strings.Contains(out, "TLS handshake error") {
		t.Fatalf("no TLS handshake error logged:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("not a JSON log line: %q", line)
		}
	}
}
