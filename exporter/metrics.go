// Package exporter turns probe outcomes into Prometheus metrics: per-target
// aggregation (RTT histogram, loss window, jitter, up) and the HTTP server
// that exposes them. It knows nothing about sockets.
//
// The per-target series do not go through client_golang's registry: at
// 10,000 targets its generic Gather (label pairs, sorting, allocation per
// sample) takes over a second per scrape. Each target keeps its state in one
// struct with label text rendered once, and the handler writes the text or
// protobuf exposition straight from it (see exposition.go). Everything else
// (agent, AWS, path, STAMP metrics) uses the registry as usual.
package exporter

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/probed/probed/config"
	"github.com/probed/probed/events"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/watch"
)

// ProbeLabels are on every probe series, in this order.
var ProbeLabels = []string{"source_site", "target_site", "target", "path", "segment", "protocol", "port"}

// Metrics is the probe.Sink that the engine reports to.
type Metrics struct {
	log        *zap.Logger
	lossWindow atomic.Int64
	downAfter  atomic.Int64
	flowWindow atomic.Int64 // ns; 0: DefaultFlowWindow (flows.go)

	ignoredC [probe.NumIgnored]prometheus.Counter
	lag      prometheus.Histogram
	drops    prometheus.Counter

	// watcher gets every verdict too (events, history); nil: none. Set
	// before the engine runs (SetWatcher).
	watcher *watch.Watcher

	mu     sync.Mutex
	recs   map[*recorder]struct{}
	sorted []*recorder // recs in label order, rebuilt when dirty
	dirty  bool
}

// NewMetrics registers the agent-wide probe metrics on reg; the per-target
// series are written by the exposition handler.
func NewMetrics(reg prometheus.Registerer, log *zap.Logger) *Metrics {
	ignored := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "probed_icmp_ignored_replies_total", Help: "Received ICMP packets not taken as a reply, by reason.",
	}, []string{"reason"})
	m := &Metrics{
		log: log,
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "probed_scheduler_lag_seconds",
			Help:    "How late probes left compared to their scheduled slot (an overloaded agent shows here, not as network latency).",
			Buckets: []float64{0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1},
		}),
		drops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "probed_socket_receive_drops_total", Help: "Packets the kernel dropped because a probe socket's receive buffer was full (SO_RXQ_OVFL).",
		}),
		recs: map[*recorder]struct{}{},
	}
	m.lossWindow.Store(config.DefaultLossWindow)
	m.downAfter.Store(config.DefaultDownAfter)
	for i := probe.Ignored(0); i < probe.NumIgnored; i++ {
		m.ignoredC[i] = ignored.WithLabelValues(i.String())
	}
	reg.MustRegister(ignored, m.lag, m.drops)
	return m
}

// SetPlan applies the aggregation settings of a (re)loaded plan.
func (m *Metrics) SetPlan(p *config.Plan) {
	m.lossWindow.Store(int64(p.LossWindow))
	m.downAfter.Store(int64(p.DownAfter))
	m.mu.Lock()
	defer m.mu.Unlock()
	for r := range m.recs {
		r.mu.Lock()
		r.win.resize(p.LossWindow)
		r.mu.Unlock()
	}
}

// Add implements probe.Sink: the target's label text is rendered once, so
// the per-probe path touches no labels and allocates nothing.
func (m *Metrics) Add(s *config.ProbeSpec) probe.Recorder {
	lv := s.LabelValues()
	r := &recorder{m: m, spec: *s, guard: s.Guard, isUp: -1, resolved: -1, win: newLossWindow(int(m.lossWindow.Load()))}
	r.watch = m.watcher.Add(events.Probe(lv[0], lv[1], lv[2], lv[3], lv[4], lv[5], lv[6]), s.Guard)
	if s.Flows > 1 && !s.Guard {
		r.flows = newFlowStats(s, m.FlowWindow())
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, name := range ProbeLabels {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteString(`="`)
		b.WriteString(escapeLabel(lv[i]))
		b.WriteByte('"')
	}
	r.labels = b.String() // without the closing brace: buckets add le
	for i, name := range ProbeLabels {
		r.pairs = append(r.pairs, &dto.LabelPair{Name: proto.String(name), Value: proto.String(lv[i])})
	}
	m.mu.Lock()
	m.recs[r] = struct{}{}
	m.dirty = true
	m.mu.Unlock()
	return r
}

// Remove implements probe.Sink: the target's series disappear.
func (m *Metrics) Remove(s *config.ProbeSpec, rec probe.Recorder) {
	r := rec.(*recorder)
	m.mu.Lock()
	delete(m.recs, r)
	m.dirty = true
	m.mu.Unlock()
	r.mu.Lock()
	r.removed = true
	r.mu.Unlock()
	m.watcher.Remove(r.watch)
}

// Ignored implements probe.Sink.
func (m *Metrics) Ignored(i probe.Ignored) { m.ignoredC[i].Inc() }

// SchedulerLag implements probe.Sink.
func (m *Metrics) SchedulerLag(d time.Duration) { m.lag.Observe(d.Seconds()) }

// SocketDrops implements probe.Sink.
func (m *Metrics) SocketDrops(n uint64) { m.drops.Add(float64(n)) }

// recorders returns the live recorders in label order.
func (m *Metrics) recorders() []*recorder {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirty {
		m.sorted = m.sorted[:0]
		for r := range m.recs {
			m.sorted = append(m.sorted, r)
		}
		sort.Slice(m.sorted, func(i, j int) bool { return m.sorted[i].labels < m.sorted[j].labels })
		m.dirty = false
	}
	return append([]*recorder(nil), m.sorted...)
}

// recorder aggregates one probe spec. Every field below mu is guarded by it.
type recorder struct {
	m      *Metrics
	spec   config.ProbeSpec
	guard  bool
	labels string           // `{source_site="…",…,port="…"` (no closing brace)
	pairs  []*dto.LabelPair // the same, for protobuf
	watch  *watch.Target    // events and history of the series (nil: none)

	mu           sync.Mutex
	sent, lost   uint64
	errs         [probe.NumReasons]uint64
	hist         rttHistogram
	win          lossWindow
	jit          jitter
	consecLost   int
	isUp         int8 // -1 unknown, 0 down, 1 up
	violating    bool
	guardReplies uint64
	removed      bool
	resolved     int8       // hostname targets: -1 before the first lookup, 0 failing, 1 resolves
	flows        *flowStats // targets with flows: N > 1 (flows.go)
}

func (r *recorder) Sent() {
	r.mu.Lock()
	r.sent++
	r.mu.Unlock()
}

// Resolved records a lookup of a hostname target: a failure is counted as
// errors{reason="resolve"}, and probed_target_name_resolved says whether
// the name resolves now (the job may be probing its last address).
func (r *recorder) Resolved(ok bool) {
	var now int8
	if ok {
		now = 1
	}
	r.mu.Lock()
	if !ok {
		r.errs[probe.ReasonResolve]++
	}
	was := r.resolved
	r.resolved = now
	r.mu.Unlock()
	if was != now && was != -1 {
		f := []zap.Field{zap.String("target", r.spec.Target), zap.String("target_site", r.spec.TargetSite),
			zap.String("protocol", r.spec.Protocol), zap.String("port", r.spec.PortLabel())}
		if ok {
			r.m.log.Info("target name resolves again", f...)
		} else {
			r.m.log.Warn("target name stopped resolving; probing its last address", f...)
		}
	}
}

// Unsent counts a slot at which no probe left (the name does not resolve,
// the socket cannot be bound) as errors{reason}: not sent, not lost, not in
// the loss ratio — it is not network loss — but it counts towards down
// like a loss, so a target the agent cannot probe does not look healthy.
func (r *recorder) Unsent(reason probe.Reason) {
	defer r.watch.Unsent() // after the unlock (deferred first, runs last): it may write an event
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return
	}
	r.errs[reason]++
	if r.guard {
		return
	}
	r.consecLost++
	if r.consecLost >= int(r.m.downAfter.Load()) {
		r.setUp(0)
	}
}

func (r *recorder) Succeeded(p probe.Probe, rtt time.Duration) {
	defer r.watch.Answered(p.Sent, rtt)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return
	}
	r.consecLost = 0
	if r.guard {
		r.guardReplies++
		r.setViolation(true)
		return
	}
	r.hist.observe(rtt)
	r.jit.add(rtt)
	r.win.add(false)
	r.setUp(1)
	if r.flows != nil {
		r.flows.add(p, rtt, false)
	}
}

func (r *recorder) Failed(p probe.Probe, reason probe.Reason) {
	defer r.watch.Failed(p.Sent, reason == probe.ReasonRefused)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return
	}
	if r.guard {
		if reason == probe.ReasonRefused {
			// A TCP reset came from the far side: the boundary leaked.
			r.guardReplies++
			r.consecLost = 0
			r.setViolation(true)
			return
		}
		r.consecLost++
		if r.consecLost >= int(r.m.downAfter.Load()) {
			r.setViolation(false)
		}
		return
	}
	if reason == probe.ReasonRefused {
		// A TCP reset is the far end answering: the path works, the port
		// is closed. A service fact, counted as errors{reason="refused"},
		// never as network loss, and the target is up (reachable).
		r.errs[reason]++
		r.win.add(false)
		r.consecLost = 0
		r.setUp(1)
		if r.flows != nil {
			r.flows.add(p, -1, false)
		}
		return
	}
	r.lost++
	r.errs[reason]++
	r.win.add(true)
	if r.flows != nil {
		r.flows.add(p, 0, true)
	}
	r.consecLost++
	if r.consecLost >= int(r.m.downAfter.Load()) {
		r.setUp(0)
	}
}

func (r *recorder) setUp(v int8) {
	if r.isUp == v {
		return
	}
	// Log transitions, and a target that starts out down; not the
	// ordinary first reply.
	if r.isUp != -1 || v == 0 {
		r.m.log.Info("target state changed", zap.String("target_site", r.spec.TargetSite), zap.String("target", r.spec.Target),
			zap.String("protocol", r.spec.Protocol), zap.String("port", r.spec.PortLabel()), zap.String("path", r.spec.Path),
			zap.String("segment", r.spec.Segment), zap.Bool("up", v == 1))
	}
	r.isUp = v
}

func (r *recorder) setViolation(on bool) {
	if r.violating == on {
		return
	}
	r.violating = on
	msg := "segmentation violation started: a guard target answers"
	if !on {
		msg = "segmentation violation ended: the guard target is unreachable again"
	}
	r.m.log.Warn(msg, zap.String("source_site", r.spec.SourceSite), zap.String("target_site", r.spec.TargetSite),
		zap.String("target", r.spec.Target), zap.String("path", r.spec.Path), zap.String("segment", r.spec.Segment),
		zap.String("protocol", r.spec.Protocol), zap.String("port", r.spec.PortLabel()))
}

func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
