package exporter

import (
	"net/netip"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/ecmp"
)

// Per-flow accounting of targets probed over several flows (flows: N,
// docs/ecmp.md). Each flow's outcomes go into a ring of time buckets over
// the flow window, by the probe's send time: the window slides by one
// bucket, the per-probe path touches one cell and allocates nothing. The
// engine asks every 10 s for a test of the window (EvaluateFlows) and
// reports the member paths its Paris traces of the flows found
// (MemberPaths); the per-target summaries are exported, the per-flow
// detail is in the JSON API (/api/v1/flows) and, when flow_series is set,
// in per-flow series.

const (
	// flowBuckets is how many buckets the flow window slides by.
	flowBuckets = 16
	// DefaultFlowWindow is the shortest flow window: each flow's loss is
	// tested over at least this much time, and over at least
	// flowWindowProbes probes per flow (docs/ecmp.md: about 40 per flow
	// find a 30% member).
	DefaultFlowWindow = 10 * time.Minute
	flowWindowProbes  = 40
	// maxFlowWindow bounds the window (and keeps a bucket's counts within
	// 16 bits and its RTT sum, in µs, within 32).
	maxFlowWindow = time.Hour
)

// flowCell is one flow's outcomes in one bucket.
type flowCell struct {
	sent, lost, rtts uint16
	rttSum           uint32 // µs
	rttMin           uint32 // µs; valid when rtts > 0
}

// flowTotal is one flow's outcomes since the target started.
type flowTotal struct {
	sent, lost uint64
}

// flowStats is a recorder's per-flow state; guarded by the recorder's mu.
type flowStats struct {
	max      int      // spec.Flows: cells per bucket
	ids      []uint16 // the flows' identities (len: flows probed)
	interval time.Duration
	window   time.Duration
	width    int64 // ns per bucket
	since    int64 // ns (wall): the window started; earlier probes are not in it
	epoch    [flowBuckets]int64
	cells    []flowCell // bucket-major: cells[b*max+flow]
	total    []flowTotal
	series   bool

	// The last evaluation.
	evaluated   time.Time
	verdict     ecmp.Verdict
	worst       float64
	haveWorst   bool
	evaluations uint64
	flagged     uint64
	// The last member-path round and what it says of the current verdict.
	report    *probe.MemberPathReport
	attrib    []ecmp.PathVerdict
	suspects  []flowSuspect // of the current verdict's lossy paths
	logged    string        // the attribution logged last
	wasLossy  bool
	changedAt time.Time // when the verdict last turned
}

// flowSuspect is one lossy member path's suspect hop, as exported.
type flowSuspect struct {
	labels string // `,hop="2",address="…",previous="…"`
	hop    string
	addr   string
	prev   string
}

// FlowWindowFor is the flow window of a target of flows flows probed
// every interval, with the default shortest window (check-config).
func FlowWindowFor(flows int, interval time.Duration) time.Duration {
	return flowWindow(DefaultFlowWindow, flows, interval)
}

// flowWindow is at least shortest and long enough for flowWindowProbes
// probes per flow even when the newest bucket has just begun (the window
// tested holds 15 to 16 of its buckets); over a minute, whole seconds.
func flowWindow(shortest time.Duration, flows int, interval time.Duration) time.Duration {
	w := max(shortest, time.Duration(flowWindowProbes*flows)*interval*flowBuckets/(flowBuckets-1))
	if w > time.Minute {
		w = (w + time.Second - 1).Truncate(time.Second)
	}
	return max(min(w, maxFlowWindow), flowBuckets*time.Millisecond)
}

func newFlowStats(s *config.ProbeSpec, windowMin time.Duration) *flowStats {
	f := &flowStats{max: s.Flows, series: s.FlowSeries}
	f.reset(s.Flows, s.Interval, windowMin)
	f.ids = make([]uint16, s.Flows)
	return f
}

// reset starts the window over for flows flows probed every interval.
func (f *flowStats) reset(flows int, interval, windowMin time.Duration) {
	f.max, f.interval = flows, interval
	f.window = flowWindow(windowMin, flows, interval)
	f.width = int64(f.window / flowBuckets)
	f.since = time.Now().UnixNano()
	f.epoch = [flowBuckets]int64{}
	f.cells = make([]flowCell, flowBuckets*flows)
	if len(f.total) != flows {
		t := make([]flowTotal, flows)
		copy(t, f.total)
		f.total = t
	}
	f.evaluated, f.verdict, f.haveWorst = time.Time{}, ecmp.Verdict{}, false
}

// add records one finished probe of flow p.Flow: lost, or answered after
// rtt (negative: answered without an RTT, a TCP reset).
func (f *flowStats) add(p probe.Probe, rtt time.Duration, lost bool) {
	if p.Flow < 0 || p.Flow >= f.max {
		return
	}
	t := &f.total[p.Flow]
	t.sent++
	if lost {
		t.lost++
	}
	at := p.Sent.UnixNano()
	if p.Sent.IsZero() {
		at = time.Now().UnixNano()
	}
	if at < f.since {
		return // sent before the window started over (other settings)
	}
	bn := at / f.width
	i := int(bn % flowBuckets)
	switch {
	case f.epoch[i] < bn:
		f.epoch[i] = bn
		clear(f.cells[i*f.max : (i+1)*f.max])
	case f.epoch[i] > bn:
		return // older than the window
	}
	c := &f.cells[i*f.max+p.Flow]
	if c.sent == 1<<16-1 {
		return
	}
	c.sent++
	if lost {
		c.lost++
		return
	}
	if rtt < 0 {
		return
	}
	us := uint32(min(rtt/time.Microsecond, 1<<32-1))
	if c.rtts == 0 || us < c.rttMin {
		c.rttMin = us
	}
	c.rtts++
	c.rttSum += us
}

// flowWin is one flow's outcomes over the window.
type flowWin struct {
	sent, lost, rtts uint64
	rttSum           uint64 // µs
	rttMin           uint32 // µs; valid when rtts > 0
}

// sum adds up the window ending at now for the first n flows.
func (f *flowStats) sum(now time.Time, n int, out []flowWin) []flowWin {
	out = append(out[:0], make([]flowWin, n)...)
	nb := now.UnixNano() / f.width
	for b := range flowBuckets {
		if e := f.epoch[b]; e <= nb-flowBuckets || e > nb || e == 0 {
			continue
		}
		row := f.cells[b*f.max : b*f.max+n]
		for i := range row {
			c, w := &row[i], &out[i]
			w.sent += uint64(c.sent)
			w.lost += uint64(c.lost)
			if c.rtts > 0 {
				if w.rtts == 0 || c.rttMin < w.rttMin {
					w.rttMin = c.rttMin
				}
				w.rtts += uint64(c.rtts)
				w.rttSum += uint64(c.rttSum)
			}
		}
	}
	return out
}

// SetFlows implements probe.FlowRecorder: the flows' identities, and a
// new window when the number of flows or the interval changed (a job
// restarted with other settings; its series continue).
func (r *recorder) SetFlows(s *config.ProbeSpec, ids []uint16) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flows == nil || r.removed {
		return
	}
	f := r.flows
	if s.Flows != f.max || s.Interval != f.interval {
		f.reset(s.Flows, s.Interval, r.m.FlowWindow())
	}
	f.series = s.FlowSeries
	f.ids = slices.Clone(ids[:min(len(ids), f.max)])
}

// EvaluateFlows implements probe.FlowRecorder: ecmp.Test over the window.
func (r *recorder) EvaluateFlows(now time.Time) ecmp.Verdict {
	r.mu.Lock()
	f := r.flows
	if f == nil || r.removed {
		r.mu.Unlock()
		return ecmp.Verdict{}
	}
	win := f.sum(now, len(f.ids), nil)
	r.mu.Unlock()

	counts := make([]ecmp.FlowCount, len(win))
	worst, haveWorst := 0.0, false
	for i, w := range win {
		counts[i] = ecmp.FlowCount{Sent: w.sent, Lost: w.lost}
		if w.sent > 0 {
			worst, haveWorst = max(worst, counts[i].Ratio()), true
		}
	}
	v := ecmp.Test(counts, ecmp.DefaultOptions())

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flows != f || r.removed {
		return v
	}
	f.evaluated, f.verdict, f.worst, f.haveWorst = now, v, worst, haveWorst
	f.evaluations++
	if v.Concentrated {
		f.flagged++
	}
	if v.Concentrated != f.wasLossy {
		f.wasLossy, f.changedAt = v.Concentrated, now
		if !v.Concentrated {
			r.m.log.Info("loss no longer concentrated on some of the target's flows", r.flowFields()...)
			f.logged = ""
		}
	}
	r.attributeLocked()
	return v
}

// MemberPaths implements probe.FlowRecorder.
func (r *recorder) MemberPaths(rep probe.MemberPathReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flows == nil || r.removed {
		return
	}
	if rep.Err != nil && r.flows.report != nil && r.flows.report.Err == nil {
		// Keep the paths found last; say the latest round failed.
		kept := *r.flows.report
		kept.Err = rep.Err
		rep = kept
	}
	r.flows.report = &rep
	r.attributeLocked()
}

// attributeLocked combines the verdict with the member paths: per path
// its lossy and healthy flows, the suspect hops of the lossy ones; logs
// a new attribution once. r.mu is held.
func (r *recorder) attributeLocked() {
	f := r.flows
	f.attrib, f.suspects = nil, nil
	if f.report == nil || len(f.report.Paths.Paths) == 0 {
		if f.verdict.Concentrated && f.logged == "" {
			f.logged = "-"
			r.m.log.Warn("loss concentrated on some of the target's flows (member paths not traced yet)",
				append(r.flowFields(), zap.Ints("lossy_flows", f.verdict.Lossy), zap.Float64("lossy_loss_ratio", f.verdict.LossyRatio),
					zap.Float64("other_loss_ratio", f.verdict.RestRatio), zap.Float64("log10_p", f.verdict.Log10P))...)
		}
		return
	}
	var lossy []int
	if f.verdict.Concentrated {
		lossy = f.verdict.Lossy
	}
	f.attrib = ecmp.Attribute(lossy, f.report.Paths)
	var msg []string
	for _, pv := range f.attrib {
		if len(pv.Lossy) == 0 {
			continue
		}
		path := f.report.Paths.Paths[pv.Path]
		desc := "path " + strconv.Itoa(pv.Path+1) + " (" + hopList(path.Hops) + ")"
		switch {
		case pv.Mixed:
			desc += ": lossy and healthy flows share it (below layer 3: a LAG member, or the return path)"
		case pv.Suspect.Found:
			s := flowSuspect{hop: strconv.Itoa(pv.Suspect.TTL), addr: pv.Suspect.Addr.String()}
			if pv.Suspect.Prev.IsValid() {
				s.prev = pv.Suspect.Prev.String()
			}
			s.labels = `,hop="` + s.hop + `",address="` + escapeLabel(s.addr) + `",previous="` + escapeLabel(s.prev) + `"`
			f.suspects = append(f.suspects, s)
			desc += ": suspect hop " + s.hop + " " + s.addr
		default:
			desc += ": no hop of its own (the fault is on a shared or silent hop, or on the return path)"
		}
		msg = append(msg, desc)
	}
	if !f.verdict.Concentrated || len(msg) == 0 {
		return
	}
	key := ""
	for _, m := range msg {
		key += m + "; "
	}
	if key == f.logged {
		return
	}
	f.logged = key
	r.m.log.Warn("loss concentrated on some of the target's flows", append(r.flowFields(),
		zap.Ints("lossy_flows", f.verdict.Lossy), zap.Float64("lossy_loss_ratio", f.verdict.LossyRatio),
		zap.Float64("other_loss_ratio", f.verdict.RestRatio), zap.Float64("log10_p", f.verdict.Log10P),
		zap.Int("member_paths", len(f.report.Paths.Paths)), zap.Strings("lossy_paths", msg))...)
}

func (r *recorder) flowFields() []zap.Field {
	return []zap.Field{zap.String("target_site", r.spec.TargetSite), zap.String("target", r.spec.Target),
		zap.String("protocol", r.spec.Protocol), zap.String("port", r.spec.PortLabel()), zap.String("path", r.spec.Path),
		zap.String("segment", r.spec.Segment)}
}

func hopList(hops []netip.Addr) string {
	s := ""
	for i, h := range hops {
		if i > 0 {
			s += ","
		}
		if h.IsValid() {
			s += h.String()
		} else {
			s += "*"
		}
	}
	return s
}

// flowSnap is a target's flow summary of one scrape.
type flowSnap struct {
	have      bool
	flows     int
	paths     int // -1: not traced yet
	lossy     int
	worst     float64
	haveWorst bool
	suspects  []flowSuspect
	// Per-flow series (flow_series): totals and the window's mean RTT.
	series []flowSeries
}

type flowSeries struct {
	sent, lost uint64
	rtt        float64 // seconds; < 0: none in the window
}

// snap copies the summary. r.mu is held.
func (f *flowStats) snap(s *flowSnap) {
	*s = flowSnap{have: true, flows: len(f.ids), paths: -1, worst: f.worst, haveWorst: f.haveWorst, suspects: f.suspects}
	if rep := f.report; rep != nil && (rep.Err == nil || len(rep.Paths.Paths) > 0) {
		s.paths = len(rep.Paths.Paths)
	}
	if f.verdict.Concentrated {
		s.lossy = len(f.verdict.Lossy)
	}
	if f.series {
		win := f.sum(time.Now(), len(f.ids), nil)
		s.series = make([]flowSeries, len(f.ids))
		for i := range s.series {
			s.series[i] = flowSeries{sent: f.total[i].sent, lost: f.total[i].lost, rtt: -1}
			if w := win[i]; w.rtts > 0 {
				s.series[i].rtt = float64(w.rttSum) / float64(w.rtts) / 1e6
			}
		}
	}
}

// FlowWindow is the shortest per-flow window of targets with flows.
func (m *Metrics) FlowWindow() time.Duration {
	if d := time.Duration(m.flowWindow.Load()); d > 0 {
		return d
	}
	return DefaultFlowWindow
}

// SetFlowWindow changes the shortest per-flow window (tests run faster
// than 10 minutes); the windows of running targets start over.
func (m *Metrics) SetFlowWindow(d time.Duration) {
	m.flowWindow.Store(int64(d))
	m.mu.Lock()
	defer m.mu.Unlock()
	for r := range m.recs {
		r.mu.Lock()
		if r.flows != nil {
			r.flows.reset(r.flows.max, r.flows.interval, d)
		}
		r.mu.Unlock()
	}
}
