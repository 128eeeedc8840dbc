// Package config reads the mesh file: one YAML document that describes every
// site and every address to probe there. The same file is deployed on every
// agent; Plan resolves it into the probe list of one agent.
//
// This is the only package that reads YAML. Decoding is strict: unknown keys,
// bad values and failed validation are reported as file:line:column with the
// field's path, so a user can fix the file without guessing. A value left
// out takes its default; one written (0 included) is checked. Anchors,
// aliases and merge keys work, within a bound on how much they expand.
package config

import "time"

// Defaults applied when the mesh file leaves a value out. A value written
// as 0 is not "left out": it is checked against the ranges like any other.
const (
	DefaultInterval = time.Second
	// DefaultTimeout applies when no timeout is written, unless 10 times the
	// interval is shorter: then that is the timeout (an interval of 100ms
	// alone gets 1s), so a default never breaks the timeout ≤ 10 × interval rule.
	DefaultTimeout         = 2 * time.Second
	DefaultSize            = 56
	DefaultLossWindow      = 100
	DefaultDownAfter       = 3
	DefaultResolveInterval = 5 * time.Minute
	DefaultPath            = "default"
	DefaultSegment         = "default"

	// DefaultFlows is one flow identity per probe job; MaxFlows the most a
	// target may spread its probes over (docs/ecmp.md: 115 flows leave a
	// 16-way ECMP group's members all probed with 99% probability).
	DefaultFlows = 1
	MaxFlows     = 128

	MinInterval = 10 * time.Millisecond
	MinSize     = 16   // ICMP payload bytes: the probe token and serial need 16
	MaxSize     = 9000 // ICMP payload bytes: a 9001-byte jumbo MTU minus headers is the most any path carries.
)

// Config is a decoded and validated mesh file.
type Config struct {
	// Site is the agent's own site; --site and PROBED_SITE override it.
	Site  string      `yaml:"site"`
	Sites []Site      `yaml:"sites"`
	Probe ProbeConfig `yaml:"probe"`

	// Sections owned by later features. Each lives in its own file.
	Trace TraceConfig `yaml:"trace"`
	MTU   MTUConfig   `yaml:"mtu"`
	STAMP STAMPConfig `yaml:"stamp"`
	AWS   *AWSConfig  `yaml:"aws"`
	SLA   SLAConfig   `yaml:"sla"`

	// File is the path the config was read from (for messages).
	File string `yaml:"-"`
}

// Site is one data center.
type Site struct {
	Name string `yaml:"name"`
	// Region and Location tie the site to AWS (region of its Direct Connect
	// location, and the location code such as "EqDC2").
	Region   string `yaml:"region"`
	Location string `yaml:"location"`
	// Agent is the address the site's probed agent listens on (STAMP
	// reflector, metrics). Optional.
	Agent   string   `yaml:"agent"`
	Targets []Target `yaml:"targets"`

	// Line is where the site is written (set by Parse).
	Line int `yaml:"-"`
}

// Target is one address at a site. Every target gets ICMP echo; each entry of
// TCPPorts adds a TCP-connect probe.
type Target struct {
	Address  string   `yaml:"address"`
	Path     string   `yaml:"path"`
	Segment  string   `yaml:"segment"`
	TCPPorts []uint16 `yaml:"tcp_ports"`
	// ICMP turns the ICMP echo probe off when set to false.
	ICMP *bool `yaml:"icmp"`

	Interval  Duration `yaml:"interval"`
	Timeout   Duration `yaml:"timeout"`
	Size      int      `yaml:"size"`
	TOS       *uint8   `yaml:"tos"`
	Source    string   `yaml:"source"`
	Interface string   `yaml:"interface"`
	Family    string   `yaml:"family"`
	// Flows spreads the target's ICMP and TCP probes over this many flow
	// identities (ICMP identifiers, TCP source ports), so that each ECMP or
	// LAG member path is probed (docs/ecmp.md). 0: probe.flows.
	Flows int `yaml:"flows"`
	// FlowSeries exports per-flow series for this target (nil: probe.flow_series).
	FlowSeries *bool `yaml:"flow_series"`

	// Expect "unreachable" makes the target a segmentation guard: a reply
	// is a violation (path-metrics issue).
	Expect string `yaml:"expect"`
	// Trace and MTU switch path discovery and PMTU probing for this
	// target; nil means the global default.
	Trace *bool `yaml:"trace"`
	MTU   *bool `yaml:"mtu"`
	// STAMP marks the target as a STAMP reflector (a peer agent or router).
	STAMP *bool `yaml:"stamp"`

	// Line is where the target is written (set by Parse), for messages and
	// check-config's listing.
	Line int `yaml:"-"`
}

// ProbeConfig holds the mesh-wide probe defaults.
type ProbeConfig struct {
	Interval        Duration `yaml:"interval"`
	Timeout         Duration `yaml:"timeout"`
	Size            int      `yaml:"size"`
	TOS             uint8    `yaml:"tos"`
	LossWindow      int      `yaml:"loss_window"`
	DownAfter       int      `yaml:"down_after"`
	ResolveInterval Duration `yaml:"resolve_interval"`
	// Flows is the default number of flow identities per target (1).
	Flows int `yaml:"flows"`
	// FlowSeries exports per-flow series for targets with more than one
	// flow (false: per-target summaries only, per-flow detail in the JSON API).
	FlowSeries bool `yaml:"flow_series"`
}

// IsGuard reports whether the target is a segmentation guard (expect: unreachable).
func (t *Target) IsGuard() bool { return t.Expect == "unreachable" }
