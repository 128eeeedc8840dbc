package sla

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/probed/probed/config"
)

// Metric names the report reads.
const (
	metricSent    = "probed_probes_sent_total"
	metricLost    = "probed_probes_lost_total"
	metricBucket  = "probed_rtt_seconds_bucket"
	metricNative  = "probed_rtt_seconds" // native histogram
	metricErrors  = "probed_probe_errors_total"
	metricRTTSum  = "probed_rtt_seconds_sum"
	metricRTTN    = "probed_rtt_seconds_count"
	metricJitter  = "probed_jitter_seconds"
	metricBGP     = "probed_dx_bgp_peer_up"
	metricVIF     = "probed_dx_vif_up"
	metricConn    = "probed_dx_connection_up"
	metricMACsec  = "probed_dx_connection_macsec_up"
	groupLabels   = "source_site, target_site, path, segment"
	defaultChunk  = 24 * time.Hour
	maxPointsStep = 11000 // Prometheus refuses range queries with more points per series
)

// Minute outcomes.
const (
	stNoData byte = iota
	stGood
	stUnresolved // good as far as the data can tell: p95 in the objective's bucket
	stUnreachable
	stLoss
	stLatency
)

var causeName = map[byte]string{stUnreachable: "unreachable", stLoss: "loss", stLatency: "latency"}

// Definition is printed in every report so readers know what "good" means.
const Definition = "A minute is good when its probes were answered (not all lost; a TCP reset is an answer), its probe loss was at most the loss objective " +
	"and the 95th-percentile RTT of its answered probes (from the probed_rtt_seconds histogram: native buckets where Prometheus stores them, " +
	"classic buckets otherwise) was at most the RTT objective. A p95 that falls in the histogram bucket holding the objective cannot be judged: " +
	"such a minute is counted good and reported as unresolved, never as a breach. Otherwise it is bad, with cause unreachable (every probe lost), loss or latency, " +
	"in that order of precedence. A minute without probe samples (agent down, scrape failed) is no data: neither good nor bad. " +
	"Availability = good / (good + bad). Results are per source site, target site, path and segment, summing all targets " +
	"and protocols of that pair. Breach windows are runs of consecutive bad minutes. Times are UTC."

// Options select the period and how to query.
type Options struct {
	// From and To bound the period [From, To); both are truncated to Step.
	From, To time.Time
	// Step is the length of one judged minute (default 1m).
	Step time.Duration
	// Chunk is the span of one range query (default 24h): bounded so a
	// month over dozens of pairs never asks the server for everything at once.
	Chunk time.Duration
	// Match adds label matchers to every probe query, e.g. source_site="us-east".
	Match string
	// SLA holds the objectives (nil: defaults).
	SLA *config.SLAConfig
	// Now is the report time (zero: time.Now).
	Now time.Time
}

type pairKey struct{ source, target, path, segment string }

type builder struct {
	c     *Client
	o     Options
	n     int // minutes in the period
	pairs map[pairKey]*Pair
	days  []time.Time // start of each day
	// What the server stores: native histograms, classic buckets (both
	// during a switch), and TCP resets.
	native, classic, refused bool
	aws                      map[string]*awsSeries
	events                   []awsEvent
	conn                     map[string]string // connection_id → site
	rep                      *Report
}

type awsSeries struct {
	labels map[string]string
	last   float64
	seen   bool
}

type awsEvent struct {
	t        time.Time
	metric   string
	labels   map[string]string
	from, to float64
}

// Build queries Prometheus and computes the report.
func Build(ctx context.Context, c *Client, o Options) (*Report, error) {
	if o.Step <= 0 {
		o.Step = time.Minute
	}
	if o.Chunk <= 0 {
		o.Chunk = defaultChunk
	}
	o.Chunk = o.Chunk.Truncate(o.Step)
	if o.Chunk < o.Step {
		o.Chunk = o.Step
	}
	if max := o.Step * maxPointsStep; o.Chunk > max {
		o.Chunk = max
	}
	if o.SLA == nil {
		o.SLA = &config.SLAConfig{}
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	o.From, o.To = o.From.UTC().Truncate(o.Step), o.To.UTC().Truncate(o.Step)
	var notes []string
	// The current month ends now: minutes still to come are not "no data".
	if now := o.Now.UTC().Truncate(o.Step); o.To.After(now) {
		notes = append(notes, fmt.Sprintf("The period was cut at the report time, %s UTC.", now.Format("2006-01-02 15:04")))
		o.To = now
	}
	if !o.To.After(o.From) {
		return nil, fmt.Errorf("empty period: from %s is not before to %s", o.From.Format(time.RFC3339), o.To.Format(time.RFC3339))
	}
	b := &builder{
		c: c, o: o, n: int(o.To.Sub(o.From) / o.Step),
		pairs: map[pairKey]*Pair{}, aws: map[string]*awsSeries{}, conn: map[string]string{},
		rep: &Report{
			Prometheus: c.URL(), Generated: o.Now.UTC(), From: o.From, To: o.To,
			StepSeconds: o.Step.Seconds(), Definition: Definition, Notes: notes,
		},
	}
	for path := range o.SLA.AWSPathSet() {
		b.rep.AWSPaths = append(b.rep.AWSPaths, path)
	}
	sort.Strings(b.rep.AWSPaths)
	for d := o.From; d.Before(o.To); d = d.Add(24 * time.Hour) {
		b.days = append(b.days, d)
	}
	awsMetrics, err := b.checkMetrics(ctx)
	if err != nil {
		return nil, err
	}
	if err := b.knownPairs(ctx); err != nil {
		return nil, err
	}
	for cs := o.From; cs.Before(o.To); cs = cs.Add(o.Chunk) {
		ce := cs.Add(o.Chunk)
		if ce.After(o.To) {
			ce = o.To
		}
		if err := b.minutes(ctx, cs, ce); err != nil {
			return nil, err
		}
		for _, m := range awsMetrics {
			if err := b.awsChunk(ctx, m, cs, ce); err != nil {
				return nil, err
			}
		}
	}
	for i, ds := range b.days {
		de := ds.Add(24 * time.Hour)
		if de.After(o.To) {
			de = o.To
		}
		if err := b.day(ctx, i, ds, de); err != nil {
			return nil, err
		}
	}
	b.finish()
	return b.rep, nil
}

// checkMetrics fails early, with a clear message, when the probe metrics
// are missing, and finds which optional ones exist.
func (b *builder) checkMetrics(ctx context.Context) ([]string, error) {
	names, err := b.c.MetricNames(ctx, `{__name__=~"probed_.+"}`, b.o.From, b.o.To)
	if err != nil {
		return nil, fmt.Errorf("listing probed metrics: %w", err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	period := fmt.Sprintf("between %s and %s", b.o.From.Format(time.RFC3339), b.o.To.Format(time.RFC3339))
	if len(names) == 0 {
		return nil, fmt.Errorf("Prometheus at %s has no probed_* metrics %s: is it scraping the probed agents (their /metrics on port 9447), and is the period right?", b.c.URL(), period)
	}
	var missing []string
	for _, m := range []string{metricSent, metricLost} {
		if !have[m] {
			missing = append(missing, m)
		}
	}
	b.native, b.classic, b.refused = have[metricNative], have[metricBucket], have[metricErrors]
	if !b.native && !b.classic {
		missing = append(missing, metricNative+" (native histogram) or "+metricBucket)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("Prometheus at %s is missing metric %s %s", b.c.URL(), strings.Join(missing, ", "), period)
	}
	if b.classic {
		b.rep.Notes = append(b.rep.Notes, "Some or all RTT data are classic histogram buckets (probed_rtt_seconds_bucket, 25–67 % wide): "+
			"percentiles of that data are only as exact as a bucket, and minutes whose p95 falls in the bucket holding the RTT objective are unresolved. "+
			"Run Prometheus with --enable-feature=native-histograms for 1 % resolution.")
	}
	if !have[metricJitter] {
		b.rep.Notes = append(b.rep.Notes, "No "+metricJitter+" series: jitter is not reported.")
	}
	var aws []string
	for _, m := range []string{metricBGP, metricVIF, metricConn, metricMACsec} {
		if have[m] {
			aws = append(aws, m)
		}
	}
	b.rep.AWSState = len(aws) > 0
	if !b.rep.AWSState {
		b.rep.Notes = append(b.rep.Notes, "No AWS-state metrics (probed_dx_*): breach windows were not checked against BGP, VIF, connection or MACsec state.")
	}
	return aws, nil
}

func (b *builder) sel(metric string) string {
	return metric + "{" + b.o.Match + "}"
}

func (b *builder) window() string {
	return fmt.Sprintf("[%ds]", int64(b.o.Step.Seconds()))
}

func (b *builder) pair(m map[string]string) *Pair {
	k := pairKey{m["source_site"], m["target_site"], m["path"], m["segment"]}
	p := b.pairs[k]
	if p == nil {
		obj := b.o.SLA.Objective(k.source, k.target, k.path, k.segment)
		p = &Pair{
			Source: k.source, Target: k.target, Path: k.path, Segment: k.segment,
			Objective: Objective{AvailabilityPercent: obj.Availability, LossPercent: obj.Loss, RTTP95Seconds: obj.RTTP95.Seconds()},
			status:    make([]byte, b.n), buckets: Buckets{}, native: NativeBuckets{}, bounds: map[float64]bool{},
			latQ: map[int]latCand{}, dayAcc: make([]dayAcc, len(b.days)),
		}
		for i := range p.dayAcc {
			p.dayAcc[i].buckets, p.dayAcc[i].native = Buckets{}, NativeBuckets{}
		}
		b.pairs[k] = p
	}
	return p
}

// chunkValues runs a range query over one chunk and lays each pair's values
// out per minute (NaN where the server returned nothing).
func (b *builder) chunkValues(ctx context.Context, q string, cs, ce time.Time) (map[*Pair][]float64, error) {
	n := int(ce.Sub(cs) / b.o.Step)
	res, err := b.c.QueryRange(ctx, q, cs.Add(b.o.Step), ce, b.o.Step)
	if err != nil {
		return nil, err
	}
	out := map[*Pair][]float64{}
	for _, s := range res {
		p := b.pair(s.Metric)
		v := out[p]
		if v == nil {
			v = make([]float64, n)
			for i := range v {
				v[i] = math.NaN()
			}
			out[p] = v
		}
		for _, pt := range s.Points {
			// The sample at t judges the minute (t-step, t].
			if i := int(pt.T.Sub(cs)/b.o.Step) - 1; i >= 0 && i < n {
				v[i] = pt.V
			}
		}
	}
	return out, nil
}

// minutes judges every minute of one chunk.
func (b *builder) minutes(ctx context.Context, cs, ce time.Time) error {
	w := b.window()
	sent, err := b.chunkValues(ctx, fmt.Sprintf("sum by (%s) (increase(%s%s))", groupLabels, b.sel(metricSent), w), cs, ce)
	if err != nil {
		return fmt.Errorf("querying probes sent: %w", err)
	}
	lost, err := b.chunkValues(ctx, fmt.Sprintf("sum by (%s) (increase(%s%s))", groupLabels, b.sel(metricLost), w), cs, ce)
	if err != nil {
		return fmt.Errorf("querying probes lost: %w", err)
	}
	// Per-minute p95 and replies, from whichever histogram the server has
	// (native first: it resolves 1 %).
	none := map[*Pair][]float64{}
	p95n, p95c, answered, answeredC, refused := none, none, none, none, none
	if b.native {
		if p95n, err = b.chunkValues(ctx, fmt.Sprintf("histogram_quantile(0.95, sum by (%s) (increase(%s%s)))", groupLabels, b.sel(metricNative), w), cs, ce); err != nil {
			return fmt.Errorf("querying per-minute p95 RTT: %w", err)
		}
		// Replies counted by the RTT histogram: a minute with none is
		// unreachable even when some of its losses are only decided (at the
		// probe timeout) in the next minute.
		if answered, err = b.chunkValues(ctx, fmt.Sprintf("histogram_count(sum by (%s) (increase(%s%s)))", groupLabels, b.sel(metricNative), w), cs, ce); err != nil {
			return fmt.Errorf("querying probes answered: %w", err)
		}
	}
	if b.classic {
		if p95c, err = b.chunkValues(ctx, fmt.Sprintf("histogram_quantile(0.95, sum by (%s, le) (increase(%s%s)))", groupLabels, b.sel(metricBucket), w), cs, ce); err != nil {
			return fmt.Errorf("querying per-minute p95 RTT: %w", err)
		}
		if answeredC, err = b.chunkValues(ctx, fmt.Sprintf("sum by (%s) (increase(%s%s))", groupLabels, b.sel(metricRTTN), w), cs, ce); err != nil {
			return fmt.Errorf("querying probes answered: %w", err)
		}
	}
	if b.refused {
		// A TCP reset answers the probe: the path is up (the port is closed).
		sel := metricErrors + `{reason="refused"}`
		if b.o.Match != "" {
			sel = metricErrors + `{reason="refused",` + b.o.Match + "}"
		}
		if refused, err = b.chunkValues(ctx, fmt.Sprintf("sum by (%s) (increase(%s%s))", groupLabels, sel, w), cs, ce); err != nil {
			return fmt.Errorf("querying refused probes: %w", err)
		}
	}
	jit, err := b.chunkValues(ctx, fmt.Sprintf("avg by (%s) (avg_over_time(%s%s))", groupLabels, b.sel(metricJitter), w), cs, ce)
	if err != nil {
		return fmt.Errorf("querying jitter: %w", err)
	}
	at := func(v []float64, i int) float64 {
		if v == nil {
			return math.NaN()
		}
		return v[i]
	}
	base := int(cs.Sub(b.o.From) / b.o.Step)
	perDay := int(24 * time.Hour / b.o.Step)
	for p, s := range sent {
		l, j := lost[p], jit[p]
		for i, snt := range s {
			if math.IsNaN(snt) || snt < 0.5 {
				continue // no probes counted: no data
			}
			lst := 0.0
			if l != nil && !math.IsNaN(l[i]) {
				lst = l[i]
			}
			// Answered: RTT samples (native, else classic) plus resets.
			a := at(answered[p], i)
			if math.IsNaN(a) {
				a = at(answeredC[p], i)
			}
			if r := at(refused[p], i); !math.IsNaN(r) {
				if math.IsNaN(a) {
					a = 0
				}
				a += r
			}
			q, native := at(p95n[p], i), true
			if math.IsNaN(q) {
				q, native = at(p95c[p], i), false
			}
			st := stGood
			lossPct := 100 * lst / snt
			idx := base + i
			switch {
			case lst >= snt*(1-1e-9) || !math.IsNaN(a) && a < 0.5:
				st = stUnreachable
			case lossPct > p.Objective.LossPercent+1e-9:
				st = stLoss
			case !math.IsNaN(q) && 3*q > p.Objective.RTTP95Seconds:
				// Judged once the bucket layout is known (finish).
				p.latQ[idx] = latCand{p95: q, native: native}
			}
			p.status[idx] = st
			p.ProbesSent += snt
			p.ProbesLost += lst
			d := &p.dayAcc[idx/perDay]
			d.sent += snt
			d.lost += lst
			if j != nil && !math.IsNaN(j[i]) {
				p.jitSum += j[i]
				p.jitN++
			}
		}
	}
	return nil
}

// histWindow bounds the range of one increase() over the histogram: a
// day of 15s scrapes over dozens of pairs, every target and every bucket
// would come near Prometheus' default query.max-samples (50 million).
const histWindow = 6 * time.Hour

// day reads one day's RTT histogram, sum and count, in windows of at most
// histWindow whose increases add up exactly (adjacent windows share their
// boundary sample).
func (b *builder) day(ctx context.Context, i int, ds, de time.Time) error {
	for ws := ds; ws.Before(de); ws = ws.Add(histWindow) {
		we := ws.Add(histWindow)
		if we.After(de) {
			we = de
		}
		if err := b.dayWindow(ctx, i, ws, we); err != nil {
			return fmt.Errorf("querying the RTT histogram of %s: %w", ds.Format(time.DateOnly), err)
		}
	}
	return nil
}

func (b *builder) dayWindow(ctx context.Context, i int, ws, we time.Time) error {
	w := fmt.Sprintf("[%ds]", int64(we.Sub(ws).Seconds()))
	if b.native {
		hs, err := b.c.queryHistograms(ctx, fmt.Sprintf("sum by (%s) (increase(%s%s))", groupLabels, b.sel(metricNative), w), float64(we.UnixMilli())/1000)
		if err != nil {
			return err
		}
		for _, h := range hs {
			d := &b.pair(h.Metric).dayAcc[i]
			for _, bk := range h.Buckets {
				d.native.add(bk.lower, bk.upper, bk.count)
			}
			d.rttSum += h.Sum
			d.rttN += h.Count
		}
	}
	if !b.classic {
		return nil
	}
	res, err := b.c.Query(ctx, fmt.Sprintf("sum by (%s, le) (increase(%s%s))", groupLabels, b.sel(metricBucket), w), we)
	if err != nil {
		return err
	}
	for _, s := range res {
		p := b.pair(s.Metric)
		p.dayAcc[i].buckets.addLe(s.Metric["le"], s.Points[0].V)
	}
	for _, m := range []string{metricRTTSum, metricRTTN} {
		res, err := b.c.Query(ctx, fmt.Sprintf("sum by (%s) (increase(%s%s))", groupLabels, b.sel(m), w), we)
		if err != nil {
			return err
		}
		for _, s := range res {
			d := &b.pair(s.Metric).dayAcc[i]
			if m == metricRTTSum {
				d.rttSum += s.Points[0].V
			} else {
				d.rttN += s.Points[0].V
			}
		}
	}
	return nil
}

// awsChunk follows one AWS-state metric through a chunk and records every
// change of value, appearance or disappearance, and flaps inside a minute.
func (b *builder) awsChunk(ctx context.Context, metric string, cs, ce time.Time) error {
	n := int(ce.Sub(cs) / b.o.Step)
	vals, err := b.c.QueryRange(ctx, metric, cs.Add(b.o.Step), ce, b.o.Step)
	if err != nil {
		return fmt.Errorf("querying AWS state %s: %w", metric, err)
	}
	chg, err := b.c.QueryRange(ctx, fmt.Sprintf("changes(%s%s) > 0", metric, b.window()), cs.Add(b.o.Step), ce, b.o.Step)
	if err != nil {
		return fmt.Errorf("querying AWS state changes of %s: %w", metric, err)
	}
	type row struct {
		labels map[string]string
		v      []float64
		flap   []bool
	}
	rows := map[string]*row{}
	get := func(m map[string]string) *row {
		key := labelKey(m)
		r := rows[key]
		if r == nil {
			r = &row{labels: m, v: make([]float64, n), flap: make([]bool, n)}
			for i := range r.v {
				r.v[i] = math.NaN()
			}
			rows[key] = r
		}
		return r
	}
	for _, s := range vals {
		r := get(s.Metric)
		for _, pt := range s.Points {
			if i := int(pt.T.Sub(cs)/b.o.Step) - 1; i >= 0 && i < n {
				r.v[i] = pt.V
			}
		}
		if metric == metricConn && s.Metric["connection_id"] != "" {
			b.conn[s.Metric["connection_id"]] = s.Metric["site"]
		}
	}
	for _, s := range chg {
		m := map[string]string{}
		for k, v := range s.Metric {
			if k != "__name__" {
				m[k] = v
			}
		}
		m["__name__"] = metric
		r := get(m)
		for _, pt := range s.Points {
			if i := int(pt.T.Sub(cs)/b.o.Step) - 1; i >= 0 && i < n {
				r.flap[i] = true
			}
		}
	}
	// Series known from earlier chunks that are gone now disappeared.
	for key, st := range b.aws {
		if st.labels["__name__"] == metric && rows[key] == nil {
			get(st.labels)
		}
	}
	for key, r := range rows {
		st := b.aws[key]
		if st == nil {
			st = &awsSeries{labels: r.labels, last: math.NaN()}
			b.aws[key] = st
		}
		for i, v := range r.v {
			t := cs.Add(time.Duration(i+1) * b.o.Step)
			same := math.IsNaN(v) && math.IsNaN(st.last) || v == st.last
			switch {
			case st.seen && !same:
				b.events = append(b.events, awsEvent{t: t, metric: metric, labels: r.labels, from: st.last, to: v})
			case st.seen && r.flap[i] && !math.IsNaN(v):
				b.events = append(b.events, awsEvent{t: t, metric: metric, labels: r.labels, from: v, to: v})
			}
			st.last, st.seen = v, true
		}
	}
	return nil
}

// labelKey is a canonical string for a label set: name{k="v",...}.
func labelKey(m map[string]string) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		if k != "__name__" {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	var sb strings.Builder
	sb.WriteString(m["__name__"])
	sb.WriteByte('{')
	for i, k := range ks {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%s=%q", k, m[k])
	}
	sb.WriteByte('}')
	return sb.String()
}

// finish turns the accumulated minutes and days into the report.
func (b *builder) finish() {
	r := b.rep
	for _, p := range b.pairs {
		r.Pairs = append(r.Pairs, p)
	}
	sortPairs(r.Pairs)
	if len(r.Pairs) == 0 {
		what := "No probe series"
		if b.o.Match != "" {
			what += " matching " + b.o.Match
		}
		r.Notes = append(r.Notes, what+" had data in the period.")
	}
	changes := b.awsChanges()
	perDay := int(24 * time.Hour / b.o.Step)
	for _, p := range r.Pairs {
		m := &p.Minutes
		m.Total = b.n
		for i := range p.dayAcc {
			p.buckets.add(p.dayAcc[i].buckets)
			p.native.merge(p.dayAcc[i].native)
			p.rttSum += p.dayAcc[i].rttSum
			p.rttN += p.dayAcc[i].rttN
			p.Days = append(p.Days, &Day{Date: b.days[i].Format(time.DateOnly)})
		}
		b.judgeLatency(p)
		for i, st := range p.status {
			d := p.Days[i/perDay]
			switch st {
			case stNoData:
				m.NoData++
				d.NoData++
			case stGood, stUnresolved:
				m.Good++
				d.Good++
				if st == stUnresolved {
					m.LatencyUnresolved++
				}
			default:
				m.Bad++
				d.Bad++
				switch st {
				case stUnreachable:
					m.Unreachable++
				case stLoss:
					m.Loss++
				case stLatency:
					m.Latency++
				}
			}
		}
		p.AvailabilityPercent = ratio(100*float64(m.Good), float64(m.Good+m.Bad))
		p.AvailabilityMinPercent = ratio(100*float64(m.Good-m.LatencyUnresolved), float64(m.Good+m.Bad))
		if m.LatencyUnresolved > 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("%s: the RTT objective %s lies inside the histogram bucket %s its data resolves (%s): "+
				"%d minutes whose p95 fell in that bucket could not be judged on latency; they are counted good "+
				"(availability %.4f %%; %.4f %% if they were all bad).",
				p.Name(), fmtSeconds(p.Objective.RTTP95Seconds), p.unresolvedBucket, p.RTTResolution, m.LatencyUnresolved,
				float64(p.AvailabilityPercent), float64(p.AvailabilityMinPercent)))
		}
		switch {
		case !p.AvailabilityPercent.Valid():
			p.Status = "no data"
		case float64(p.AvailabilityMinPercent) >= p.Objective.AvailabilityPercent-1e-9:
			p.Status = "met"
		case float64(p.AvailabilityPercent) >= p.Objective.AvailabilityPercent-1e-9:
			p.Status = "unresolved"
		default:
			p.Status = "breached"
		}
		allowed := (1 - p.Objective.AvailabilityPercent/100) * float64(m.Good+m.Bad)
		switch {
		case m.Good+m.Bad == 0:
			p.ErrorBudgetUsedPercent = nan()
		case m.Bad == 0:
			p.ErrorBudgetUsedPercent = 0
		default:
			p.ErrorBudgetUsedPercent = ratio(100*float64(m.Bad), allowed)
			if allowed <= 0 {
				p.ErrorBudgetUsedPercent = Num(math.Inf(1))
			}
		}
		p.RTT = b.rttOf(p, p.buckets, p.native, p.rttSum, p.rttN)
		p.LossPercent = ratio(100*p.ProbesLost, p.ProbesSent)
		p.JitterSeconds = ratio(p.jitSum, float64(p.jitN))
		for i, d := range p.Days {
			a := &p.dayAcc[i]
			d.AvailabilityPercent = ratio(100*float64(d.Good), float64(d.Good+d.Bad))
			d.RTT = b.rttOf(p, a.buckets, a.native, a.rttSum, a.rttN)
			d.LossPercent = ratio(100*a.lost, a.sent)
		}
		p.Breaches = b.breaches(p, changes)
	}
	res := map[string]int{}
	for _, p := range r.Pairs {
		if p.RTTResolution != "" {
			res[p.RTTResolution]++
		}
	}
	var kinds []string
	for k, n := range res {
		kinds = append(kinds, fmt.Sprintf("%s (%d pairs)", k, n))
	}
	sort.Strings(kinds)
	switch len(kinds) {
	case 0:
		r.RTTResolution = "no RTT data"
	case 1:
		for k := range res {
			r.RTTResolution = k
		}
	default:
		r.RTTResolution = strings.Join(kinds, "; ")
	}
	r.Comparisons = b.compare()
	sum, n := 0.0, 0
	for _, c := range r.Comparisons {
		if c.DiffPercent.Valid() {
			sum += float64(c.DiffPercent)
			n++
		}
	}
	r.PathDiffPercent = ratio(sum, float64(n))
}

// rttOf summarises RTTs from native buckets, classic buckets, or — when
// a period has both — the native counts spread over the classic bounds.
func (b *builder) rttOf(p *Pair, bk Buckets, nb NativeBuckets, sum, n float64) RTT {
	r := RTT{Mean: ratio(sum, n)}
	var q func(float64) float64
	switch {
	case len(nb) > 0 && classicCount(bk) == 0:
		q = nb.Quantile
	case len(nb) > 0:
		merged := nb.toClassic(p.sortedBounds())
		merged.add(bk)
		q = merged.Quantile
	default:
		q = bk.Quantile
	}
	r.P50, r.P95, r.P99 = Num(q(0.5)), Num(q(0.95)), Num(q(0.99))
	return r
}

func classicCount(bk Buckets) float64 {
	return bk[math.Inf(1)]
}

// sortedBounds are the finite classic bucket bounds the pair's data has.
func (p *Pair) sortedBounds() []float64 {
	var out []float64
	for u := range p.bounds {
		if !math.IsInf(u, 1) {
			out = append(out, u)
		}
	}
	sort.Float64s(out)
	return out
}

// judgeLatency decides the minutes whose p95 RTT was near or above the
// objective. The true p95 lies in the same bucket as histogram_quantile's
// estimate (which interpolates inside the bucket holding the rank): when
// the whole bucket is at or under the objective the minute is good, when
// it is above, bad (latency); when the objective lies inside it, the data
// cannot tell: unresolved, counted good, reported. It also names the
// resolution the pair's RTT figures have.
func (b *builder) judgeLatency(p *Pair) {
	for _, d := range p.dayAcc {
		for u := range d.buckets {
			p.bounds[u] = true
		}
	}
	bounds := p.sortedBounds()
	ratioN := p.native.widest()
	schema := nativeSchemaOf(ratioN)
	hasClassic := classicCount(p.buckets) > 0
	switch {
	case len(p.native) > 0 && !hasClassic:
		p.RTTResolution = fmt.Sprintf("native histogram (schema %d: buckets %.2f %% wide)", schema, 100*(math.Exp2(math.Exp2(-float64(schema)))-1))
	case len(p.native) > 0:
		p.RTTResolution = "classic buckets (native and classic data mixed in the period; percentiles at classic resolution)"
	case hasClassic:
		p.RTTResolution = "classic buckets (25–67 % wide)"
	}
	obj := p.Objective.RTTP95Seconds
	unresolved := 0
	var ulo, uhi float64
	for idx, c := range p.latQ {
		if p.status[idx] != stGood {
			continue
		}
		var lo, hi float64
		if c.native {
			lo, hi = nativeBucketOf(c.p95, schema)
		} else {
			lo, hi = classicBucketOf(c.p95, bounds)
		}
		switch {
		case hi <= obj*(1+1e-12):
		case lo >= obj*(1-1e-12):
			p.status[idx] = stLatency
		default:
			p.status[idx] = stUnresolved
			unresolved++
			ulo, uhi = lo, hi
		}
	}
	p.latQ = nil
	if unresolved > 0 {
		p.unresolvedBucket = fmt.Sprintf("(%s, %s]", fmtSeconds(ulo), fmtSeconds(uhi))
	}
}

func fmtSeconds(s float64) string {
	return time.Duration(math.Round(s * 1e9)).String()
}

// awsChanges resolves the recorded events into readable changes, with the
// site (MACsec series carry only the connection ID) and segment.
func (b *builder) awsChanges() []AWSChange {
	var out []AWSChange
	// Several agents (or an HA pair of Prometheus jobs) may export the same
	// AWS series under different instance labels: report each change once.
	seen := map[AWSChange]bool{}
	for _, e := range b.events {
		l := e.labels
		c := AWSChange{Time: e.t, Site: l["site"], Segment: l["segment"], From: fmtState(e.from), To: fmtState(e.to)}
		if e.from == e.to {
			c.From, c.To = "flapped", fmtState(e.to)
		}
		switch e.metric {
		case metricBGP:
			c.Resource = fmt.Sprintf("BGP peer %s (%s %s) on %s", l["bgp_peer_id"], l["address_family"], l["peer_address"], l["vif_id"])
		case metricVIF:
			c.Resource = fmt.Sprintf("VIF %s (%s)", l["vif_id"], l["vif_name"])
		case metricConn:
			c.Resource = fmt.Sprintf("connection %s (%s)", l["connection_id"], l["connection_name"])
		case metricMACsec:
			c.Resource = fmt.Sprintf("MACsec on connection %s", l["connection_id"])
			c.Site = b.conn[l["connection_id"]]
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// breaches finds the runs of bad minutes and the AWS changes in each: at
// either end site, in the pair's segment (or connection-wide), from the
// minute the window starts to the minute after it ends (recovery).
func (b *builder) breaches(p *Pair, changes []AWSChange) []*Breach {
	var out []*Breach
	awsPath := b.o.SLA.AWSPathSet()[p.Path]
	for i := 0; i < len(p.status); {
		if p.status[i] < stUnreachable { // no data, good, unresolved
			i++
			continue
		}
		j := i
		seen := map[byte]bool{}
		for j < len(p.status) && p.status[j] >= stUnreachable {
			seen[p.status[j]] = true
			j++
		}
		br := &Breach{
			Start: b.o.From.Add(time.Duration(i) * b.o.Step), End: b.o.From.Add(time.Duration(j) * b.o.Step),
			Minutes: j - i, AWSChanges: []AWSChange{}, Causes: []string{},
		}
		br.DurationSeconds = br.End.Sub(br.Start).Seconds()
		for _, st := range []byte{stUnreachable, stLoss, stLatency} {
			if seen[st] {
				if br.Cause == "" {
					br.Cause = causeName[st]
				}
				br.Causes = append(br.Causes, causeName[st])
			}
		}
		if awsPath {
			for _, c := range changes {
				if c.Time.Before(br.Start) || c.Time.After(br.End.Add(b.o.Step)) {
					continue
				}
				if c.Site != p.Source && c.Site != p.Target || c.Segment != "" && c.Segment != p.Segment {
					continue
				}
				br.AWSChanges = append(br.AWSChanges, c)
			}
		}
		br.AWSChanged = len(br.AWSChanges) > 0
		out = append(out, br)
		i = j
	}
	if out == nil {
		out = []*Breach{}
	}
	return out
}

// compare sets each pair's sitelink path against its mpls path, per day.
func (b *builder) compare() []*Comparison {
	out := []*Comparison{}
	for _, s := range b.rep.Pairs {
		if s.Path != "sitelink" {
			continue
		}
		m := b.pairs[pairKey{s.Source, s.Target, "mpls", s.Segment}]
		if m == nil {
			continue
		}
		c := &Comparison{
			Source: s.Source, Target: s.Target, Segment: s.Segment,
			SitelinkMeanSeconds: s.RTT.Mean, MPLSMeanSeconds: m.RTT.Mean,
		}
		c.DiffPercent = diffPct(c.SitelinkMeanSeconds, c.MPLSMeanSeconds)
		c.Better = better(c.SitelinkMeanSeconds, c.MPLSMeanSeconds)
		for i := range s.Days {
			d := &CompareDay{Date: s.Days[i].Date, SitelinkMeanSeconds: s.Days[i].RTT.Mean, MPLSMeanSeconds: m.Days[i].RTT.Mean}
			d.DiffPercent = diffPct(d.SitelinkMeanSeconds, d.MPLSMeanSeconds)
			d.Better = better(d.SitelinkMeanSeconds, d.MPLSMeanSeconds)
			switch d.Better {
			case "sitelink":
				c.DaysSitelinkBetter++
			case "mpls":
				c.DaysMPLSBetter++
			}
			c.Days = append(c.Days, d)
		}
		out = append(out, c)
	}
	return out
}

func diffPct(s, m Num) Num {
	if !s.Valid() || !m.Valid() || m == 0 {
		return nan()
	}
	return Num(100 * (float64(s) - float64(m)) / float64(m))
}
