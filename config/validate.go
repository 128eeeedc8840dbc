package config

import (
	"fmt"
	"hash/maphash"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"
)

var (
	siteNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	hostnameRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$`)
	labelRE    = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
)

// validate applies defaults and checks values that the shape check cannot.
// A default applies only where the file writes nothing: a value written as
// 0 is checked like any other, and a default never breaks a rule the user
// could not see (see defaultTimeout).
func (v *validator) validate(c *Config) {
	v.validateProbe(&c.Probe)

	if len(c.Sites) == 0 {
		v.at("sites", "empty mesh: no sites are defined")
		return
	}
	type site struct {
		line int
		node *yaml.Node
	}
	sites := make(map[string]site, len(c.Sites))
	// Duplicate targets are found by a hash of (address, path, segment)
	// pointing at the first target with it: an eighth of a map of the keys
	// themselves, which cost a megabyte on every reload at 10,000 targets.
	// Distinct keys with one hash (practically never) go to other.
	type key struct{ addr, path, segment string }
	type at struct{ site, target int }
	keyOf := func(p at) key {
		t := &c.Sites[p.site].Targets[p.target]
		return key{strings.ToLower(t.Address), t.Path, t.Segment}
	}
	all := 0
	for i := range c.Sites {
		all += len(c.Sites[i].Targets)
	}
	seed := maphash.MakeSeed()
	seen := make(map[uint64]at, all)
	var other map[key]at
	nTargets := 0
	for i := range c.Sites {
		s := &c.Sites[i]
		sp := "sites[" + strconv.Itoa(i) + "]"
		n, _, via := v.lookup(sp)
		if n != nil {
			s.Line = n.Line
		}
		switch {
		case s.Name == "":
			v.at(sp+".name", "every site needs a name")
		case !siteNameRE.MatchString(s.Name):
			v.at(sp+".name", "site name %s may only hold letters, digits, '-', '_' and '.'", quote(s.Name))
		default:
			if first, dup := sites[s.Name]; dup {
				if n == first.node && via != nil {
					v.errorf(via, sp, "this alias repeats site %s (line %d): a site may be listed once", quote(s.Name), first.line)
				} else {
					v.at(sp+".name", "duplicate site %s (first defined at line %d)", quote(s.Name), first.line)
				}
			} else {
				sites[s.Name] = site{s.Line, n}
			}
		}
		if s.Agent != "" {
			if _, err := netip.ParseAddr(s.Agent); err != nil && !hostnameRE.MatchString(s.Agent) {
				v.at(sp+".agent", "not an IP address or hostname: %s", quote(s.Agent))
			}
		}
		for j := range s.Targets {
			nTargets++
			t := &s.Targets[j]
			tp := sp + ".targets[" + strconv.Itoa(j) + "]"
			tn, _, via := v.lookup(tp)
			if tn != nil {
				t.Line = tn.Line
			}
			v.validateTarget(c, t, tp, tn)
			k := key{strings.ToLower(t.Address), t.Path, t.Segment}
			h := maphash.Comparable(seed, k)
			p, dup := seen[h]
			if !dup {
				seen[h] = at{i, j}
				continue
			}
			if keyOf(p) != k {
				if p, dup = other[k]; !dup {
					if other == nil {
						other = map[key]at{}
					}
					other[k] = at{i, j}
					continue
				}
			}
			first := &c.Sites[p.site].Targets[p.target]
			// A target repeated through an alias has the position of the
			// first one: point at the alias instead.
			if fn, _, _ := v.lookup("sites[" + strconv.Itoa(p.site) + "].targets[" + strconv.Itoa(p.target) + "]"); tn == fn && via != nil {
				v.errorf(via, tp, "this alias repeats the target %s written at line %d: a target may be listed once", clip(t.Address), first.Line)
				continue
			}
			v.at(tp+".address", "duplicate target %s (path %s, segment %s); first defined at line %d", clip(t.Address), clip(t.Path), clip(t.Segment), first.Line)
		}
	}
	if nTargets == 0 {
		v.at("sites", "empty mesh: no site has any targets")
	}
	if c.Site != "" {
		if _, ok := sites[c.Site]; !ok {
			v.at("site", "unknown site %s: the sites list has %s", quote(c.Site), strings.Join(siteNames(c), ", "))
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

func (v *validator) validateProbe(p *ProbeConfig) {
	if !v.set("probe.interval") {
		p.Interval = Duration(DefaultInterval)
	}
	if !v.set("probe.timeout") {
		p.Timeout = Duration(defaultTimeout(p.Interval.D()))
	}
	if !v.set("probe.size") {
		p.Size = DefaultSize
	}
	if !v.set("probe.loss_window") {
		p.LossWindow = DefaultLossWindow
	}
	if !v.set("probe.down_after") {
		p.DownAfter = DefaultDownAfter
	}
	if !v.set("probe.resolve_interval") {
		p.ResolveInterval = Duration(DefaultResolveInterval)
	}
	if !v.set("probe.flows") {
		p.Flows = DefaultFlows
	}
	v.checkTiming("probe", p.Interval.D(), p.Timeout.D(), v.from("probe.interval"), v.from("probe.timeout"))
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
	v.checkFlows("probe.flows", p.Flows)
}

func (v *validator) checkFlows(path string, n int) {
	if n < 1 || n > MaxFlows {
		v.at(path, "must be between 1 and %d flows, got %d", MaxFlows, n)
	}
}

// defaultTimeout is the timeout of a probe whose file writes none: 2s, or 10
// times the interval when that is shorter, so that an interval written alone
// (100ms) is valid as it is.
func defaultTimeout(interval time.Duration) time.Duration {
	if interval < MinInterval {
		return DefaultTimeout // the interval is reported; do not add to it
	}
	return min(DefaultTimeout, 10*interval)
}

// origin says where a value in force comes from, for messages about a
// value the user did not write next to the one in error.
func (v *validator) origin(path string) string {
	if o, ok := v.origins[path]; ok {
		return o // asked once per target: 10,000 times per load
	}
	o := "the default"
	if v.set(path) {
		o = fmt.Sprintf("set at %s, line %d", path, v.line(path))
	}
	if v.origins == nil {
		v.origins = map[string]string{}
	}
	v.origins[path] = o
	return o
}

// from is "" when path is written, else "the default": the origin of a
// value for checks made at the level where it is written.
func (v *validator) from(path string) string {
	if v.set(path) {
		return ""
	}
	return "the default"
}

// checkTiming checks an interval and timeout in force at path (probe or a
// target). intervalFrom and timeoutFrom are "" for a value written at path
// itself, else where it comes from ("the default", "set at probe.timeout,
// line 3"). An error lands on a value written at path and names the origin
// of the other; a value from elsewhere is checked where it is written.
func (v *validator) checkTiming(path string, interval, timeout time.Duration, intervalFrom, timeoutFrom string) {
	ok := true
	if interval < MinInterval {
		if intervalFrom == "" {
			v.at(path+".interval", "interval %s is below the minimum of %s", interval, MinInterval)
		}
		ok = false
	}
	if timeout <= 0 {
		if timeoutFrom == "" {
			v.at(path+".timeout", "timeout must be positive, got %s", timeout)
		}
		ok = false
	}
	if !ok || timeout <= 10*interval {
		return
	}
	switch {
	case timeoutFrom == "":
		note := ""
		if intervalFrom != "" {
			note = " (" + intervalFrom + ")"
		}
		v.at(path+".timeout", "timeout %s is more than 10 times the interval %s%s", timeout, interval, note)
	case intervalFrom == "":
		v.at(path+".interval", "interval %s is too short for the timeout %s (%s): a timeout may be at most 10 times the interval; give this target a timeout too",
			interval, timeout, timeoutFrom)
	}
}

func (v *validator) checkSize(path string, size int) {
	if size < MinSize || size > MaxSize {
		v.at(path, "ICMP payload size must be between %d and %d bytes, got %d", MinSize, MaxSize, size)
	}
}

// checkLabel checks a path or segment label written at path.
func validLabel(value string) bool { return value != "" && labelRE.MatchString(value) }

func (v *validator) checkLabel(path, what, value string) {
	switch {
	case value == "" && strings.Contains(path, ".targets["):
		v.at(path, "%s is empty: leave the key out for %q", what, DefaultPath)
	case value == "":
		v.at(path, "%s is empty", what)
	case !labelRE.MatchString(value):
		v.at(path, "%s %s may only hold letters, digits and _.:-", what, quote(value))
	}
}

// clip is a value for a message without quotes, quoted and shortened only
// when it is long.
func clip(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return quote(s)
}

func siteNames(c *Config) []string {
	n := make([]string, len(c.Sites))
	for i, s := range c.Sites {
		n[i] = s.Name
	}
	return n
}

// validateTarget checks the target t written at tn (path tp).
func (v *validator) validateTarget(c *Config, t *Target, tp string, tn *yaml.Node) {
	set := func(key string) bool { return written(tn, key) }
	if !set("path") {
		t.Path = DefaultPath
	}
	if !set("segment") {
		t.Segment = DefaultSegment
	}
	// Field paths are built only for an error: a reload of 10,000 targets
	// must not allocate them for every valid one.
	if !validLabel(t.Path) {
		v.checkLabel(tp+".path", "path", t.Path)
	}
	if !validLabel(t.Segment) {
		v.checkLabel(tp+".segment", "segment", t.Segment)
	}
	var addr netip.Addr
	switch {
	case t.Address == "":
		v.at(tp+".address", "every target needs an address")
	default:
		a, err := netip.ParseAddr(t.Address)
		if err == nil {
			if a.Zone() != "" {
				v.at(tp+".address", "zoned address %s: use interface instead", quote(t.Address))
			}
			if a.IsUnspecified() || a.IsMulticast() {
				v.at(tp+".address", "%s is not a unicast address", t.Address)
			}
			addr = a.Unmap()
			if !a.Is4() {
				t.Address = addr.String() // the canonical form (IPv4 literals already are)
			}
		} else if looksNumeric(t.Address) || !hostnameRE.MatchString(t.Address) {
			v.at(tp+".address", "invalid address %s: not an IP address or a hostname", quote(t.Address))
		}
	}
	switch t.Family {
	case "":
		if set("family") {
			v.at(tp+".family", "family must be ip4 or ip6, got %s", quote(t.Family))
		}
	case "ip4", "ip6":
		if addr.IsValid() && (addr.Is4() != (t.Family == "ip4")) {
			v.at(tp+".family", "family %s does not match address %s", t.Family, t.Address)
		}
	default:
		v.at(tp+".family", "family must be ip4 or ip6, got %s", quote(t.Family))
	}
	if t.Source != "" {
		s, err := netip.ParseAddr(t.Source)
		switch {
		case err != nil:
			v.at(tp+".source", "invalid source address %s", quote(t.Source))
		case addr.IsValid() && s.Unmap().Is4() != addr.Is4():
			v.at(tp+".source", "source %s and address %s are of different families", t.Source, t.Address)
		}
	}
	if t.Interface != "" && (len(t.Interface) > 15 || strings.ContainsAny(t.Interface, " /")) {
		v.at(tp+".interface", "invalid interface name %s", quote(t.Interface))
	}

	// The interval and timeout in force: the target's own, else probe:'s,
	// else the defaults. An unwritten timeout follows the interval in force
	// unless probe.timeout is written (see defaultTimeout).
	ivSet, toSet := set("interval"), set("timeout")
	interval, intervalFrom := c.Probe.Interval.D(), v.origin("probe.interval")
	if ivSet {
		interval, intervalFrom = t.Interval.D(), ""
	}
	switch {
	case toSet:
		v.checkTiming(tp, interval, t.Timeout.D(), intervalFrom, "")
	case ivSet && v.set("probe.timeout"):
		v.checkTiming(tp, interval, c.Probe.Timeout.D(), "", v.origin("probe.timeout"))
	case ivSet:
		t.Timeout = Duration(defaultTimeout(interval))
		v.checkTiming(tp, interval, t.Timeout.D(), "", "the default")
	}
	v.checkTargetFlows(c, t, tp, set, interval)
	if set("size") {
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
	case "reachable", "unreachable":
	case "":
		if set("expect") {
			v.at(tp+".expect", "expect must be reachable or unreachable, got %s", quote(t.Expect))
		}
	default:
		v.at(tp+".expect", "expect must be reachable or unreachable, got %s", quote(t.Expect))
	}
	if t.ICMP != nil && !*t.ICMP && len(t.TCPPorts) == 0 && (t.STAMP == nil || !*t.STAMP) {
		v.at(tp+".icmp", "icmp is off and no tcp_ports or stamp are set: nothing would be probed")
	}
}

// checkTargetFlows checks the target's flows: a count in range, and with
// tcp_ports a timeout shorter than a flow's turn (flows × interval): each
// flow is one fixed source port, so its previous connection attempt must
// have ended when its turn comes again.
func (v *validator) checkTargetFlows(c *Config, t *Target, tp string, set func(string) bool, interval time.Duration) {
	flows, flowsSet := c.Probe.Flows, set("flows")
	if flowsSet {
		flows = t.Flows
		v.checkFlows(tp+".flows", flows)
	}
	if flows <= 1 || flows > MaxFlows || len(t.TCPPorts) == 0 || t.IsGuard() || interval < MinInterval {
		return
	}
	timeout, timeoutFrom := c.Probe.Timeout.D(), v.origin("probe.timeout")
	switch {
	case set("timeout"):
		timeout, timeoutFrom = t.Timeout.D(), "this target's"
	case set("interval") && !v.set("probe.timeout"):
		timeout, timeoutFrom = t.Timeout.D(), "the default for its interval"
	}
	if timeout <= 0 || timeout < time.Duration(flows)*interval {
		return
	}
	at := tp + ".tcp_ports"
	if flowsSet {
		at = tp + ".flows"
	}
	v.at(at, "with tcp_ports each of the %d flows is one source port, so a connection must end before the flow's next turn: the timeout %s (%s) must be shorter than flows × interval = %s; use more flows or a shorter timeout",
		flows, timeout, timeoutFrom, time.Duration(flows)*interval)
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
