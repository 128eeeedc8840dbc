package config

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Protocols a ProbeSpec can name (its protocol label).
const (
	ProtoICMP  = "icmp"
	ProtoTCP   = "tcp"
	ProtoSTAMP = "stamp"
)

// Kind is what a job does. Every kind runs in the probe engine: scheduled at
// a stable phase of its interval, its address resolved by the one resolver,
// reconciled by key on reload.
type Kind uint8

const (
	KindICMP  Kind = iota // ICMP echo, over the engine's shared sockets
	KindTCP               // TCP connect
	KindSTAMP             // a STAMP (RFC 8762) session to a reflector
	KindTrace             // Paris-traceroute path discovery
	KindMTU               // path MTU search
	NumKinds
)

var kindNames = [NumKinds]string{"icmp", "tcp", "stamp", "trace", "mtu"}

func (k Kind) String() string {
	if k < NumKinds {
		return kindNames[k]
	}
	return "unknown"
}

// ProbeSpec is one job of an agent: one target, one kind (and port), with
// every default applied. It is what the engine runs and what the exporter
// labels.
type ProbeSpec struct {
	Kind Kind

	// Labels shared by every series of this job. Trace and MTU jobs carry
	// the labels of the probe they belong to (protocol icmp, or tcp with
	// its port when ICMP is off for the target). Port (below) is 0 for ICMP.
	SourceSite string
	TargetSite string
	Target     string // the address as written: IP literal or hostname
	Path       string
	Segment    string
	Protocol   string

	Family    string // "", "ip4" or "ip6"
	Interval  time.Duration
	Timeout   time.Duration
	Size      int
	Source    string
	Interface string

	// Flows is the number of flow identities the job's probes take turns
	// on (ICMP and TCP jobs; 1 for every other kind and for guards).
	// FlowSeries (below) asks for per-flow series. Trace jobs and MTU
	// searches carry the values of the probe they belong to.
	Flows int

	// Settings of the other kinds (zero for the kinds that do not use them).
	TraceOpts TraceJob
	MTUOpts   MTUJob
	STAMPOpts STAMPJob

	// Line is where the target was written (0 when discovered).
	Line int

	// The small fields together: a plan holds a spec per job, and
	// interleaving them with the words above cost 10 % of its size.
	Port       uint16
	TOS        uint8
	Guard      bool // expect: unreachable
	FlowSeries bool
	// Discovered is set for targets derived from AWS rather than the file.
	Discovered bool
}

// TraceJob is what a path discovery job needs beyond the probe settings.
type TraceJob struct {
	Method       string
	Port         uint16
	MaxTTL       int
	ProbesPerHop int
}

// MTUJob is what a path MTU search needs beyond the probe settings.
type MTUJob struct {
	Retries int
}

// STAMPJob is what a STAMP session needs beyond the probe settings.
type STAMPJob struct {
	// Key is the HMAC key of authenticated mode; nil for unauthenticated.
	Key []byte
	// Window is the number of replies the delay variation's minimum is
	// taken over (the loss window).
	Window int
}

// Key identifies the job across reloads: a job whose key stays keeps its
// counters and phase. ICMP, TCP and STAMP keys are the protocol-prefixed
// identity; trace and MTU jobs prefix their kind to their probe's key.
func (p *ProbeSpec) Key() string {
	k := p.ProbeKey()
	if p.Kind == KindTrace || p.Kind == KindMTU {
		k = p.Kind.String() + "|" + k
	}
	return k
}

// JobID is what Key says, as a comparable value: the engine looks every job
// of a plan up by it on each reload, and building 10,000 key strings for
// that cost half a megabyte a time. Two specs have the same JobID exactly
// when they have the same Key.
type JobID struct {
	kind                                 Kind // KindTrace or KindMTU; KindICMP for the kinds keyed by protocol
	protocol, targetSite, target         string
	port                                 uint16
	tos                                  uint8
	path, segment, source, iface, family string
}

// ID is the job's JobID.
func (p *ProbeSpec) ID() JobID {
	id := JobID{protocol: p.Protocol, targetSite: p.TargetSite, target: p.Target, port: p.Port, tos: p.TOS,
		path: p.Path, segment: p.Segment, source: p.Source, iface: p.Interface, family: p.Family}
	if p.Kind == KindTrace || p.Kind == KindMTU {
		id.kind = p.Kind
	}
	return id
}

// ProbeKey is the key of the probe the job measures: the job's own key for
// ICMP, TCP and STAMP, the key of the probe they belong to for trace and
// MTU jobs (whose results describe that probe's path).
func (p *ProbeSpec) ProbeKey() string {
	return strings.Join([]string{p.Protocol, p.TargetSite, p.Target, strconv.Itoa(int(p.Port)),
		p.Path, p.Segment, p.Source, p.Interface, strconv.Itoa(int(p.TOS)), p.Family}, "|")
}

// SameSettings reports whether o has p's settings outside the key: a job
// whose settings stay is left running on reload, one whose settings
// changed is restarted (its series continue). It allocates nothing: a
// reload compares every job.
func (p *ProbeSpec) SameSettings(o *ProbeSpec) bool {
	return p.Interval == o.Interval && p.Timeout == o.Timeout && p.Size == o.Size && p.Guard == o.Guard &&
		p.Flows == o.Flows && p.FlowSeries == o.FlowSeries &&
		p.TraceOpts == o.TraceOpts && p.MTUOpts == o.MTUOpts &&
		p.STAMPOpts.Window == o.STAMPOpts.Window && bytes.Equal(p.STAMPOpts.Key, o.STAMPOpts.Key)
}

// PortLabel is the port label value: empty for ICMP.
func (p *ProbeSpec) PortLabel() string {
	if p.Port == 0 {
		return ""
	}
	return strconv.Itoa(int(p.Port))
}

// LabelValues are the job's probe label values in the order of the label
// names every probe series uses: source_site, target_site, target, path,
// segment, protocol, port.
func (p *ProbeSpec) LabelValues() []string {
	return []string{p.SourceSite, p.TargetSite, p.Target, p.Path, p.Segment, p.Protocol, p.PortLabel()}
}

// Plan is everything one agent runs.
type Plan struct {
	Site   string
	Probes []ProbeSpec // every job, of every kind
	// Probe settings shared by the aggregation.
	LossWindow      int
	DownAfter       int
	ResolveInterval time.Duration
	// TracePPS is the packets-per-second budget all trace jobs share.
	TracePPS int
}

// Discovered is a target found outside the mesh file (AWS SiteLink
// discovery): planned like a file target with ICMP echo and the probe
// defaults, unless the file already probes its address.
type Discovered struct {
	Site, Address, Path, Segment string
}

// Plan resolves the mesh for the agent at site: every target of every other
// site, one job per kind, protocol and port; the STAMP sessions to the other
// agents; and the discovered targets the file does not already list.
func (c *Config) Plan(site string, discovered ...Discovered) (*Plan, error) {
	if site == "" {
		site = c.Site
	}
	if site == "" {
		return nil, &Error{File: c.File, Msg: "no site given: set site: in the file, --site or PROBED_SITE"}
	}
	found := false
	for _, s := range c.Sites {
		if s.Name == site {
			found = true
		}
	}
	if !found {
		return nil, &Error{File: c.File, Field: "site", Msg: fmt.Sprintf("unknown site %q: the sites list has %s", site, strings.Join(siteNames(c), ", "))}
	}
	pl := &Plan{
		Site:            site,
		LossWindow:      c.Probe.LossWindow,
		DownAfter:       c.Probe.DownAfter,
		ResolveInterval: c.Probe.ResolveInterval.D(),
		TracePPS:        c.Trace.PPS,
	}
	// Sized up front: a reload of 10,000 targets must not grow it by copying.
	n := len(c.Sites)
	for _, s := range c.Sites {
		for i := range s.Targets {
			t := &s.Targets[i]
			n += 1 + len(t.TCPPorts)
			if c.Trace.Enabled || t.Trace != nil {
				n++
			}
			if c.MTU.defaultFor(t.Path) || t.MTU != nil {
				n++
			}
		}
	}
	pl.Probes = make([]ProbeSpec, 0, n)
	for _, s := range c.Sites {
		if s.Name == site {
			continue
		}
		for i := range s.Targets {
			pl.Probes = c.appendJobs(pl.Probes, site, s.Name, &s.Targets[i])
		}
	}
	pl.Probes = c.appendAgentSessions(pl.Probes, site)
	pl.Probes = c.appendDiscovered(pl.Probes, site, discovered)
	return pl, nil
}

// base is a job of target t with the probe defaults and the target's overrides.
func (c *Config) base(source, targetSite string, t *Target) ProbeSpec {
	s := ProbeSpec{
		SourceSite: source,
		TargetSite: targetSite,
		Target:     t.Address,
		Path:       t.Path,
		Segment:    t.Segment,
		Family:     t.Family,
		Interval:   c.Probe.Interval.D(),
		Timeout:    c.Probe.Timeout.D(),
		Size:       c.Probe.Size,
		TOS:        c.Probe.TOS,
		Source:     t.Source,
		Interface:  t.Interface,
		Guard:      t.IsGuard(),
		Flows:      c.Probe.Flows,
		FlowSeries: c.Probe.FlowSeries,
		Line:       t.Line,
	}
	if t.Flows != 0 {
		s.Flows = t.Flows
	}
	if t.FlowSeries != nil {
		s.FlowSeries = *t.FlowSeries
	}
	if s.Guard || s.Flows < 1 {
		// A guard is expected not to answer: there is no loss to attribute.
		s.Flows = 1
	}
	if s.Flows > 1 {
		// The member paths of the flows are found by Paris traces with
		// the trace section's limits (docs/ecmp.md).
		s.TraceOpts = TraceJob{MaxTTL: c.Trace.MaxTTL, ProbesPerHop: c.Trace.ProbesPerHop}
	}
	if t.Interval != 0 {
		s.Interval = t.Interval.D()
	}
	if t.Timeout != 0 {
		s.Timeout = t.Timeout.D()
	}
	if t.Size != 0 {
		s.Size = t.Size
	}
	if t.TOS != nil {
		s.TOS = *t.TOS
	}
	return s
}

func (c *Config) appendJobs(out []ProbeSpec, source, targetSite string, t *Target) []ProbeSpec {
	base := c.base(source, targetSite, t)
	// Path work is done once per target, with the labels of its first
	// probe: ICMP, or the first TCP port when ICMP is off. Guards are
	// expected not to answer: tracing them would only report a broken path.
	owner := -1
	if t.ICMP == nil || *t.ICMP {
		owner = len(out)
		out = append(out, base)
		out[owner].Kind, out[owner].Protocol = KindICMP, ProtoICMP
	}
	for _, port := range t.TCPPorts {
		if owner < 0 {
			owner = len(out)
		}
		out = append(out, base)
		s := &out[len(out)-1]
		s.Kind, s.Protocol, s.Port = KindTCP, ProtoTCP, port
	}
	if t.STAMP != nil && *t.STAMP {
		out = append(out, c.stampJob(base, base.Target))
	}
	if owner < 0 || base.Guard {
		return out
	}
	trace, mtu := c.Trace.Enabled, c.MTU.defaultFor(t.Path)
	if t.Trace != nil {
		trace = *t.Trace
	}
	if t.MTU != nil {
		mtu = *t.MTU
	}
	if trace {
		s := out[owner]
		s.Kind, s.Interval = KindTrace, c.Trace.Interval.D()
		s.TraceOpts = TraceJob{Method: c.Trace.Method, Port: c.Trace.Port, MaxTTL: c.Trace.MaxTTL, ProbesPerHop: c.Trace.ProbesPerHop}
		out = append(out, s)
	}
	if mtu {
		s := out[owner]
		s.Kind, s.Interval, s.TraceOpts = KindMTU, c.MTU.Interval.D(), TraceJob{}
		if c.MTU.Retries != nil {
			s.MTUOpts.Retries = *c.MTU.Retries
		}
		out = append(out, s)
	}
	return out
}

func (c *Config) stampJob(base ProbeSpec, target string) ProbeSpec {
	s := base
	s.Kind, s.Protocol, s.Port, s.Target = KindSTAMP, ProtoSTAMP, c.STAMP.port(), target
	s.Flows, s.FlowSeries, s.TraceOpts = 1, false, TraceJob{}
	s.STAMPOpts = STAMPJob{Key: c.STAMP.Key(), Window: c.Probe.LossWindow}
	return s
}

// appendAgentSessions adds a STAMP session to every other site's agent when
// stamp.probe_agents is set, unless a target marked stamp: true already
// names that address. Their path and segment labels are "agent".
func (c *Config) appendAgentSessions(out []ProbeSpec, site string) []ProbeSpec {
	if !c.STAMP.ProbeAgents {
		return out
	}
	have := map[string]bool{}
	for i := range out {
		if out[i].Kind == KindSTAMP {
			have[out[i].Target] = true
		}
	}
	for _, s := range c.Sites {
		if s.Name == site || s.Agent == "" || have[s.Agent] {
			continue
		}
		base := ProbeSpec{
			SourceSite: site, TargetSite: s.Name, Path: "agent", Segment: "agent",
			Interval: c.Probe.Interval.D(), Timeout: c.Probe.Timeout.D(), Size: c.Probe.Size, TOS: c.Probe.TOS,
			Line: s.Line,
		}
		out = append(out, c.stampJob(base, s.Agent))
	}
	return out
}

// appendDiscovered adds the discovered targets whose address the plan does
// not already probe with ICMP.
func (c *Config) appendDiscovered(out []ProbeSpec, site string, found []Discovered) []ProbeSpec {
	if len(found) == 0 {
		return out
	}
	have := map[netip.Addr]bool{}
	for i := range out {
		if a, err := netip.ParseAddr(out[i].Target); err == nil && out[i].Kind == KindICMP {
			have[a.Unmap()] = true
		}
	}
	for _, d := range found {
		a, err := netip.ParseAddr(d.Address)
		if err != nil || d.Site == site || have[a.Unmap()] {
			continue
		}
		have[a.Unmap()] = true
		path, seg := d.Path, d.Segment
		if path == "" {
			path = DefaultPath
		}
		if seg == "" {
			seg = DefaultSegment
		}
		out = append(out, ProbeSpec{
			Kind: KindICMP, SourceSite: site, TargetSite: d.Site, Target: a.Unmap().String(), Path: path, Segment: seg,
			Protocol: ProtoICMP,
			Interval: c.Probe.Interval.D(), Timeout: c.Probe.Timeout.D(), Size: c.Probe.Size, TOS: c.Probe.TOS,
			Flows: max(c.Probe.Flows, 1), FlowSeries: c.Probe.FlowSeries, Discovered: true,
		})
		if s := &out[len(out)-1]; s.Flows > 1 {
			s.TraceOpts = TraceJob{MaxTTL: c.Trace.MaxTTL, ProbesPerHop: c.Trace.ProbesPerHop}
		}
	}
	return out
}

// Summary describes the plan for check-config: jobs per kind and the
// packets per second the agent will send.
type Summary struct {
	Site        string
	ByKind      map[string]int
	PacketsPerS map[string]float64
	Total       int
	TotalPPS    float64
	// TraceCapped is set when the traces would send more than trace.pps
	// allows: the figure shown is the cap, and rounds take longer.
	TraceCapped bool
}

// Packets one job sends per run, for the summary. Trace rounds stop a few
// TTLs past the target; a typical 15-hop path plus the 3-TTL overshoot of
// the send window is the estimate (capped by max_ttl). An MTU search is a
// binary search over 68–9001 bytes: about 14 sizes, each sent up to
// 1+retries times when unanswered; a search that finds the MTU from a
// Fragmentation Needed answer takes 2–3.
const (
	traceHopsEstimate = 18
	mtuSizesEstimate  = 14
)

// packetsPerRun is how many packets one run of the job leaves the agent.
func (p *ProbeSpec) packetsPerRun() float64 {
	switch p.Kind {
	case KindTCP:
		return 3 // SYN, ACK and RST
	case KindTrace:
		return float64(min(traceHopsEstimate, p.TraceOpts.MaxTTL) * p.TraceOpts.ProbesPerHop)
	case KindMTU:
		return float64(mtuSizesEstimate * (1 + p.MTUOpts.Retries))
	}
	return 1
}

// Summarize counts the plan's jobs and their send rate.
func (p *Plan) Summarize() Summary {
	s := Summary{Site: p.Site, ByKind: map[string]int{}, PacketsPerS: map[string]float64{}}
	for i := range p.Probes {
		pr := &p.Probes[i]
		k := pr.Kind.String()
		s.ByKind[k]++
		s.PacketsPerS[k] += pr.packetsPerRun() * float64(time.Second) / float64(pr.Interval)
		s.Total++
	}
	if tr := s.PacketsPerS[KindTrace.String()]; p.TracePPS > 0 && tr > float64(p.TracePPS) {
		s.PacketsPerS[KindTrace.String()] = float64(p.TracePPS)
		s.TraceCapped = true
	}
	for _, v := range s.PacketsPerS {
		s.TotalPPS += v
	}
	s.TotalPPS = math.Round(s.TotalPPS*10) / 10
	return s
}

// Kinds returns the summary's kinds in a stable order.
func (s Summary) Kinds() []string {
	out := make([]string, 0, len(s.ByKind))
	for k := range s.ByKind {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
