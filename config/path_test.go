package config

import (
	"strings"
	"testing"
	"time"
)

const pathBase = `sites:
  - name: a
    targets:
      - address: 10.0.0.1
        path: sitelink
      - address: 10.0.0.2
        path: mpls
      - address: 10.0.0.3
        path: mpls
        trace: true
        mtu: true
`

func TestTraceAndMTUDefaults(t *testing.T) {
	c, err := Parse([]byte(pathBase), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tr, m := c.Trace, c.MTU
	if tr.Enabled || tr.Interval.D() != time.Minute || tr.Method != "icmp" || tr.MaxTTL != 30 || tr.ProbesPerHop != 3 || tr.PPS != 100 || tr.Port != 0 {
		t.Errorf("trace defaults: %+v", tr)
	}
	if m.Interval.D() != 10*time.Minute || *m.Retries != 2 || len(m.Paths) != 1 || m.Paths[0] != "sitelink" {
		t.Errorf("mtu defaults: %+v", m)
	}
	p, err := c.Plan("x")
	if err == nil {
		t.Fatalf("plan for unknown site: %+v", p)
	}
	c.Sites = append(c.Sites, Site{Name: "x"})
	p, err = c.Plan("x")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]bool{}
	for _, s := range p.Probes {
		g := got[s.Target]
		switch s.Kind {
		case KindTrace:
			g[0] = true
		case KindMTU:
			g[1] = true
		}
		if (s.Kind == KindTrace || s.Kind == KindMTU) && (s.Protocol != ProtoICMP || s.Interval != map[Kind]time.Duration{KindTrace: time.Minute, KindMTU: 10 * time.Minute}[s.Kind]) {
			t.Errorf("%s job %+v: want the ICMP probe's labels and the section's interval", s.Kind, s)
		}
		got[s.Target] = g
	}
	// MTU by default on sitelink only; per-target switches win.
	want := map[string][2]bool{"10.0.0.1": {false, true}, "10.0.0.2": {false, false}, "10.0.0.3": {true, true}}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: trace/mtu = %v, want %v", k, got[k], w)
		}
	}
}

func TestTracePortDefaultsByMethod(t *testing.T) {
	for method, port := range map[string]uint16{"udp": 33434, "tcp": 443} {
		c, err := Parse([]byte(pathBase+"trace:\n  method: "+method+"\n"), "m.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if c.Trace.Port != port {
			t.Errorf("%s: port %d, want %d", method, c.Trace.Port, port)
		}
	}
}

// Bad values are reported with file, line, column and field.
func TestTraceAndMTUErrors(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"trace:\n  method: sctp\n", `m.yaml:13:11: trace.method: method must be udp, icmp or tcp, got "sctp"`},
		{"trace:\n  max_ttl: 65\n", "m.yaml:13:12: trace.max_ttl: must be between 1 and 64 hops, got 65"},
		{"trace:\n  probes_per_hop: 11\n", "m.yaml:13:19: trace.probes_per_hop: must be between 1 and 10, got 11"},
		{"trace:\n  pps: -1\n", "m.yaml:13:8: trace.pps: must be between 1 and 100000 packets per second, got -1"},
		{"trace:\n  interval: 500ms\n", "m.yaml:13:13: trace.interval: must be at least 1s, got 500ms"},
		{"trace:\n  port: 53\n", "m.yaml:13:9: trace.port: port is only used by the udp and tcp methods, not icmp"},
		{"trace:\n  max_tll: 3\n", `m.yaml:13:3: trace.max_tll: unknown field "max_tll" (did you mean "max_ttl"?)`},
		{"mtu:\n  retries: 11\n", "m.yaml:13:12: mtu.retries: must be between 0 and 10, got 11"},
		{"mtu:\n  paths: [sitelink, 'a b']\n", `m.yaml:13:21: mtu.paths[1]: path "a b" may only hold letters, digits and _.:-`},
		{"mtu:\n  interval: 0s5\n", "m.yaml:13:13: mtu.interval: invalid duration"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(pathBase+c.yaml), "m.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}
