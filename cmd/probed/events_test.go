package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bad storage, history and peer flags stop the agent with status 2 and a
// message naming the flag, before it starts anything.
func TestEventFlagErrors(t *testing.T) {
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(mesh, []byte("site: a\nsites:\n  - name: a\n    targets: []\n  - name: b\n    targets: [{address: 127.0.0.1, icmp: false, tcp_ports: [9]}]\n"), 0o644)
	badHTTP := filepath.Join(dir, "peers.yml")
	os.WriteFile(badHTTP, []byte("basic_auth: [not, a, map]\n"), 0o644)
	for _, c := range []struct {
		flag, msg string
	}{
		{"--storage.events.retention.time=0s", "--storage.events.retention.time"},
		{"--storage.events.retention.time=forever", "--storage.events.retention.time"},
		{"--storage.events.retention.size=100KB", "--storage.events.retention.size=100KiB: want at least 1MB"},
		{"--storage.events.retention.size=lots", "storage.events.retention.size"},
		{"--history.retention=10s", "--history.retention"},
		{"--history.retention=8d", "--history.retention"},
		{"--peers.port=70000", "--peers.port=70000"},
		{"--peers.scheme=ftp", "peers.scheme"},
		{"--peers.timeout=-1s", "--peers.timeout"},
		{"--peers.http-config.file=" + badHTTP, "--peers.http-config.file"},
	} {
		cmd, _, errb := probed(t, "--config.file="+mesh, "--storage.path="+dir, "--web.listen-address=127.0.0.1:0", c.flag)
		if code := exitCode(t, cmd); code != 2 || !strings.Contains(errb.String(), c.msg) || strings.Contains(errb.String(), "probed started") {
			t.Errorf("%s: exit %d, want 2 with %q in:\n%s", c.flag, code, c.msg, errb)
		}
	}
}

// The daemon keeps its journal under --storage.path: a reload and the stop
// are in it, and a restart reads it back.
func TestDaemonJournal(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(file, []byte("site: a\nprobe: {interval: 100ms}\nsites:\n  - name: a\n    targets: []\n  - name: b\n    targets: [{address: 127.0.0.1, icmp: false, tcp_ports: [9]}]\n"), 0o644)
	storage := filepath.Join(dir, "data")
	for round := 1; round <= 2; round++ {
		addr := freePort(t)
		cmd, _, errb := probed(t, "--config.file="+file, "--storage.path="+storage, "--web.listen-address="+addr, "--log.format=json")
		var evs struct {
			Events []struct {
				Kind    string         `json:"kind"`
				Details map[string]any `json:"details"`
			} `json:"events"`
		}
		waitFor(t, "the events API", func() bool {
			resp, err := http.Get("http://" + addr + "/api/v1/events?related=false")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&evs) == nil && len(evs.Events) > 0
		})
		if round == 2 {
			var kinds []string
			for _, e := range evs.Events {
				kinds = append(kinds, e.Kind)
			}
			// Newest first: this start, the stop of the first run
			// (SIGTERM), its reload, its start.
			if got := strings.Join(kinds, " "); got != "agent_started agent_stopped config_reloaded agent_started" ||
				evs.Events[1].Details["reason"] != "SIGTERM" {
				t.Errorf("after the restart: %s (%v)", got, evs.Events[1].Details)
			}
		} else {
			if err := cmd.Process.Signal(syscallSIGHUP); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the reload event", func() bool {
				resp, err := http.Get("http://" + addr + "/api/v1/events?kind=config_reloaded")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				return json.NewDecoder(resp.Body).Decode(&evs) == nil && len(evs.Events) == 1
			})
		}
		if err := cmd.Process.Signal(syscallSIGTERM); err != nil {
			t.Fatal(err)
		}
		done := make(chan int, 1)
		go func() { done <- exitCode(t, cmd) }()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("exit %d after SIGTERM:\n%s", code, errb)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no exit within 20 s of SIGTERM")
		}
	}
	if _, err := os.Stat(filepath.Join(storage, "events", "lock")); err != nil {
		t.Errorf("journal not under --storage.path/events: %v", err)
	}
}

var (
	syscallSIGHUP  = syscall.SIGHUP
	syscallSIGTERM = syscall.SIGTERM
)
