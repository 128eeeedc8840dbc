package pathmetrics

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/events"
	"github.com/probed/probed/exporter"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/trace"
)

// Sink feeds a Set from the engine's trace and MTU jobs (probe.PathSink),
// logs path changes, and counts the rounds that produced no result
// (probed_path_errors_total), so a job that cannot run is visible per
// target. Register it as a collector beside the Set.
type Sink struct {
	set  *Set
	log  *zap.Logger
	emit func(events.Event) // path_changed, mtu_* events; nil: none

	mu   sync.Mutex
	errs map[errKey]uint64
	lv   map[string][]string // job key -> label values
}

type errKey struct {
	job    string // the job's key
	kind   config.Kind
	reason probe.Reason
}

// NewSink returns a sink feeding set.
func NewSink(set *Set, log *zap.Logger) *Sink {
	return &Sink{set: set, log: log, errs: map[errKey]uint64{}, lv: map[string][]string{}}
}

var _ probe.PathSink = (*Sink)(nil)

// SetEmit sends the path facts to emit (the event journal): path_changed
// when ObserveTrace counts a change, mtu_changed, mtu_blackhole_started and
// mtu_blackhole_ended from successive MTU searches. Call it before the
// engine runs.
func (s *Sink) SetEmit(emit func(events.Event)) { s.emit = emit }

func eventLabels(s *config.ProbeSpec) events.Labels {
	v := s.LabelValues()
	return events.Probe(v[0], v[1], v[2], v[3], v[4], v[5], v[6])
}

// LabelsOf is a job's probe labels.
func LabelsOf(s *config.ProbeSpec) Labels {
	v := s.LabelValues()
	return Labels{SourceSite: v[0], TargetSite: v[1], Target: v[2], Path: v[3], Segment: v[4], Protocol: v[5], Port: v[6]}
}

// ObserveTrace implements probe.PathSink.
func (s *Sink) ObserveTrace(spec *config.ProbeSpec, p *trace.Path) {
	obs := Trace{Reached: p.Reached, At: p.Start}
	for i := range p.Hops {
		h := &p.Hops[i]
		ph := Hop{RTT: h.RTT(), Sent: h.Sent, Received: h.Received}
		if !h.Silent() {
			ph.Addr = h.Addr.String()
		}
		obs.Hops = append(obs.Hops, ph)
	}
	if ch, changed := s.set.ObserveTrace(spec.ProbeKey(), LabelsOf(spec), obs); changed {
		s.log.Info("path changed", zap.String("target_site", spec.TargetSite), zap.String("target", spec.Target),
			zap.String("path", spec.Path), zap.String("segment", spec.Segment), zap.Strings("old", ch.Old), zap.Strings("new", ch.New))
		if s.emit != nil {
			s.emit(events.NewPathChanged(p.Start, eventLabels(spec), ch.Old, ch.New))
		}
	}
}

// ObserveMTU implements probe.PathSink. The first search of a target is
// its starting state (no event), unless it finds a black hole: that is news.
func (s *Sink) ObserveMTU(spec *config.ProbeSpec, r pmtu.Result) {
	now := time.Now()
	key := spec.ProbeKey()
	oldMTU, oldBH, had := s.set.mtuOf(key)
	s.set.ObserveMTU(key, LabelsOf(spec), r.MTU, r.Blackhole, now)
	if s.emit == nil {
		return
	}
	l := eventLabels(spec)
	switch {
	case r.Blackhole && (!had || !oldBH):
		// The search fits the MTU exactly: the smallest size that
		// vanished is one byte more.
		s.emit(events.NewMTUBlackholeStarted(now, l, r.MTU+1))
	case !r.Blackhole && had && oldBH:
		s.emit(events.NewMTUBlackholeEnded(now, l, r.MTU))
	}
	if had && oldMTU != r.MTU {
		s.emit(events.NewMTUChanged(now, l, oldMTU, r.MTU))
	}
}

// mtuOf is the target's last MTU result, if any.
func (s *Set) mtuOf(key string) (mtu int, blackhole, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[key]
	if t == nil || !t.haveMTU {
		return 0, false, false
	}
	return t.mtu, t.blackhole, true
}

// Failed implements probe.PathSink.
func (s *Sink) Failed(spec *config.ProbeSpec, r probe.Reason, _ error) {
	k := spec.Key()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.lv[k]; !ok {
		s.lv[k] = spec.LabelValues()
	}
	s.errs[errKey{job: k, kind: spec.Kind, reason: r}]++
}

// Forget implements probe.PathSink: the job's series disappear (the path
// ones when a trace job goes, the MTU ones when an MTU job goes).
func (s *Sink) Forget(spec *config.ProbeSpec) {
	k := spec.Key()
	if spec.Kind == config.KindTrace {
		s.set.ForgetPath(spec.ProbeKey())
	} else {
		s.set.ForgetMTU(spec.ProbeKey())
	}
	s.set.dropEmpty(spec.ProbeKey())
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.lv, k)
	for ek := range s.errs {
		if ek.job == k {
			delete(s.errs, ek)
		}
	}
}

// dropEmpty forgets a target that has neither a path nor an MTU any more.
func (s *Set) dropEmpty(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.targets[key]; t != nil && t.path == nil && !t.haveMTU {
		delete(s.targets, key)
	}
}

var descErrors = prometheus.NewDesc("probed_path_errors_total",
	"Trace (kind=\"trace\") and path MTU (kind=\"mtu\") rounds that produced no result, by reason: resolve (the name does not resolve), bind (the interface or source address is missing), timeout (not even the smallest MTU probe was answered), send_error (other failures).",
	append(slices.Clone(exporter.ProbeLabels), "kind", "reason"), nil)

// Describe implements prometheus.Collector.
func (s *Sink) Describe(ch chan<- *prometheus.Desc) { ch <- descErrors }

// Collect implements prometheus.Collector.
func (s *Sink) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, n := range s.errs {
		lv := append(slices.Clone(s.lv[k.job]), k.kind.String(), k.reason.String())
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(n), lv...)
	}
}
