package config

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Protocols a ProbeSpec can name.
const (
	ProtoICMP  = "icmp"
	ProtoTCP   = "tcp"
	ProtoSTAMP = "stamp"
)

// ProbeSpec is one resolved probe: one target, one protocol (and port), with
// every default applied. It is what the scheduler runs and what the exporter
// labels.
type ProbeSpec struct {
	// Labels shared by every series of this probe.
	SourceSite string
	TargetSite string
	Target     string // the address as written: IP literal or hostname
	Path       string
	Segment    string
	Protocol   string
	Port       uint16 // 0 for ICMP

	Family    string // "", "ip4" or "ip6"
	Interval  time.Duration
	Timeout   time.Duration
	Size      int
	TOS       uint8
	Source    string
	Interface string

	Guard bool // expect: unreachable
	Trace bool
	MTU   bool

	// Discovered is set for targets derived from AWS rather than the file.
	Discovered bool
	// Line is where the target was written (0 when discovered).
	Line int
}

// Key identifies the probe across reloads: a probe whose key stays keeps
// its counters even when its interval or timeout change.
func (p *ProbeSpec) Key() string {
	return strings.Join([]string{p.Protocol, p.TargetSite, p.Target, strconv.Itoa(int(p.Port)),
		p.Path, p.Segment, p.Source, p.Interface, strconv.Itoa(int(p.TOS)), p.Family}, "|")
}

// PortLabel is the port label value: empty for ICMP.
func (p *ProbeSpec) PortLabel() string {
	if p.Port == 0 {
		return ""
	}
	return strconv.Itoa(int(p.Port))
}

// Plan is what one agent probes.
type Plan struct {
	Site   string
	Probes []ProbeSpec
	// Probe settings shared by the aggregation.
	LossWindow      int
	DownAfter       int
	ResolveInterval time.Duration
}

// Plan resolves the mesh for the agent at site: every target of every other
// site, one ProbeSpec per protocol and port.
func (c *Config) Plan(site string) (*Plan, error) {
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
	}
	for _, s := range c.Sites {
		if s.Name == site {
			continue
		}
		for i := range s.Targets {
			pl.Probes = append(pl.Probes, c.specsFor(site, s.Name, &s.Targets[i])...)
		}
	}
	return pl, nil
}

func (c *Config) specsFor(source, targetSite string, t *Target) []ProbeSpec {
	base := ProbeSpec{
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
		Trace:      c.Trace.Enabled,
		MTU:        c.MTU.defaultFor(t.Path),
		Line:       t.Line,
	}
	if t.Interval != 0 {
		base.Interval = t.Interval.D()
	}
	if t.Timeout != 0 {
		base.Timeout = t.Timeout.D()
	}
	if t.Size != 0 {
		base.Size = t.Size
	}
	if t.TOS != nil {
		base.TOS = *t.TOS
	}
	if t.Trace != nil {
		base.Trace = *t.Trace
	}
	if t.MTU != nil {
		base.MTU = *t.MTU
	}
	var out []ProbeSpec
	if t.ICMP == nil || *t.ICMP {
		s := base
		s.Protocol = ProtoICMP
		out = append(out, s)
	}
	for i, port := range t.TCPPorts {
		s := base
		s.Protocol = ProtoTCP
		s.Port = port
		// Path work is done once per target: by the ICMP spec, or by the
		// first TCP spec when ICMP is off.
		if len(out) > 0 || i > 0 {
			s.Trace, s.MTU = false, false
		}
		out = append(out, s)
	}
	if t.STAMP != nil && *t.STAMP {
		s := base
		s.Protocol = ProtoSTAMP
		s.Port = c.STAMP.port()
		s.Trace, s.MTU = false, false
		out = append(out, s)
	}
	return out
}

// Summary describes the plan for check-config: probes per protocol and the
// packets per second the agent will send.
type Summary struct {
	Site        string
	ByProtocol  map[string]int
	PacketsPerS map[string]float64
	Total       int
	TotalPPS    float64
}

// Summarize counts the plan's probes and their send rate.
func (p *Plan) Summarize() Summary {
	s := Summary{Site: p.Site, ByProtocol: map[string]int{}, PacketsPerS: map[string]float64{}}
	for i := range p.Probes {
		pr := &p.Probes[i]
		s.ByProtocol[pr.Protocol]++
		pps := float64(time.Second) / float64(pr.Interval)
		if pr.Protocol == ProtoTCP {
			pps *= 3 // SYN, ACK and RST leave the agent per connect probe
		}
		s.PacketsPerS[pr.Protocol] += pps
		s.Total++
		s.TotalPPS += pps
	}
	return s
}

// Protocols returns the summary's protocols in a stable order.
func (s Summary) Protocols() []string {
	out := make([]string, 0, len(s.ByProtocol))
	for k := range s.ByProtocol {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
