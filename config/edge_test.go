package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	c, err := Parse([]byte(src), "m.yaml")
	if err != nil {
		t.Fatalf("valid file refused:\n%s\n%v", src, err)
	}
	return c
}

func specs(t *testing.T, c *Config, site string) map[string]ProbeSpec {
	t.Helper()
	p, err := c.Plan(site)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]ProbeSpec{}
	for _, s := range p.Probes {
		if s.Kind == KindICMP || s.Kind == KindTCP {
			m[s.Target+"/"+s.Protocol+s.PortLabel()] = s
		}
	}
	return m
}

// Merge keys apply as YAML specifies: keys written in the mapping win over
// merged ones, and among merged mappings the first listed wins.
func TestMergeKeys(t *testing.T) {
	c := mustParse(t, `
site: a
sites:
  - name: a
    targets: [{address: 10.0.0.1}]
  - name: b
    targets:
      - &web {address: 10.0.1.1, path: sitelink, segment: prod, tcp_ports: [443], interval: 500ms}
      - <<: *web
        address: 10.0.1.2
      - <<: [*web, {path: mpls, size: 100}]
        address: 10.0.1.3
      - {<<: [{path: mpls, size: 100}, *web], address: 10.0.1.4}
`)
	s := specs(t, c, "a")
	for addr, want := range map[string]struct {
		path string
		size int
	}{"10.0.1.1": {"sitelink", 56}, "10.0.1.2": {"sitelink", 56}, "10.0.1.3": {"sitelink", 100}, "10.0.1.4": {"mpls", 100}} {
		icmp, tcp := s[addr+"/icmp"], s[addr+"/tcp443"]
		if icmp.Path != want.path || icmp.Segment != "prod" || icmp.Size != want.size || icmp.Interval != 500*time.Millisecond || tcp.Port != 443 {
			t.Errorf("%s: icmp %+v tcp %+v; want path %s size %d, segment prod, 500ms, tcp 443", addr, icmp, tcp, want.path, want.size)
		}
	}
}

// A default never makes a file invalid: an unwritten timeout follows the
// interval in force (2s, or 10 x the interval when shorter), and defaults
// of the aws: section follow the intervals written.
func TestDefaultsFollowWrittenValues(t *testing.T) {
	c := mustParse(t, "site: a\nprobe:\n  interval: 100ms\nsites:\n  - {name: a, targets: [{address: 10.0.0.1}]}\n  - {name: b, targets: [{address: 10.0.0.2}, {address: 10.0.0.3, interval: 5s}, {address: 10.0.0.4, interval: 20ms}]}\n")
	if c.Probe.Timeout.D() != time.Second {
		t.Errorf("probe.interval 100ms alone: timeout %s, want 1s", c.Probe.Timeout.D())
	}
	s := specs(t, c, "a")
	for addr, want := range map[string][2]time.Duration{
		"10.0.0.2": {100 * time.Millisecond, time.Second},
		"10.0.0.3": {5 * time.Second, 2 * time.Second},
		"10.0.0.4": {20 * time.Millisecond, 200 * time.Millisecond},
	} {
		if got := s[addr+"/icmp"]; got.Interval != want[0] || got.Timeout != want[1] {
			t.Errorf("%s: interval %s timeout %s, want %s %s", addr, got.Interval, got.Timeout, want[0], want[1])
		}
	}

	// A written probe.timeout is inherited as written.
	c = mustParse(t, "site: a\nprobe: {timeout: 500ms}\nsites:\n  - {name: a, targets: [{address: 10.0.0.1}]}\n  - {name: b, targets: [{address: 10.0.0.2, interval: 100ms}]}\n")
	if got := specs(t, c, "a")["10.0.0.2/icmp"]; got.Timeout != 500*time.Millisecond {
		t.Errorf("inherited timeout %s, want 500ms", got.Timeout)
	}

	// Empty values are unwritten ones: the defaults apply.
	c = mustParse(t, "probe:\n  interval:\n  timeout: ~\n  size:\nsites:\n  - {name: a, targets: [{address: 10.0.0.1}]}\n")
	if c.Probe.Interval.D() != DefaultInterval || c.Probe.Timeout.D() != DefaultTimeout || c.Probe.Size != DefaultSize {
		t.Errorf("null values: %+v", c.Probe)
	}

	// stamp.port moves the default listen addresses with it.
	c = mustParse(t, "stamp: {port: 1862, reflector: {enabled: true}}\nsites:\n  - {name: a, targets: [{address: 10.0.0.1}]}\n")
	if got := strings.Join(c.STAMP.Reflector.Listen, " "); got != "0.0.0.0:1862 [::]:1862" {
		t.Errorf("listen = %s", got)
	}

	aws := func(section string) *AWSConfig {
		return mustParse(t, "sites:\n  - {name: a, region: us-east-1, targets: [{address: 10.0.0.1}]}\naws:\n"+section).AWS
	}
	if a := aws("  interval: 20s\n"); a.Timeout.D() != 20*time.Second || a.StaleAfter.D() != 5*time.Minute {
		t.Errorf("aws interval 20s: timeout %s stale_after %s, want 20s 5m", a.Timeout.D(), a.StaleAfter.D())
	}
	if a := aws("  interval: 10m\n  metrics_interval: 5m\n"); a.Timeout.D() != 30*time.Second || a.StaleAfter.D() != 50*time.Minute || a.MetricsStaleAfter.D() != 14*time.Minute {
		t.Errorf("aws intervals 10m/5m: timeout %s stale_after %s metrics_stale_after %s, want 30s 50m 14m", a.Timeout.D(), a.StaleAfter.D(), a.MetricsStaleAfter.D())
	}
	if a := aws("  metrics_stale_after: 5m\n"); a.MetricsStaleAfter.D() != 5*time.Minute {
		t.Errorf("metrics_stale_after 5m (the minimum at metrics_interval 1m) refused or changed: %s", a.MetricsStaleAfter.D())
	}
	if a := aws("  {}\n"); a.Timeout.D() != DefaultAWSTimeout || a.StaleAfter.D() != DefaultAWSStaleAfter || a.MetricsStaleAfter.D() != DefaultAWSMetricsStaleAfter {
		t.Errorf("aws defaults changed: %+v", a)
	}
}

// Each problem is reported once, on what the user wrote.
func TestOneErrorPerMistake(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"stamp:\n  port: 70000\n  reflector: {enabled: true}\nsites: [{name: a, targets: [{address: 10.0.0.1}]}]\n",
			"m.yaml:2:9: stamp.port: port must be between 1 and 65535, got 70000"},
		{"aws:\n  regions: [us-east-1]\n  interval: 5s\nsites: [{name: a, targets: [{address: 10.0.0.1}]}]\n",
			"m.yaml:3:13: aws.interval: must be at least 10s, got 5s"},
		{"probe:\n  interval: 1ms\nsites: [{name: a, targets: [{address: 10.0.0.1}, {address: 10.0.0.2, timeout: 5s}]}]\n",
			"m.yaml:2:13: probe.interval: interval 1ms is below the minimum of 10ms"},
	} {
		_, err := Parse([]byte(tc.src), "m.yaml")
		if err == nil || err.Error() != tc.want {
			t.Errorf("got:\n%v\nwant exactly:\n%s", err, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "1s": time.Second, "250ms": 250 * time.Millisecond, "1m30s": 90 * time.Second, "1.5h": 90 * time.Minute,
		".5s": 500 * time.Millisecond, "1d": 24 * time.Hour, "1.5d": 36 * time.Hour, "2w3d12h": (17*24 + 12) * time.Hour,
		"-1s": -time.Second, "1µs": time.Microsecond, "1us": time.Microsecond,
		"106751d": 106751 * 24 * time.Hour, "9223372036854775807ns": 1<<63 - 1, "-9223372036854775808ns": -1 << 63,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"213504d": "out of range", "30500w": "out of range", "106752d": "out of range", "9223372036854775808ns": "out of range",
		"2562048h": "out of range", "99999999999999999999s": "out of range", "15250w2d": "out of range",
		"": "invalid duration", "5": "needs a unit", "d": "invalid duration", "1y": "unknown unit", "1 s": "unknown unit", "1s2": "needs a unit",
	} {
		if _, err := ParseDuration(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDuration(%q) error %v, want %q", in, err, want)
		}
	}
}

func TestDocumentMarkersAndEncodings(t *testing.T) {
	const body = "sites:\n  - name: a\n    targets: [{address: 10.0.0.1}]\n"
	for name, src := range map[string]string{
		"start and end markers": "---\n" + body + "...\n",
		"end marker, comments":  body + "...\n# the end\n",
		"byte order mark":       "\ufeff" + body,
		"CRLF":                  strings.ReplaceAll(body, "\n", "\r\n"),
	} {
		if _, err := Parse([]byte(src), "m.yaml"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The expansion limit leaves room for ordinary use of aliases: a defaults
// mapping with every target field merged into each of 2,000 targets.
func TestLargeMeshWithMergeKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString("site: a\nsites:\n  - name: a\n    targets: [{address: 10.0.0.1}]\n  - name: b\n    targets:\n")
	b.WriteString("      - &d {address: 10.1.0.1, path: p, segment: s, interval: 1s, timeout: 1s, size: 100, tos: 0, family: ip4, expect: reachable, trace: false, mtu: false, icmp: true, tcp_ports: [22, 443]}\n")
	for i := 1; i < 2000; i++ {
		fmt.Fprintf(&b, "      - {<<: *d, address: 10.1.%d.%d}\n", i/250, i%250+1)
	}
	c := mustParse(t, b.String())
	if s := specs(t, c, "a"); len(s) != 3*2000 || s["10.1.7.250/tcp443"].Segment != "s" {
		t.Fatalf("%d probes; want 6000 with merged fields", len(s))
	}
}

// The report of a file with many mistakes lists the first ones and counts the rest.
func TestErrorsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("sites:\n  - name: a\n    targets:\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, "      - {address: 10.0.%d.%d, size: 1}\n", i/250, i%250+1)
	}
	_, err := Parse([]byte(b.String()), "m.yaml")
	es, _ := err.(Errors)
	if len(es) != maxShownErrors+1 || es[maxShownErrors].Error() != "m.yaml: and 480 more errors (fix the ones above first)" {
		t.Fatalf("%d errors, last %v", len(es), es[len(es)-1])
	}
}

// A quoted "<<" is a key like any other, not a merge.
func TestQuotedMergeKeyIsAKey(t *testing.T) {
	_, err := Parse([]byte("sites:\n  - name: a\n    targets:\n      - {address: 10.0.0.1, '<<': {size: 100}}\n"), "m.yaml")
	if err == nil || !strings.Contains(err.Error(), `m.yaml:4:29: sites[0].targets[0].<<: unknown field "<<"`) {
		t.Fatalf("got %v", err)
	}
}

// Load refuses an oversized file from its size, and names the file.
func TestLoadOversizedFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(f, make([]byte, MaxFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(f)
	if err == nil || !strings.HasPrefix(err.Error(), f+": the file is 16.0 MiB, more than the 16 MiB a mesh file may be") {
		t.Fatalf("got %v", err)
	}
}
