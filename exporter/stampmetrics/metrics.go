// Package stampmetrics turns STAMP session measurements (probe/stamp) into
// Prometheus series with the usual probe labels. Handles are resolved once
// per session, so the per-reply path does no label lookups.
package stampmetrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/probed/probed/changepoint"
	"github.com/probed/probed/config"
	"github.com/probed/probed/events"
	"github.com/probed/probed/exporter"
	"github.com/probed/probed/probe/stamp"
)

// Directions of one-way measurements.
const (
	Forward = "forward" // sender to reflector
	Reverse = "reverse" // reflector to sender
	// Unknown is the direction of losses against a stateless reflector,
	// which cannot be split (probed_stamp_lost_total only).
	Unknown = "unknown"
)

// Metrics holds the STAMP metric families.
type Metrics struct {
	sent, dup, reord, late *prometheus.CounterVec
	lost, errs             *prometheus.CounterVec
	rtt                    *prometheus.HistogramVec
	owd, pdv, remarked     *prometheus.GaugeVec
	unattributed, synced   *prometheus.GaugeVec
	stateless              *prometheus.GaugeVec

	// emit receives dscp_remarked / dscp_restored and stamp_loss_started
	// (nil: no events); see SetEmit.
	emit func(events.Event)
}

// SetEmit sends the STAMP facts to emit (the event journal): DSCP re-marked
// and restored per direction, and the onset of loss per direction. Call it
// before sessions start.
func (m *Metrics) SetEmit(emit func(events.Event)) { m.emit = emit }

// New registers the sender-side STAMP metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	labels := exporter.ProbeLabels
	withDir := append(append([]string{}, labels...), "direction")
	m := &Metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_stamp_sent_total", Help: "STAMP test packets sent.",
		}, labels),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_stamp_lost_total",
			Help: "STAMP test packets lost, by direction: forward (never reached the reflector), reverse (the reply was lost), or unknown (the reflector is stateless: see probed_stamp_reflector_stateless). Counted once a later reply tells which; see probed_stamp_unattributed_lost.",
		}, withDir),
		stateless: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_stamp_reflector_stateless",
			Help: "1 while the session's reflector looks stateless (every reply copied the sender's sequence number, no Direct Measurement counters): its losses are not split by direction (direction=\"unknown\"). 0 for a stateful reflector. Absent until the first reply.",
		}, labels),
		unattributed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_stamp_unattributed_lost", Help: "STAMP test packets lost since the last reply, whose direction is not known yet (grows during an outage).",
		}, labels),
		dup: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_stamp_duplicates_total", Help: "Duplicate STAMP replies (a second reply to the same test packet).",
		}, labels),
		reord: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_stamp_reordered_total", Help: "STAMP replies that arrived after a reply to a later test packet.",
		}, labels),
		late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_stamp_late_replies_total", Help: "STAMP replies that arrived after their packet was counted lost.",
		}, labels),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "probed_stamp_errors_total", Help: "STAMP session errors by reason (send, receive, refused, malformed, auth, integrity, foreign_session, resolve, bind).",
		}, append(append([]string{}, labels...), "reason")),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "probed_stamp_rtt_seconds",
			Help:                            "STAMP round-trip time with the reflector's dwell time subtracted: (T4-T1)-(T3-T2).",
			Buckets:                         exporter.RTTBuckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, labels),
		owd: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_stamp_one_way_delay_seconds",
			Help: "One-way delay of the last STAMP reply, by direction. Present only while both clocks report synchronisation (Error Estimate S bit).",
		}, withDir),
		pdv: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_stamp_one_way_delay_variation_seconds",
			Help: "One-way delay of the last STAMP reply minus the minimum over the last probe.loss_window replies (RFC 5481 PDV), by direction; valid without clock synchronisation.",
		}, withDir),
		remarked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_stamp_dscp_remarked",
			Help: "1 when the DSCP of the last STAMP packet arrived different from what was sent (forward: reported by the reflector's Class of Service TLV; reverse: seen on the reply).",
		}, withDir),
		synced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probed_stamp_clocks_synchronized", Help: "1 while both the local and the reflector's clock report synchronisation (one-way delays are exported only then).",
		}, labels),
	}
	reg.MustRegister(m.sent, m.lost, m.unattributed, m.dup, m.reord, m.late, m.errs, m.rtt, m.owd, m.pdv, m.remarked, m.synced, m.stateless)
	return m
}

func labelValues(s *config.ProbeSpec) []string { return s.LabelValues() }

// Session returns the observer for one STAMP probe; its series exist from now on.
func (m *Metrics) Session(spec *config.ProbeSpec) *Session {
	lv := labelValues(spec)
	dir := func(d string) []string { return append(append([]string{}, lv...), d) }
	s := &Session{
		m: m, lv: lv,
		sent:         m.sent.WithLabelValues(lv...),
		lostFwd:      m.lost.WithLabelValues(dir(Forward)...),
		lostRev:      m.lost.WithLabelValues(dir(Reverse)...),
		lostUnknown:  m.lost.WithLabelValues(dir(Unknown)...),
		unattributed: m.unattributed.WithLabelValues(lv...),
		dup:          m.dup.WithLabelValues(lv...),
		reord:        m.reord.WithLabelValues(lv...),
		late:         m.late.WithLabelValues(lv...),
		rtt:          m.rtt.WithLabelValues(lv...),
		pdvFwd:       m.pdv.WithLabelValues(dir(Forward)...),
		pdvRev:       m.pdv.WithLabelValues(dir(Reverse)...),
		synced:       m.synced.WithLabelValues(lv...),
		owdFwdLV:     dir(Forward),
		owdRevLV:     dir(Reverse),
		errs:         map[string]prometheus.Counter{},
	}
	if m.emit != nil {
		s.ev = &sessionEvents{emit: m.emit, l: events.Probe(lv[0], lv[1], lv[2], lv[3], lv[4], lv[5], lv[6]),
			lossFwd: changepoint.NewLoss(changepoint.DefaultLossParams()),
			lossRev: changepoint.NewLoss(changepoint.DefaultLossParams())}
	}
	return s
}

// Forget deletes every series of a session (its probe left the plan).
func (m *Metrics) Forget(spec *config.ProbeSpec) {
	lv := labelValues(spec)
	for _, v := range []*prometheus.CounterVec{m.sent, m.dup, m.reord, m.late} {
		v.DeleteLabelValues(lv...)
	}
	m.unattributed.DeleteLabelValues(lv...)
	m.synced.DeleteLabelValues(lv...)
	m.stateless.DeleteLabelValues(lv...)
	m.lost.DeleteLabelValues(append(append([]string{}, lv...), Unknown)...)
	m.rtt.DeleteLabelValues(lv...)
	for _, d := range []string{Forward, Reverse} {
		dl := append(append([]string{}, lv...), d)
		m.lost.DeleteLabelValues(dl...)
		m.owd.DeleteLabelValues(dl...)
		m.pdv.DeleteLabelValues(dl...)
		m.remarked.DeleteLabelValues(dl...)
	}
	m.errs.DeletePartialMatch(prometheus.Labels{
		"source_site": spec.SourceSite, "target_site": spec.TargetSite, "target": spec.Target,
		"path": spec.Path, "segment": spec.Segment, "protocol": config.ProtoSTAMP, "port": spec.PortLabel(),
	})
}

// Session is a stamp.Observer that feeds one session's series.
type Session struct {
	m  *Metrics
	lv []string

	sent, lostFwd, lostRev, dup, reord, late prometheus.Counter
	lostUnknown                              prometheus.Counter
	unattributed, pdvFwd, pdvRev, synced     prometheus.Gauge
	stateless                                prometheus.Gauge // created with the first reply
	rtt                                      prometheus.Observer

	// The one-way delay and remarking series come and go (only while
	// meaningful), so their handles are created on demand.
	owdFwdLV, owdRevLV []string
	owdFwd, owdRev     prometheus.Gauge
	remFwd, remRev     prometheus.Gauge

	mu   sync.Mutex
	errs map[string]prometheus.Counter

	ev *sessionEvents // nil without SetEmit
}

var _ stamp.Observer = (*Session)(nil)

// Sent implements stamp.Observer.
func (s *Session) Sent() { s.sent.Inc() }

// Reply implements stamp.Observer.
func (s *Session) Reply(r *stamp.Reply) {
	if s.stateless == nil {
		s.stateless = s.m.stateless.WithLabelValues(s.lv...)
	}
	s.stateless.Set(b2f(r.Stateless))
	s.rtt.Observe(r.RTT.Seconds())
	s.pdvFwd.Set(r.ForwardVariation.Seconds())
	s.pdvRev.Set(r.ReverseVariation.Seconds())
	if r.Synced {
		if s.owdFwd == nil {
			s.owdFwd = s.m.owd.WithLabelValues(s.owdFwdLV...)
			s.owdRev = s.m.owd.WithLabelValues(s.owdRevLV...)
		}
		s.owdFwd.Set(max(r.Forward, 0).Seconds())
		s.owdRev.Set(max(r.Reverse, 0).Seconds())
		s.synced.Set(1)
	} else {
		if s.owdFwd != nil {
			// Unsynchronised clocks make one-way delays meaningless:
			// the series disappears rather than showing nonsense.
			s.m.owd.DeleteLabelValues(s.owdFwdLV...)
			s.m.owd.DeleteLabelValues(s.owdRevLV...)
			s.owdFwd, s.owdRev = nil, nil
		}
		s.synced.Set(0)
	}
	s.ev.reply(r)
	if r.HasForwardDSCP {
		if s.remFwd == nil {
			s.remFwd = s.m.remarked.WithLabelValues(s.owdFwdLV...)
		}
		s.remFwd.Set(b2f(r.ForwardRemarked))
	}
	if r.HasReverseDSCP {
		if s.remRev == nil {
			s.remRev = s.m.remarked.WithLabelValues(s.owdRevLV...)
		}
		s.remRev.Set(b2f(r.ReverseRemarked))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Lost implements stamp.Observer.
func (s *Session) Lost(forward, reverse int) {
	s.lostFwd.Add(float64(forward))
	s.lostRev.Add(float64(reverse))
	s.ev.lost(forward, reverse)
}

// LostUnknownDirection implements stamp.Observer.
func (s *Session) LostUnknownDirection(n int) { s.lostUnknown.Add(float64(n)) }

// Unattributed implements stamp.Observer.
func (s *Session) Unattributed(n int) { s.unattributed.Set(float64(n)) }

// Duplicate implements stamp.Observer.
func (s *Session) Duplicate() { s.dup.Inc() }

// Reordered implements stamp.Observer.
func (s *Session) Reordered() { s.reord.Inc() }

// Late implements stamp.Observer.
func (s *Session) Late() { s.late.Inc() }

// Error implements stamp.Observer.
func (s *Session) Error(reason string) {
	s.mu.Lock()
	c, ok := s.errs[reason]
	if !ok {
		c = s.m.errs.WithLabelValues(append(append([]string{}, s.lv...), reason)...)
		s.errs[reason] = c
	}
	s.mu.Unlock()
	c.Inc()
}

// ReflectorCollector exports a reflector's counters at scrape time.
type ReflectorCollector struct {
	site  func() string
	stats func() stamp.ReflectorStats

	packets   *prometheus.Desc
	sessions  *prometheus.Desc
	integrity *prometheus.Desc
	drops     *prometheus.Desc
}

// NewReflectorCollector exports stats (a Reflector's Stats method) under
// the agent's site label (read at scrape time: a reload may change it).
func NewReflectorCollector(site func() string, stats func() stamp.ReflectorStats) *ReflectorCollector {
	return &ReflectorCollector{
		site:  site,
		stats: stats,
		packets: prometheus.NewDesc("probed_stamp_reflector_packets_total",
			"STAMP test packets the reflector read, by result: reflected, not_allowed (source not in the mesh or allow-list, when the socket filter did not drop it already), rate_limited, malformed, auth_failed, send_error.",
			[]string{"site", "result"}, nil),
		sessions: prometheus.NewDesc("probed_stamp_reflector_sessions",
			"STAMP sessions the reflector keeps state for.", []string{"site"}, nil),
		integrity: prometheus.NewDesc("probed_stamp_reflector_integrity_failures_total",
			"Reflected STAMP test packets (authenticated mode) whose TLVs failed HMAC verification: answered with the I flag on every TLV, none of them processed (RFC 8972 section 4.8).",
			[]string{"site"}, nil),
		drops: prometheus.NewDesc("probed_stamp_reflector_socket_drops_total",
			"Datagrams the kernel dropped on the reflector's sockets before it read them: from sources the allow-list does not name (refused by the socket filter: a flood shows here, not in probed_stamp_reflector_packets_total), or because the receive buffer was full. Counts from the reflector's (re)start.",
			[]string{"site"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ReflectorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.sessions
	ch <- c.integrity
	ch <- c.drops
}

// Collect implements prometheus.Collector.
func (c *ReflectorCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	site := c.site()
	for _, v := range []struct {
		result string
		n      uint64
	}{
		{"reflected", st.Reflected}, {"not_allowed", st.NotAllowed}, {"rate_limited", st.RateLimited},
		{"malformed", st.Malformed}, {"auth_failed", st.AuthFailed}, {"send_error", st.SendErrors},
	} {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v.n), site, v.result)
	}
	ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(st.Sessions), site)
	ch <- prometheus.MustNewConstMetric(c.integrity, prometheus.CounterValue, float64(st.IntegrityFailed), site)
	ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(st.SocketDrops), site)
}
