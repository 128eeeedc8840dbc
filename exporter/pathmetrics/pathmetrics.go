// Package pathmetrics keeps the latest path and path MTU of every traced
// target and exports them: probed_path_hops, probed_path_changes_total,
// probed_path_hop_rtt_seconds, probed_path_info, probed_path_mtu_bytes and
// probed_path_mtu_blackhole, all with the probe labels, plus the /paths JSON
// view. It decides what counts as a path change; it knows nothing about
// sockets.
package pathmetrics

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/probed/probed/exporter"
)

// Silent is how a hop that did not answer is written in probed_path_info
// and in logs.
const Silent = "*"

// Labels are a probe's series labels (exporter.ProbeLabels, same order).
type Labels struct {
	SourceSite, TargetSite, Target, Path, Segment, Protocol, Port string
}

func (l *Labels) values(extra ...string) []string {
	return append([]string{l.SourceSite, l.TargetSite, l.Target, l.Path, l.Segment, l.Protocol, l.Port}, extra...)
}

// Hop is one hop of an observed trace.
type Hop struct {
	// Addr is the address that answered; "" when the hop was silent.
	Addr           string
	RTT            time.Duration
	Sent, Received int
}

// Trace is one discovery result: hops from TTL 1 to the target (when
// Reached) or to the last hop that answered.
type Trace struct {
	Hops    []Hop
	Reached bool
	At      time.Time
}

// Change is a counted path change, for the log.
type Change struct {
	Old, New []string
}

type target struct {
	labels Labels
	// path is the current path, "*" for hops never heard from; silent
	// hops of a later trace that is otherwise the same keep the address
	// known before.
	path     []string
	previous []string
	reached  bool
	last     []Hop // the latest trace, for RTT and loss
	lastAt   time.Time
	since    time.Time // when the current path was first seen
	changes  uint64

	haveMTU   bool
	mtu       int
	blackhole bool
	mtuAt     time.Time
}

// Set holds every target's path state. It is a prometheus.Collector: one
// consistent view per scrape, and a path_info series is replaced, not
// added, when the path changes.
type Set struct {
	mu      sync.Mutex
	targets map[string]*target
}

// New returns an empty Set.
func New() *Set { return &Set{targets: map[string]*target{}} }

func (s *Set) get(key string, l Labels) *target {
	t := s.targets[key]
	if t == nil {
		t = &target{labels: l}
		s.targets[key] = t
	}
	t.labels = l
	return t
}

// hopAddrs lists a trace's hops as probed_path_info writes them.
func hopAddrs(tr Trace) []string {
	out := make([]string, len(tr.Hops))
	for i, h := range tr.Hops {
		out[i] = h.Addr
		if h.Addr == "" {
			out[i] = Silent
		}
	}
	return out
}

// Differs reports whether a new trace shows another path than the known
// one. A silent hop is no evidence either way: a router that stops
// answering (ICMP rate limits, a busy control plane) while forwarding as
// before must not count as a change. So only a hop whose address differs
// from an address known at the same position counts, or a different length
// when both traces reached the target.
func Differs(old []string, oldReached bool, cur []string, curReached bool) bool {
	if oldReached && curReached && len(old) != len(cur) {
		return true
	}
	for i := 0; i < min(len(old), len(cur)); i++ {
		if old[i] != Silent && cur[i] != Silent && old[i] != cur[i] {
			return true
		}
	}
	return false
}

// ObserveTrace records a trace of the target identified by key. It returns
// the change when the path changed (counted once: later traces of the new
// path match it).
func (s *Set) ObserveTrace(key string, l Labels, tr Trace) (Change, bool) {
	cur := hopAddrs(tr)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.get(key, l)
	t.last, t.lastAt = slices.Clone(tr.Hops), tr.At
	answered := slices.ContainsFunc(cur, func(a string) bool { return a != Silent })
	switch {
	case !answered:
		// Nothing answered at all: no evidence about the path.
		return Change{}, false
	case t.path == nil:
		t.path, t.reached, t.since = cur, tr.Reached, tr.At
		return Change{}, false
	case Differs(t.path, t.reached, cur, tr.Reached):
		ch := Change{Old: t.path, New: cur}
		t.previous, t.path, t.reached, t.since = t.path, cur, tr.Reached, tr.At
		t.changes++
		return ch, true
	}
	// Same path: fill silent hops from what was known, and keep the
	// known length when this trace fell short of the target.
	n := len(cur)
	if !tr.Reached && len(t.path) > n {
		n = len(t.path)
	}
	merged := make([]string, n)
	for i := range merged {
		merged[i] = Silent
		if i < len(cur) {
			merged[i] = cur[i]
		}
		if merged[i] == Silent && i < len(t.path) {
			merged[i] = t.path[i]
		}
	}
	t.path = merged
	t.reached = t.reached || tr.Reached
	return Change{}, false
}

// ObserveMTU records a path MTU search result.
func (s *Set) ObserveMTU(key string, l Labels, mtu int, blackhole bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.get(key, l)
	t.haveMTU, t.mtu, t.blackhole, t.mtuAt = true, mtu, blackhole, at
}

// Retain forgets every target whose key is not in keep (removed from the
// mesh, or trace/mtu switched off): their series disappear.
func (s *Set) Retain(keep func(key string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.targets {
		if !keep(k) {
			delete(s.targets, k)
		}
	}
}

// ForgetMTU drops a target's MTU series (mtu switched off, path kept).
func (s *Set) ForgetMTU(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.targets[key]; t != nil {
		t.haveMTU = false
	}
}

// ForgetPath drops a target's path series (trace switched off, MTU kept).
func (s *Set) ForgetPath(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.targets[key]; t != nil {
		t.path, t.previous, t.last, t.reached, t.changes = nil, nil, nil, false, 0
	}
}

var (
	labelsHop  = append(slices.Clone(exporter.ProbeLabels), "hop")
	labelsInfo = append(slices.Clone(exporter.ProbeLabels), "hops")

	descHops      = prometheus.NewDesc("probed_path_hops", "Hops to the target in the current path, the target included (the hops known so far when the target does not answer).", exporter.ProbeLabels, nil)
	descChanges   = prometheus.NewDesc("probed_path_changes_total", "Path changes: a hop answered from another address, or the hop count changed. A hop that stops answering is not a change.", exporter.ProbeLabels, nil)
	descHopRTT    = prometheus.NewDesc("probed_path_hop_rtt_seconds", "Median round-trip time to each hop in the latest trace (hop: TTL, 1 is the first router); hops that did not answer are left out.", labelsHop, nil)
	descInfo      = prometheus.NewDesc("probed_path_info", "Always 1; hops is the current path, hop addresses in order separated by commas, * for a hop that never answered.", labelsInfo, nil)
	descMTU       = prometheus.NewDesc("probed_path_mtu_bytes", "Largest IP packet (headers included) that reaches the target with don't-fragment set.", exporter.ProbeLabels, nil)
	descBlackhole = prometheus.NewDesc("probed_path_mtu_blackhole", "1 when packets above the path MTU vanish without Fragmentation Needed / Packet Too Big (an MTU black hole), 0 when the path reports its limit or carries the largest size.", exporter.ProbeLabels, nil)
)

// Describe implements prometheus.Collector.
func (s *Set) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHops, descChanges, descHopRTT, descInfo, descMTU, descBlackhole} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Set) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.targets {
		lv := t.labels.values()
		if t.path != nil {
			ch <- prometheus.MustNewConstMetric(descHops, prometheus.GaugeValue, float64(len(t.path)), lv...)
			ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(t.changes), lv...)
			ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, t.labels.values(strings.Join(t.path, ","))...)
			for i, h := range t.last {
				if h.Received > 0 {
					ch <- prometheus.MustNewConstMetric(descHopRTT, prometheus.GaugeValue, h.RTT.Seconds(), t.labels.values(strconv.Itoa(i+1))...)
				}
			}
		}
		if t.haveMTU {
			ch <- prometheus.MustNewConstMetric(descMTU, prometheus.GaugeValue, float64(t.mtu), lv...)
			bh := 0.0
			if t.blackhole {
				bh = 1
			}
			ch <- prometheus.MustNewConstMetric(descBlackhole, prometheus.GaugeValue, bh, lv...)
		}
	}
}
