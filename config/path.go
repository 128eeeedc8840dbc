package config

import (
	"fmt"
	"time"
)

// Path discovery methods (trace.method).
const (
	TraceUDP  = "udp"
	TraceICMP = "icmp"
	TraceTCP  = "tcp"
)

// Defaults of the trace: and mtu: sections.
const (
	DefaultTraceInterval     = 60 * time.Second
	DefaultTraceMethod       = TraceICMP
	DefaultTraceMaxTTL       = 30
	DefaultTraceProbesPerHop = 3
	DefaultTracePPS          = 100
	DefaultTraceUDPPort      = 33434 // the classic traceroute base port
	DefaultTraceTCPPort      = 443
	DefaultMTUInterval       = 10 * time.Minute
	DefaultMTURetries        = 2
)

// TraceConfig is the mesh-wide path discovery setting (path-metrics feature).
type TraceConfig struct {
	// Enabled turns discovery on for every target; a target's trace: overrides it.
	Enabled  bool     `yaml:"enabled"`
	Interval Duration `yaml:"interval"`
	// Method is the probe packet: icmp (echo), udp (to a closed port) or
	// tcp (SYN, where firewalls allow it). Every method keeps its flow
	// identifier constant across TTLs (Paris traceroute) so ECMP routers
	// keep all probes of one target on one path.
	Method string `yaml:"method"`
	// Port is the destination port of udp and tcp probes (default 33434
	// for udp, 443 for tcp).
	Port uint16 `yaml:"port"`
	// MaxTTL bounds the hops tried before giving up on reaching the target.
	MaxTTL int `yaml:"max_ttl"`
	// ProbesPerHop is how many probes are sent at each TTL; per-hop loss
	// is measured over them.
	ProbesPerHop int `yaml:"probes_per_hop"`
	// PPS caps the packets per second that discovery sends, over all
	// targets together, so a mesh-wide trace never floods a link.
	PPS int `yaml:"pps"`
}

// MTUConfig is the mesh-wide path MTU probing setting.
type MTUConfig struct {
	Interval Duration `yaml:"interval"`
	// Paths lists the path labels probed by default (default: [sitelink]).
	Paths []string `yaml:"paths"`
	// Retries is how many extra times a size that got no answer is sent
	// before it counts as too big, so random loss is not taken for a
	// black hole.
	Retries *int `yaml:"retries"`
}

func (t *TraceConfig) validate(v *validator, path string) {
	set := func(field string) bool { return v.set(path + "." + field) }
	if !set("interval") {
		t.Interval = Duration(DefaultTraceInterval)
	}
	if !set("method") {
		t.Method = DefaultTraceMethod
	}
	if !set("max_ttl") {
		t.MaxTTL = DefaultTraceMaxTTL
	}
	if !set("probes_per_hop") {
		t.ProbesPerHop = DefaultTraceProbesPerHop
	}
	if !set("pps") {
		t.PPS = DefaultTracePPS
	}
	if t.Interval.D() < time.Second {
		v.at(path+".interval", "must be at least 1s, got %s", t.Interval.D())
	}
	switch t.Method {
	case TraceUDP, TraceTCP:
		switch {
		case !set("port") && t.Method == TraceUDP:
			t.Port = DefaultTraceUDPPort
		case !set("port"):
			t.Port = DefaultTraceTCPPort
		case t.Port == 0:
			v.at(path+".port", "port must be between 1 and 65535, got 0")
		}
	case TraceICMP:
		if set("port") {
			v.at(path+".port", "port is only used by the udp and tcp methods, not icmp")
		}
	default:
		v.at(path+".method", "method must be udp, icmp or tcp, got %s", quote(t.Method))
	}
	if t.MaxTTL < 1 || t.MaxTTL > 64 {
		v.at(path+".max_ttl", "must be between 1 and 64 hops, got %d", t.MaxTTL)
	}
	if t.ProbesPerHop < 1 || t.ProbesPerHop > 10 {
		v.at(path+".probes_per_hop", "must be between 1 and 10, got %d", t.ProbesPerHop)
	}
	if t.PPS < 1 || t.PPS > 100000 {
		v.at(path+".pps", "must be between 1 and 100000 packets per second, got %d", t.PPS)
	}
}

func (m *MTUConfig) validate(v *validator, path string) {
	if !v.set(path + ".interval") {
		m.Interval = Duration(DefaultMTUInterval)
	}
	if m.Paths == nil {
		m.Paths = []string{"sitelink"}
	}
	if m.Retries == nil {
		r := DefaultMTURetries
		m.Retries = &r
	}
	if m.Interval.D() < time.Second {
		v.at(path+".interval", "must be at least 1s, got %s", m.Interval.D())
	}
	if *m.Retries < 0 || *m.Retries > 10 {
		v.at(path+".retries", "must be between 0 and 10, got %d", *m.Retries)
	}
	for i, p := range m.Paths {
		v.checkLabel(fmt.Sprintf("%s.paths[%d]", path, i), "path", p)
	}
}

// defaultFor reports whether targets on the given path get MTU probing by default.
func (m *MTUConfig) defaultFor(pathLabel string) bool {
	for _, p := range m.Paths {
		if p == pathLabel {
			return true
		}
	}
	return false
}
