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
	// known before. nil until a complete (or confirmed) trace.
	path     []string
	previous []string
	reached  bool
	// pending is the latest trace when it was incomplete and would have
	// set the first path or changed its length: the next trace confirms
	// it if it shows the same (a router that never answers), or drops it.
	pending        []string
	pendingReached bool
	last           []Hop // the latest trace, for RTT and loss
	lastAt         time.Time
	since          time.Time // when the current path was first seen
	changes        uint64

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

// knownRouter reports whether position i of a known path holds a router
// that answered in an earlier round (not the target, not a silent hop).
func knownRouter(old []string, oldReached bool, i int) bool {
	if i >= len(old) || old[i] == Silent {
		return false
	}
	return !oldReached || i < len(old)-1
}

// Complete reports whether a trace shows a whole path: its last hop (the
// target when reached, else the last router that answered) and, before it,
// at every TTL a router that answered — in this trace, or, where this trace
// got no answer, in an earlier round at that position (a router of the
// known path old, not its target). A trace that reached the target after
// the silence of an outage (the probes of the low TTLs were lost while the
// link was down, a later TTL reached the target) is not complete, nor one
// that saw no router at all: its length is not the path's.
func Complete(old []string, oldReached bool, cur []string, curReached bool) bool {
	if len(cur) == 0 {
		return false
	}
	for i := 0; i < len(cur)-1; i++ {
		if cur[i] == Silent && !knownRouter(old, oldReached, i) {
			return false
		}
	}
	return cur[len(cur)-1] != Silent
}

// Differs reports whether a new trace shows another path than the known
// one. A silent hop is no evidence either way: a router that stops
// answering (ICMP rate limits, a busy control plane) while forwarding as
// before must not count as a change. So only a hop whose address differs
// from an address known at the same position counts (a router where
// another router or the target was, or the target where a router was: a
// TTL's answer comes from the hop at that distance), or a different length
// when both traces reached the target and the new one is complete (a
// target answering a later TTL after silence proves nothing: the earlier
// TTLs may have been lost, as when a link comes back during a trace).
func Differs(old []string, oldReached bool, cur []string, curReached bool) bool {
	if oldReached && curReached && len(old) != len(cur) && Complete(old, oldReached, cur, curReached) {
		return true
	}
	for i := 0; i < min(len(old), len(cur)); i++ {
		if old[i] != Silent && cur[i] != Silent && old[i] != cur[i] {
			return true
		}
	}
	return false
}

// agrees reports whether two traces show the same shape: the same length
// and reach, and no TTL answered from two different addresses.
func agrees(a []string, aReached bool, b []string, bReached bool) bool {
	if len(a) != len(b) || aReached != bReached {
		return false
	}
	for i := range a {
		if a[i] != Silent && b[i] != Silent && a[i] != b[i] {
			return false
		}
	}
	return true
}

// fill returns cur with its silent hops taken from other where other
// answered at that position.
func fill(cur, other []string) []string {
	out := slices.Clone(cur)
	for i := range out {
		if out[i] == Silent && i < len(other) {
			out[i] = other[i]
		}
	}
	return out
}

// ObserveTrace records a trace of the target identified by key. It returns
// the change when the path changed (counted once: later traces of the new
// path match it).
//
// The first known path is the first complete trace (see Complete), or an
// incomplete one that the next trace confirms (same length and reach, no
// hop answered from another address): a router that never answers is
// part of the path, an outage's silence is not. Later, a trace is a change
// when it Differs from the known path; an incomplete trace that reached
// the target at another TTL is a change only when the next trace confirms
// it. A change caused by an incomplete trace keeps its routers but not its
// length: the new path ends at its last router, as if the target had not
// answered, until a complete trace shows the rest. So the known path, and
// previous_path, are only ever lengths a complete or confirmed trace
// showed.
func (s *Set) ObserveTrace(key string, l Labels, tr Trace) (Change, bool) {
	cur := hopAddrs(tr)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.get(key, l)
	t.last, t.lastAt = slices.Clone(tr.Hops), tr.At
	if !slices.ContainsFunc(cur, func(a string) bool { return a != Silent }) {
		// Nothing answered at all: no evidence about the path.
		return Change{}, false
	}
	complete := Complete(t.path, t.reached, cur, tr.Reached)
	confirmed := t.pending != nil && agrees(t.pending, t.pendingReached, cur, tr.Reached)
	pending := t.pending
	t.pending = nil
	if t.path == nil {
		switch {
		case complete:
			t.path, t.reached, t.since = cur, tr.Reached, tr.At
		case confirmed:
			t.path, t.reached, t.since = fill(cur, pending), tr.Reached, tr.At
		default:
			t.pending, t.pendingReached = cur, tr.Reached
		}
		return Change{}, false
	}
	if Differs(t.path, t.reached, cur, tr.Reached) {
		next, nextReached := cur, tr.Reached
		if !complete && tr.Reached {
			// The routers it saw are evidence, its length is not.
			next, nextReached = trimToRouters(cur), false
		}
		ch := Change{Old: t.path, New: next}
		t.previous, t.path, t.reached, t.since = t.path, next, nextReached, tr.At
		t.changes++
		return ch, true
	}
	if !complete && tr.Reached && (!t.reached || len(cur) != len(t.path)) {
		// Reached the target at a TTL the known path does not show,
		// after silence: an outage, loss, or a router that never
		// answers. Only the next round can tell.
		if !confirmed {
			t.pending, t.pendingReached = cur, tr.Reached
			return Change{}, false
		}
		next := fill(cur, pending)
		if t.reached {
			ch := Change{Old: t.path, New: next}
			t.previous, t.path, t.reached, t.since = t.path, next, true, tr.At
			t.changes++
			return ch, true
		}
		// The known path never reached the target: this extends it.
		t.path, t.reached = fill(next, t.path), true
		return Change{}, false
	}
	if !complete {
		// Same path, nothing to extend: fill hops the known path has
		// never heard from with routers this trace heard.
		for i := range t.path {
			if t.path[i] == Silent && i < len(cur) && cur[i] != Silent && (!tr.Reached || i < len(cur)-1) {
				t.path[i] = cur[i]
			}
		}
		return Change{}, false
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

// trimToRouters drops the target and the silent hops before it: what an
// incomplete trace proves about a path.
func trimToRouters(cur []string) []string {
	n := len(cur) - 1
	for n > 0 && cur[n-1] == Silent {
		n--
	}
	return slices.Clone(cur[:n])
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
		t.pending, t.pendingReached = nil, false
	}
}

var (
	labelsHop  = append(slices.Clone(exporter.ProbeLabels), "hop")
	labelsInfo = append(slices.Clone(exporter.ProbeLabels), "hops")

	descHops      = prometheus.NewDesc("probed_path_hops", "Hops to the target in the current path, the target included (the hops known so far when the target does not answer). Absent until a complete trace.", exporter.ProbeLabels, nil)
	descChanges   = prometheus.NewDesc("probed_path_changes_total", "Path changes: a hop answered from another address, or a complete trace (every hop answered) showed another hop count. A hop that stops answering, or a trace that reached the target only after silent hops (an outage ending), is not a change.", exporter.ProbeLabels, nil)
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
