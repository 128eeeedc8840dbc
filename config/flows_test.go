package config

import "testing"

// flows: the probe default, a target's own value, what every kind of job
// gets (ICMP and TCP the count and the trace limits of their member-path
// traces; STAMP one; guards one), and the job restarts when it changes.
func TestFlowsPlan(t *testing.T) {
	c, err := Parse([]byte(`
site: a
probe:
  flows: 8
trace:
  max_ttl: 12
  probes_per_hop: 2
sites:
  - name: a
    targets: []
  - name: b
    targets:
      - {address: 10.0.0.1, tcp_ports: [443], trace: true, mtu: true, stamp: true, interval: 100ms, timeout: 500ms}
      - {address: 10.0.0.2, flows: 16, flow_series: true}
      - {address: 10.0.0.3, flows: 1}
      - {address: 10.0.0.4, expect: unreachable}
`), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("")
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		flows  int
		series bool
		trace  TraceJob
	}
	tr := TraceJob{MaxTTL: 12, ProbesPerHop: 2}
	wants := map[string]want{
		"icmp 10.0.0.1":  {8, false, tr},
		"tcp 10.0.0.1":   {8, false, tr},
		"stamp 10.0.0.1": {1, false, TraceJob{}},
		"trace 10.0.0.1": {8, false, TraceJob{Method: "icmp", MaxTTL: 12, ProbesPerHop: 2}},
		"mtu 10.0.0.1":   {8, false, TraceJob{}},
		"icmp 10.0.0.2":  {16, true, tr},
		"icmp 10.0.0.3":  {1, false, TraceJob{}},
		"icmp 10.0.0.4":  {1, false, TraceJob{}},
	}
	seen := 0
	for _, s := range p.Probes {
		w, ok := wants[s.Kind.String()+" "+s.Target]
		if !ok {
			continue
		}
		seen++
		if s.Flows != w.flows || s.FlowSeries != w.series || s.TraceOpts != w.trace {
			t.Errorf("%s %s: flows %d series %v trace %+v, want %+v", s.Kind, s.Target, s.Flows, s.FlowSeries, s.TraceOpts, w)
		}
	}
	if seen != len(wants) {
		t.Fatalf("found %d of the %d jobs: %+v", seen, len(wants), p.Probes)
	}
	a, b := p.Probes[0], p.Probes[0]
	b.Flows = 4
	if a.SameSettings(&b) {
		t.Error("a job whose flows changed keeps running with the old count")
	}
	b = a
	b.FlowSeries = true
	if a.SameSettings(&b) {
		t.Error("a job whose flow_series changed keeps running")
	}
}

// The default is one flow: a file that never mentions flows plans what it
// planned before.
func TestFlowsDefault(t *testing.T) {
	c, err := Parse([]byte("sites:\n  - name: a\n    targets: []\n  - name: b\n    targets: [{address: 10.0.0.1, tcp_ports: [22]}]\n"), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Plan("a")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Probes {
		if s.Flows != 1 || s.FlowSeries || s.TraceOpts != (TraceJob{}) {
			t.Errorf("%s: flows %d series %v trace %+v", s.Kind, s.Flows, s.FlowSeries, s.TraceOpts)
		}
	}
}
