package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const stampMesh = `site: a
sites:
  - name: a
    agent: 10.79.1.1
    targets:
      - address: 10.77.1.1
  - name: b
    agent: 10.79.2.1
    targets:
      - address: 10.77.2.1
        stamp: true
`

func TestSTAMPDefaults(t *testing.T) {
	c, err := Parse([]byte(stampMesh+"stamp:\n  probe_agents: true\n  reflector:\n    enabled: true\n    allowed_sources: [192.0.2.0/24]\n"), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := c.STAMP
	if s.Port != 862 || s.Reflector.RateLimit != DefaultSTAMPRateLimit || s.Reflector.Burst != DefaultSTAMPBurst ||
		s.Reflector.SessionTimeout.D() != DefaultSTAMPSessionTimeout || s.Key() != nil {
		t.Errorf("defaults not applied: %+v", s)
	}
	if got := strings.Join(s.Reflector.Listen, " "); got != "0.0.0.0:862 [::]:862" {
		t.Errorf("listen = %s", got)
	}
	if got := strings.Join(c.STAMPAllowedSources(), " "); got != "10.79.1.1 10.77.1.1 10.79.2.1 10.77.2.1 192.0.2.0/24" {
		t.Errorf("allowed sources = %s", got)
	}
	p, err := c.Plan("a")
	if err != nil {
		t.Fatal(err)
	}
	// One session from stamp: true, one to the other agent (probe_agents).
	var sessions []ProbeSpec
	for _, sp := range p.Probes {
		if sp.Kind == KindSTAMP {
			sessions = append(sessions, sp)
			if sp.Protocol != ProtoSTAMP || sp.Port != 862 || sp.STAMPOpts.Window != DefaultLossWindow {
				t.Errorf("stamp spec %+v", sp)
			}
		}
	}
	if len(sessions) != 2 || sessions[0].Target != "10.77.2.1" || sessions[1].Target != "10.79.2.1" ||
		sessions[1].TargetSite != "b" || sessions[1].Path != "agent" || sessions[1].Segment != "agent" {
		t.Errorf("stamp sessions %+v", sessions)
	}
}

func TestSTAMPErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	os.WriteFile(good, []byte("# stamp key\n00112233445566778899aabbccddeeff\n0011\n"), 0o600)
	open := filepath.Join(dir, "open.key")
	os.WriteFile(open, []byte("00112233445566778899aabbccddeeff\n"), 0o644)
	os.Chmod(open, 0o644)
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte("0011\n"), 0o600)

	c, err := Parse([]byte(stampMesh+"stamp:\n  auth_key_file: "+good+"\n"), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.STAMP.Key()) != 18 {
		t.Errorf("key is %d octets", len(c.STAMP.Key()))
	}

	for _, tc := range []struct{ yaml, want string }{
		{"stamp:\n  port: 70000\n", "mesh.yaml:13:9: stamp.port: port must be between 1 and 65535, got 70000"},
		{"stamp:\n  auth_key_file: " + open + "\n", "mesh.yaml:13:18: stamp.auth_key_file: key file " + open + " is readable by others"},
		{"stamp:\n  auth_key_file: " + short + "\n", "is 2 octets; HMAC-SHA-256 needs at least 16"},
		{"stamp:\n  auth_key_file: " + dir + "/none\n", "stamp.auth_key_file: cannot read the key"},
		{"stamp:\n  reflector:\n    rate_limit: -1\n", "mesh.yaml:14:17: stamp.reflector.rate_limit: must be positive"},
		{"stamp:\n  reflector:\n    listen: [\"10.0.0.1:99999\"]\n", "mesh.yaml:14:14: stamp.reflector.listen[0]: listen address \"10.0.0.1:99999\": invalid port"},
		{"stamp:\n  reflector:\n    listen: [agent.example:862]\n", "stamp.reflector.listen[0]: listen address \"agent.example:862\": the host must be an IP address"},
		{"stamp:\n  reflector:\n    allowed_sources: [10.0.0.0/33]\n", "mesh.yaml:14:23: stamp.reflector.allowed_sources[0]: not an address prefix"},
		{"stamp:\n  reflector:\n    session_timeout: 10ms\n", "stamp.reflector.session_timeout: must be at least 1s"},
		{"stamp:\n  reflector:\n    enable: true\n", `stamp.reflector.enable: unknown field "enable" (did you mean "enabled"?)`},
	} {
		_, err := Parse([]byte(stampMesh+tc.yaml), "mesh.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestNormalizeListen(t *testing.T) {
	for in, want := range map[string]string{
		"10.79.1.1": "10.79.1.1:862", "::": "[::]:862", ":1862": "0.0.0.0:1862", "[fd77:1::1]:9": "[fd77:1::1]:9",
	} {
		if got, err := normalizeListen(in, 862); err != nil || got != want {
			t.Errorf("%s: %s %v", in, got, err)
		}
	}
}
