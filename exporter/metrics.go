// Package exporter turns probe outcomes into Prometheus metrics: per-target
// aggregation (RTT histogram, loss window, jitter, up) and the HTTP server
// that exposes them. It knows nothing about sockets.
package exporter

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe"
)

// ProbeLabels are on every probe series, in this order.
var ProbeLabels = []string{"source_site", "target_site", "target", "path", "segment", "protocol", "port"}

// RTTBuckets are the classic histogram buckets (seconds): fine below 1 ms
// for LAN and metro pairs, 25 ms steps across the 100–300 ms range where
// intercontinental SiteLink pairs live, and a tail to a few seconds.
var RTTBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075,
	0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 1, 2.5, 5,
}

// Metrics is the probe.Sink that the engine reports to.
type Metrics struct {
	log        *zap.Logger
	lossWindow atomic.Int64
	downAfter  atomic.Int64

	sent, lost, errs  *prometheus.CounterVec
	rtt               *prometheus.HistogramVec
	jitter, lossRatio *prometheus.GaugeVec
	up                *prometheus.GaugeVec
	violation         *prometheus.GaugeVec
	guardReplies      *prometheus.CounterVec
	ignored           *prometheus.CounterVec
	ignoredC          [probe.NumIgnored]prometheus.Counter
	lag               prometheus.Histogram
	drops             prometheus.Counter

	mu   sync.Mutex
	recs map[*recorder]struct{}
}

// NewMetrics registers the probe metrics on reg.
func NewMetrics(reg prometheus.Registerer, log *zap.Logger) *Metrics {
	m := &Metrics{
		log: log,
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_probes_sent_total", Help: "Probes sent.",
		}, ProbeLabels),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_probes_lost_total", Help: "Probes that got no valid reply within their timeout (counted at the deadline, or at an ICMP error or TCP reset).",
		}, ProbeLabels),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_probe_errors_total", Help: "Failed probes by reason; every lost probe has exactly one reason. reason=\"resolve\" counts failed name resolutions instead.",
		}, append(append([]string{}, ProbeLabels...), "reason")),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "probed_rtt_seconds",
			Help:                            "Round-trip time of answered probes (kernel timestamps; TCP: handshake time).",
			Buckets:                         RTTBuckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, ProbeLabels),
		jitter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_jitter_seconds", Help: "RFC 3550 interarrival-jitter estimate over consecutive round-trip times.",
		}, ProbeLabels),
		lossRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_loss_ratio", Help: "Share of the last probe.loss_window finished probes that were lost.",
		}, ProbeLabels),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_target_up", Help: "1 after a reply, 0 after probe.down_after consecutive losses.",
		}, ProbeLabels),
		violation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_segmentation_violation", Help: "1 while a guard target (expect: unreachable) answers: traffic crosses a boundary that must hold.",
		}, ProbeLabels),
		guardReplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_segmentation_replies_total", Help: "Replies received from guard targets (expect: unreachable).",
		}, ProbeLabels),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_icmp_ignored_replies_total", Help: "Received ICMP packets not taken as a reply, by reason.",
		}, []string{"reason"}),
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
		m.ignoredC[i] = m.ignored.WithLabelValues(i.String())
	}
	reg.MustRegister(m.sent, m.lost, m.errs, m.rtt, m.jitter, m.lossRatio, m.up, m.violation, m.guardReplies, m.ignored, m.lag, m.drops)
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

func labelValues(s *config.ProbeSpec) []string {
	return []string{s.SourceSite, s.TargetSite, s.Target, s.Path, s.Segment, s.Protocol, s.PortLabel()}
}

// Add implements probe.Sink: it resolves the target's series once, so the
// per-probe path touches no label maps.
func (m *Metrics) Add(s *config.ProbeSpec) probe.Recorder {
	lv := labelValues(s)
	r := &recorder{m: m, lv: lv, guard: s.Guard, spec: *s, isUp: -1, win: newLossWindow(int(m.lossWindow.Load()))}
	if s.Guard {
		r.violation = m.violation.WithLabelValues(lv...)
		r.violation.Set(0)
		r.guardReplies = m.guardReplies.WithLabelValues(lv...)
	} else {
		r.sent = m.sent.WithLabelValues(lv...)
		r.lost = m.lost.WithLabelValues(lv...)
		r.rtt = m.rtt.WithLabelValues(lv...)
		r.jitter = m.jitter.WithLabelValues(lv...)
		r.lossRatio = m.lossRatio.WithLabelValues(lv...)
	}
	m.mu.Lock()
	m.recs[r] = struct{}{}
	m.mu.Unlock()
	return r
}

// Remove implements probe.Sink: the target's series disappear.
func (m *Metrics) Remove(s *config.ProbeSpec, rec probe.Recorder) {
	r := rec.(*recorder)
	m.mu.Lock()
	delete(m.recs, r)
	m.mu.Unlock()
	r.mu.Lock()
	r.removed = true
	r.mu.Unlock()
	lv := r.lv
	for _, v := range []*prometheus.CounterVec{m.sent, m.lost, m.guardReplies} {
		v.DeleteLabelValues(lv...)
	}
	for _, v := range []*prometheus.GaugeVec{m.jitter, m.lossRatio, m.up, m.violation} {
		v.DeleteLabelValues(lv...)
	}
	m.rtt.DeleteLabelValues(lv...)
	for i := probe.Reason(0); i < probe.NumReasons; i++ {
		m.errs.DeleteLabelValues(append(lv, i.String())...)
	}
	m.errs.DeleteLabelValues(append(lv, "resolve")...)
}

// Ignored implements probe.Sink.
func (m *Metrics) Ignored(i probe.Ignored) { m.ignoredC[i].Inc() }

// SchedulerLag implements probe.Sink.
func (m *Metrics) SchedulerLag(d time.Duration) { m.lag.Observe(d.Seconds()) }

// SocketDrops implements probe.Sink.
func (m *Metrics) SocketDrops(n uint64) { m.drops.Add(float64(n)) }

// ResolveFailed implements probe.Sink.
func (m *Metrics) ResolveFailed(s *config.ProbeSpec) {
	m.errs.WithLabelValues(append(labelValues(s), "resolve")...).Inc()
}

// recorder aggregates one probe spec.
type recorder struct {
	m     *Metrics
	lv    []string
	spec  config.ProbeSpec
	guard bool

	sent, lost        prometheus.Counter
	rtt               prometheus.Observer
	jitter, lossRatio prometheus.Gauge
	errs              [probe.NumReasons]prometheus.Counter
	up                prometheus.Gauge
	violation         prometheus.Gauge
	guardReplies      prometheus.Counter

	mu         sync.Mutex
	win        lossWindow
	jit        jitter
	consecLost int
	isUp       int8 // -1 unknown, 0 down, 1 up
	violating  bool
	removed    bool
}

func (r *recorder) Sent() {
	if r.sent != nil {
		r.sent.Inc()
	}
}

func (r *recorder) Succeeded(rtt time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return
	}
	r.consecLost = 0
	if r.guard {
		r.guardReplies.Inc()
		r.setViolation(true)
		return
	}
	r.rtt.Observe(rtt.Seconds())
	r.jit.add(rtt)
	r.jitter.Set(r.jit.value)
	r.win.add(false)
	ratio, _ := r.win.ratio()
	r.lossRatio.Set(ratio)
	r.setUp(1)
}

func (r *recorder) Failed(reason probe.Reason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return
	}
	if r.guard {
		if reason == probe.ReasonRefused {
			// A TCP reset came from the far side: the boundary leaked.
			r.guardReplies.Inc()
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
	r.lost.Inc()
	if r.errs[reason] == nil {
		r.errs[reason] = r.m.errs.WithLabelValues(append(r.lv, reason.String())...)
	}
	r.errs[reason].Inc()
	r.win.add(true)
	ratio, _ := r.win.ratio()
	r.lossRatio.Set(ratio)
	r.consecLost++
	if r.consecLost >= int(r.m.downAfter.Load()) {
		r.setUp(0)
	}
}

func (r *recorder) setUp(v int8) {
	if r.isUp == v {
		return
	}
	if r.up == nil {
		r.up = r.m.up.WithLabelValues(r.lv...)
	}
	r.up.Set(float64(v))
	// Log transitions, and a target that starts out down; not the
	// ordinary first reply.
	if r.isUp != -1 || v == 0 {
		r.m.log.Info("target state changed", zap.String("target_site", r.spec.TargetSite), zap.String("target", r.spec.Target),
			zap.String("protocol", r.spec.Protocol), zap.String("port", r.spec.PortLabel()), zap.String("path", r.spec.Path),
			zap.Bool("up", v == 1))
	}
	r.isUp = v
}

func (r *recorder) setViolation(on bool) {
	if r.violating == on {
		return
	}
	r.violating = on
	if on {
		r.violation.Set(1)
		r.m.log.Warn("segmentation violation started: a guard target answers", zap.String("source_site", r.spec.SourceSite),
			zap.String("target_site", r.spec.TargetSite), zap.String("target", r.spec.Target), zap.String("segment", r.spec.Segment),
			zap.String("protocol", r.spec.Protocol), zap.String("port", r.spec.PortLabel()))
	} else {
		r.violation.Set(0)
		r.m.log.Warn("segmentation violation ended: the guard target is unreachable again", zap.String("source_site", r.spec.SourceSite),
			zap.String("target_site", r.spec.TargetSite), zap.String("target", r.spec.Target), zap.String("segment", r.spec.Segment),
			zap.String("protocol", r.spec.Protocol), zap.String("port", r.spec.PortLabel()))
	}
}
