package agent

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// stampMesh is a two-site mesh on loopback: site b's target 127.0.0.1 is a
// STAMP reflector (this agent's own), reached from site a.
func stampMesh(port int, withTarget bool) string {
	// Without the STAMP session the target keeps an ICMP probe (a target
	// must probe something).
	stampLine := "        icmp: true\n"
	if withTarget {
		stampLine = "        icmp: false\n        stamp: true\n"
	}
	return fmt.Sprintf(`site: a
probe:
  interval: 20ms
  timeout: 200ms
stamp:
  port: %d
  reflector:
    enabled: %v
    listen: ["127.0.0.1"]
sites:
  - name: a
    agent: 127.0.0.1
    targets:
      - address: 127.0.0.2
  - name: b
    targets:
      - address: 127.0.0.1
        path: sitelink
        segment: prod
        mtu: false
%s`, port, withTarget, stampLine)
}

// The STAMP session runs in the engine and the reflector in the agent: a
// reload with the same settings keeps both; one without them stops the
// session (its series go) and frees the reflector's port.
func TestSTAMPSessionAndReflector(t *testing.T) {
	l, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()

	a := startAgent(t, stampMesh(port, true), Options{})
	const lbl = `path="sitelink",port="%d",protocol="stamp",segment="prod",source_site="a",target="127.0.0.1",target_site="b"`
	labels := fmt.Sprintf(lbl, port)
	count := func() float64 {
		out := scrapeText(t, a.reg)
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "probed_stamp_rtt_seconds_count{"+labels+"} "); ok {
				var f float64
				fmt.Sscan(v, &f)
				return f
			}
		}
		return 0
	}
	waitUntil(t, 10*time.Second, "a STAMP reply measured", func() bool { return count() >= 2 })
	out := scrapeText(t, a.reg)
	for _, want := range []string{
		`probed_stamp_reflector_sessions{site="a"} 1`,
		`probed_stamp_lost_total{direction="forward",` + labels + `} 0`,
		`probed_stamp_reflector_listening{listen="127.0.0.1:` + fmt.Sprint(port) + `"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
	if ok, why := a.Ready(); !ok {
		t.Errorf("not ready: %s", why)
	}

	// Reload with the same settings: nothing restarts, counters go on.
	before := count()
	if err := a.reload(t, stampMesh(port, true)); err != nil {
		t.Fatal(err)
	}
	if after := count(); after < before {
		t.Errorf("RTT count went from %v to %v across a reload that changed nothing", before, after)
	}
	waitUntil(t, 10*time.Second, "the session to go on after the reload", func() bool { return count() >= before+3 })

	// Reload without the STAMP target and with the reflector off: the
	// session's series go and the port is free again.
	if err := a.reload(t, stampMesh(port, false)); err != nil {
		t.Fatal(err)
	}
	if out := scrapeText(t, a.reg); strings.Contains(out, `protocol="stamp"`) || strings.Contains(out, "probed_stamp_reflector_listening{") {
		t.Errorf("series of a removed session or reflector remain:\n%s", out)
	}
	c, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("reflector port not released: %v", err)
	}
	c.Close()
}
