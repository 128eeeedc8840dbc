package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

var (
	siteNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	hostnameRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$`)
	labelRE    = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
)

// validate applies defaults and checks values that the shape check cannot.
func (v *validator) validate(c *Config) {
	p := &c.Probe
	if p.Interval == 0 {
		p.Interval = Duration(DefaultInterval)
	}
	if p.Timeout == 0 {
		p.Timeout = Duration(DefaultTimeout)
	}
	if p.Size == 0 {
		p.Size = DefaultSize
	}
	if p.LossWindow == 0 {
		p.LossWindow = DefaultLossWindow
	}
	if p.DownAfter == 0 {
		p.DownAfter = DefaultDownAfter
	}
	if p.ResolveInterval == 0 {
		p.ResolveInterval = Duration(DefaultResolveInterval)
	}
	v.checkTiming("probe", p.Interval.D(), p.Timeout.D())
	v.checkSize("probe.size", p.Size)
	if p.LossWindow < 1 || p.LossWindow > 100000 {
		v.at("probe.loss_window", "must be between 1 and 100000 probes, got %d", p.LossWindow)
	}
	if p.DownAfter < 1 {
		v.at("probe.down_after", "must be at least 1, got %d", p.DownAfter)
	}
	if p.ResolveInterval.D() < time.Second {
		v.at("probe.resolve_interval", "must be at least 1s, got %s", p.ResolveInterval.D())
	}

	if len(c.Sites) == 0 {
		v.at("sites", "empty mesh: no sites are defined")
		return
	}
	siteLine := map[string]int{}
	type key struct{ addr, path, segment string }
	seen := map[key]string{}
	nTargets := 0
	for i := range c.Sites {
		s := &c.Sites[i]
		sp := fmt.Sprintf("sites[%d]", i)
		switch {
		case s.Name == "":
			v.at(sp+".name", "every site needs a name")
		case !siteNameRE.MatchString(s.Name):
			v.at(sp+".name", "site name %q may only hold letters, digits, '-', '_' and '.'", s.Name)
		default:
			if l, dup := siteLine[s.Name]; dup {
				v.at(sp+".name", "duplicate site %q (first defined at line %d)", s.Name, l)
			}
			siteLine[s.Name] = s.Line
		}
		if s.Agent != "" {
			if _, err := netip.ParseAddr(s.Agent); err != nil && !hostnameRE.MatchString(s.Agent) {
				v.at(sp+".agent", "not an IP address or hostname: %q", s.Agent)
			}
		}
		for j := range s.Targets {
			nTargets++
			t := &s.Targets[j]
			tp := fmt.Sprintf("%s.targets[%d]", sp, j)
			v.validateTarget(c, t, tp)
			k := key{strings.ToLower(t.Address), t.Path, t.Segment}
			if first, dup := seen[k]; dup {
				v.at(tp+".address", "duplicate target %s (path %s, segment %s); first defined at %s", t.Address, t.Path, t.Segment, first)
			} else {
				seen[k] = fmt.Sprintf("line %d", t.Line)
			}
		}
	}
	if nTargets == 0 {
		v.at("sites", "empty mesh: no site has any targets")
	}
	if c.Site != "" {
		if _, ok := siteLine[c.Site]; !ok {
			v.at("site", "unknown site %q: the sites list has %s", c.Site, strings.Join(siteNames(c), ", "))
		}
	}
	c.Trace.validate(v, "trace")
	c.MTU.validate(v, "mtu")
	c.STAMP.validate(v, "stamp")
	if c.AWS != nil {
		c.AWS.validate(v, "aws", c)
	}
	c.SLA.validate(v, "sla")
}

func siteNames(c *Config) []string {
	n := make([]string, len(c.Sites))
	for i, s := range c.Sites {
		n[i] = s.Name
	}
	return n
}

func (v *validator) checkTiming(path string, interval, timeout time.Duration) {
	if interval < MinInterval {
		v.at(path+".interval", "interval %s is below the minimum of %s", interval, MinInterval)
	}
	if timeout <= 0 {
		v.at(path+".timeout", "timeout must be positive")
	} else if interval >= MinInterval && timeout > 10*interval {
		v.at(path+".timeout", "timeout %s is more than 10 times the interval %s", timeout, interval)
	}
}

func (v *validator) checkSize(path string, size int) {
	if size < MinSize || size > MaxSize {
		v.at(path, "ICMP payload size must be between %d and %d bytes, got %d", MinSize, MaxSize, size)
	}
}

func (v *validator) validateTarget(c *Config, t *Target, tp string) {
	if t.Path == "" {
		t.Path = DefaultPath
	}
	if t.Segment == "" {
		t.Segment = DefaultSegment
	}
	if !labelRE.MatchString(t.Path) {
		v.at(tp+".path", "path %q may only hold letters, digits and _.:-", t.Path)
	}
	if !labelRE.MatchString(t.Segment) {
		v.at(tp+".segment", "segment %q may only hold letters, digits and _.:-", t.Segment)
	}
	var addr netip.Addr
	switch {
	case t.Address == "":
		v.at(tp+".address", "every target needs an address")
	default:
		a, err := netip.ParseAddr(t.Address)
		if err == nil {
			if a.Zone() != "" {
				v.at(tp+".address", "zoned address %q: use interface instead", t.Address)
			}
			if a.IsUnspecified() || a.IsMulticast() {
				v.at(tp+".address", "%s is not a unicast address", t.Address)
			}
			addr = a.Unmap()
			t.Address = addr.String()
		} else if looksNumeric(t.Address) || !hostnameRE.MatchString(t.Address) {
			v.at(tp+".address", "invalid address %q: not an IP address or a hostname", t.Address)
		}
	}
	switch t.Family {
	case "":
	case "ip4", "ip6":
		if addr.IsValid() && (addr.Is4() != (t.Family == "ip4")) {
			v.at(tp+".family", "family %s does not match address %s", t.Family, t.Address)
		}
	default:
		v.at(tp+".family", "family must be ip4 or ip6, got %q", t.Family)
	}
	if t.Source != "" {
		s, err := netip.ParseAddr(t.Source)
		switch {
		case err != nil:
			v.at(tp+".source", "invalid source address %q", t.Source)
		case addr.IsValid() && s.Unmap().Is4() != addr.Is4():
			v.at(tp+".source", "source %s and address %s are of different families", t.Source, t.Address)
		}
	}
	if t.Interface != "" && (len(t.Interface) > 15 || strings.ContainsAny(t.Interface, " /")) {
		v.at(tp+".interface", "invalid interface name %q", t.Interface)
	}
	interval, timeout := c.Probe.Interval.D(), c.Probe.Timeout.D()
	if t.Interval != 0 {
		interval = t.Interval.D()
	}
	if t.Timeout != 0 {
		timeout = t.Timeout.D()
	}
	if t.Interval != 0 || t.Timeout != 0 {
		v.checkTiming(tp, interval, timeout)
	}
	if t.Size != 0 {
		v.checkSize(tp+".size", t.Size)
	}
	ports := map[uint16]bool{}
	for k, p := range t.TCPPorts {
		if p == 0 {
			v.at(fmt.Sprintf("%s.tcp_ports[%d]", tp, k), "port 0 is not a valid TCP port")
		}
		if ports[p] {
			v.at(fmt.Sprintf("%s.tcp_ports[%d]", tp, k), "port %d listed twice", p)
		}
		ports[p] = true
	}
	switch t.Expect {
	case "", "reachable", "unreachable":
	default:
		v.at(tp+".expect", "expect must be reachable or unreachable, got %q", t.Expect)
	}
	if t.ICMP != nil && !*t.ICMP && len(t.TCPPorts) == 0 && (t.STAMP == nil || !*t.STAMP) {
		v.at(tp+".icmp", "icmp is off and no tcp_ports or stamp are set: nothing would be probed")
	}
}

// looksNumeric catches malformed IP literals such as 10.0.0.300 that would
// otherwise pass as hostnames.
func looksNumeric(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if strings.Contains(s, ":") {
		return true
	}
	last := s[strings.LastIndex(s, ".")+1:]
	return strings.Trim(last, "0123456789") == ""
}
