package config

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// The minimal file must work exactly as written.
func TestMinimalFile(t *testing.T) {
	c, err := Load("testdata/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("")
	if err != nil {
		t.Fatal(err)
	}
	if p.Site != "us-east" {
		t.Fatalf("site = %q", p.Site)
	}
	// eu-frankfurt: 2 ICMP + 1 TCP, and the MTU search that sitelink
	// paths get by default; us-east is our own site and is skipped.
	got := map[Kind]int{}
	for _, s := range p.Probes {
		got[s.Kind]++
		if s.TargetSite != "eu-frankfurt" {
			t.Errorf("probe of own site: %+v", s)
		}
		if s.Kind != KindMTU && (s.Interval != time.Second || s.Timeout != 2*time.Second || s.Size != DefaultSize) {
			t.Errorf("defaults not applied: %+v", s)
		}
	}
	if got[KindICMP] != 2 || got[KindTCP] != 1 || got[KindMTU] != 1 || len(p.Probes) != 4 {
		t.Fatalf("jobs per kind = %v", got)
	}
	sum := p.Summarize()
	// 2 echo/s + SYN/ACK/RST per second + 14 sizes × 3 tries per 10 min.
	if want := 2 + 3 + 14*3/600.0; sum.TotalPPS != math.Round(want*10)/10 || sum.PacketsPerS["mtu"] != 14*3/600.0 {
		t.Errorf("pps = %v (%v), want %.2f", sum.TotalPPS, sum.PacketsPerS, want)
	}
	// The other agent's view of the same file.
	p2, err := c.Plan("eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Probes) != 1 || p2.Probes[0].Target != "10.77.1.1" || p2.Probes[0].Path != "default" || p2.Probes[0].Segment != "default" {
		t.Fatalf("eu-frankfurt plan = %+v", p2.Probes)
	}
}

func TestExampleMesh(t *testing.T) {
	c, err := Load("../configs/example-mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sites) != 7 {
		t.Fatalf("%d sites", len(c.Sites))
	}
	for _, s := range c.Sites {
		seen := map[string]bool{}
		for _, tg := range s.Targets {
			seen[tg.Path+"/"+tg.Segment] = true
		}
		for _, want := range []string{"sitelink/prod", "sitelink/dev", "mpls/prod", "mpls/dev"} {
			if !seen[want] {
				t.Errorf("site %s lacks %s", s.Name, want)
			}
		}
		if _, err := c.Plan(s.Name); err != nil {
			t.Errorf("plan %s: %v", s.Name, err)
		}
	}
}

func TestErrorsNameFileLineAndField(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", `
site: a
sites:
  - name: a
    targets:
      - address: 10.0.0.1
        tcp_port: [443]
`, "m.yaml:7:9: sites[0].targets[0].tcp_port: unknown field \"tcp_port\" (did you mean \"tcp_ports\"?)"},
		{"bad address", `
sites:
  - name: a
    targets:
      - address: 10.0.0.300
`, "m.yaml:5:18: sites[0].targets[0].address: invalid address \"10.0.0.300\""},
		{"duplicate target", `
sites:
  - name: a
    targets:
      - address: 10.0.0.1
  - name: b
    targets:
      - address: 10.0.0.1
`, "m.yaml:8:18: sites[1].targets[0].address: duplicate target 10.0.0.1 (path default, segment default); first defined at line 5"},
		{"interval too short", `
probe:
  interval: 5ms
sites:
  - name: a
    targets:
      - address: 10.0.0.1
`, "m.yaml:3:13: probe.interval: interval 5ms is below the minimum of 10ms"},
		{"timeout too long", `
sites:
  - name: a
    targets:
      - address: 10.0.0.1
        interval: 100ms
        timeout: 2s
`, "m.yaml:7:18: sites[0].targets[0].timeout: timeout 2s is more than 10 times the interval 100ms"},
		{"unknown site", `
site: nowhere
sites:
  - name: a
    targets:
      - address: 10.0.0.1
`, "m.yaml:2:7: site: unknown site \"nowhere\": the sites list has a"},
		{"empty mesh", `
probe:
  interval: 1s
`, "m.yaml: sites: empty mesh: no sites are defined"},
		{"empty file", ``, "m.yaml: empty mesh: the file has no content"},
		{"bad duration", `
probe:
  interval: often
sites: []
`, "m.yaml:3:13: probe.interval: invalid duration \"often\""},
		{"bad type", `
sites:
  - name: a
    targets:
      - address: 10.0.0.1
        tcp_ports: [http]
`, "m.yaml:6:21: sites[0].targets[0].tcp_ports[0]: expected an integer from 0 to 65535, got \"http\""},
		{"yaml syntax", "sites:\n  - name: a\n    targets: [\n", "m.yaml:3: did not find expected node content"},
		{"family mismatch", `
sites:
  - name: a
    targets:
      - address: 10.0.0.1
        family: ip6
`, "m.yaml:6:17: sites[0].targets[0].family: family ip6 does not match address 10.0.0.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "m.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n  %v\nwant it to contain:\n  %s", err, tc.want)
			}
		})
	}
}

func TestHostnamesAndOverrides(t *testing.T) {
	c, err := Parse([]byte(`
site: a
probe: {interval: 500ms, timeout: 1s, size: 100, tos: 184}
sites:
  - name: a
    targets: [{address: 10.0.0.1}]
  - name: b
    targets:
      - address: router.b.example.net
        family: ip6
        interval: 200ms
        timeout: 400ms
        size: 1400
        tos: 0
        source: 2001:db8::1
        interface: eth1
        tcp_ports: [22, 443]
`), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Plan("a")
	if len(p.Probes) != 3 {
		t.Fatalf("%d probes", len(p.Probes))
	}
	s := p.Probes[0]
	if s.Target != "router.b.example.net" || s.Family != "ip6" || s.Interval != 200*time.Millisecond ||
		s.Timeout != 400*time.Millisecond || s.Size != 1400 || s.TOS != 0 || s.Source != "2001:db8::1" || s.Interface != "eth1" {
		t.Fatalf("overrides not applied: %+v", s)
	}
	if p.Probes[1].Port != 22 || p.Probes[2].Port != 443 || p.Probes[2].PortLabel() != "443" || s.PortLabel() != "" {
		t.Fatalf("tcp specs: %+v", p.Probes[1:])
	}
	if p.Probes[0].Key() == p.Probes[1].Key() {
		t.Fatal("keys collide")
	}
}

func TestErrorsAreAllReported(t *testing.T) {
	_, err := Parse([]byte(`
sites:
  - name: a
    targets:
      - address: not_a_host!
      - address: 10.0.0.1
        segment: "bad segment"
`), "m.yaml")
	es, ok := err.(Errors)
	if !ok || len(es) != 2 {
		t.Fatalf("want 2 errors, got %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("err = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
