package deploy

import (
	"bufio"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// unitDirectives parses a systemd unit into directive -> values (a
// directive may repeat).
func unitDirectives(t testing.TB, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, l)
		}
		d[k] = append(d[k], v)
	}
	return d
}

const unitFile = "systemd/probed.service"

// TestSystemdUnitHardening checks the unit's privilege and sandbox settings.
func TestSystemdUnitHardening(t *testing.T) {
	d := unitDirectives(t, unitFile)
	want := map[string]string{
		"User":                   "probed",
		"AmbientCapabilities":    "CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet":  "CAP_NET_RAW CAP_NET_BIND_SERVICE",
		"NoNewPrivileges":        "yes",
		"ProtectSystem":          "strict",
		"ProtectHome":            "yes",
		"PrivateTmp":             "yes",
		"PrivateDevices":         "yes",
		"ProtectKernelTunables":  "yes",
		"ProtectKernelModules":   "yes",
		"ProtectControlGroups":   "yes",
		"RestrictNamespaces":     "yes",
		"RestrictSUIDSGID":       "yes",
		"LockPersonality":        "yes",
		"MemoryDenyWriteExecute": "yes",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"Restart":                "on-failure",
	}
	for k, v := range want {
		if got := d[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s=%v, want %s", k, got, v)
		}
	}
	if got := d["ExecStart"]; len(got) != 1 || !strings.HasPrefix(got[0], "/usr/bin/probed ") || !strings.Contains(got[0], "--config.file=") {
		t.Errorf("ExecStart=%v", got)
	}
}

// TestSystemdUnitRuns runs the unit's ExecStart as systemd would: a
// non-root user whose only capability is the ambient CAP_NET_RAW, in a
// namespace where unprivileged ping sockets are not allowed. The agent
// probes, and ExecReload (SIGHUP) picks up an edited mesh file.
func TestSystemdUnitRuns(t *testing.T) {
	testutil.RequireRoot(t)
	bin := probedBinary(t)
	_, binCopy, mesh := privateCopy(t, bin)
	d := unitDirectives(t, unitFile)

	args := strings.Fields(d["ExecStart"][0])
	var argv []string
	for _, a := range args {
		switch {
		case a == "/usr/bin/probed":
			a = binCopy
		case a == "$PROBED_ARGS":
			continue
		case strings.HasPrefix(a, "--config.file="):
			a = "--config.file=" + mesh
		case strings.HasPrefix(a, "--web.listen-address="):
			a = "--web.listen-address=127.0.0.1:9447"
		}
		argv = append(argv, a)
	}
	ns := testutil.NewNetNS(t)
	const capNetRaw = 13
	cmd, client, output := agentInNS(t, ns, []uintptr{capNetRaw}, argv...)
	metrics := "http://127.0.0.1:9447/metrics"
	waitFor(t, 20*time.Second, "loopback reported up", func() bool { return scrapeValue(client, metrics, upSeries) == 1 })
	if !strings.Contains(output(), "raw") {
		t.Errorf("expected raw ICMP sockets from the ambient capability, log:\n%s", output())
	}

	// ExecReload: add a target, send SIGHUP, see it probed.
	edited := loopbackMesh + "      - address: 127.0.0.2\n        path: mpls\n        segment: prod\n"
	if err := os.WriteFile(mesh, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if reload := d["ExecReload"][0]; reload != "/bin/kill -HUP $MAINPID" {
		t.Fatalf("ExecReload=%s", reload)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	newUp := strings.Replace(upSeries, `target="127.0.0.1",path="sitelink"`, `target="127.0.0.2",path="mpls"`, 1)
	waitFor(t, 20*time.Second, "the reloaded target reported up", func() bool { return scrapeValue(client, metrics, newUp) == 1 })
	if v := scrapeValue(client, metrics, "probed_config_last_reload_successful"); v != 1 {
		t.Errorf("probed_config_last_reload_successful=%v after SIGHUP", v)
	}
	resp, err := client.Get("http://127.0.0.1:9447/-/healthy")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/-/healthy after reload: %v %v", err, resp)
	}
	if resp != nil {
		resp.Body.Close()
	}
}
