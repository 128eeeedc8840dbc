package exporter

import (
	"bufio"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/probed/probed/probe"
)

// snapshot is one target's state copied under its lock, so every family of
// one scrape sees the same moment.
type snapshot struct {
	r            *recorder
	guard        bool
	sent, lost   uint64
	errs         [probe.NumReasons]uint64
	classic      [len(rttBucketsArr)]uint64
	count        uint64
	sum          float64
	zero         uint64   // native zero bucket (protobuf only)
	nlo          int      // index of nat[0]
	nat          []uint64 // native bucket counts, in the scrape's arena (protobuf only)
	jitter       float64
	haveJitter   bool
	ratio        float64
	haveRatio    bool
	up           int8
	resolved     int8
	violating    bool
	guardReplies uint64
	flow         flowSnap // targets with flows (flows.go)
}

// snapshot copies the recorder's state; with arena non-nil (protobuf) the
// native buckets too, appended to it, so they are of the same moment as
// the count and sum.
func (r *recorder) snapshot(s *snapshot, arena *[]uint64) {
	r.mu.Lock()
	s.r, s.guard = r, r.guard
	s.sent, s.lost, s.errs = r.sent, r.lost, r.errs
	s.classic, s.count, s.sum = r.hist.classic, r.hist.count, r.hist.sum
	s.nat = nil
	if arena != nil {
		start := len(*arena)
		*arena = append(*arena, r.hist.native.c...)
		s.zero, s.nlo, s.nat = r.hist.zero, r.hist.native.lo, (*arena)[start:len(*arena):len(*arena)]
	}
	s.jitter, s.haveJitter = r.jit.value, r.jit.have
	s.ratio, s.haveRatio = r.win.ratio()
	s.up, s.resolved = r.isUp, r.resolved
	s.violating, s.guardReplies = r.violating, r.guardReplies
	s.flow = flowSnap{}
	if r.flows != nil {
		r.flows.snap(&s.flow)
	}
	r.mu.Unlock()
}

// snapBuf is one scrape's reusable memory.
type snapBuf struct {
	s     []snapshot
	arena []uint64
}

var snapPool = sync.Pool{New: func() any { return new(snapBuf) }}

// snapshots copies every target's state; native says whether the native
// buckets are needed (protobuf). Put the buffer back into snapPool after use.
func (m *Metrics) snapshots(native bool) (*snapBuf, []snapshot) {
	recs := m.recorders()
	p := snapPool.Get().(*snapBuf)
	s := p.s[:0]
	if cap(s) < len(recs) {
		s = make([]snapshot, 0, len(recs))
	}
	s = s[:len(recs)]
	var arena *[]uint64
	if native {
		p.arena = p.arena[:0]
		arena = &p.arena
	}
	for i, r := range recs {
		r.snapshot(&s[i], arena)
	}
	if native {
		// The arena may have moved while growing: point every snapshot at
		// its final memory.
		off := 0
		for i := range s {
			n := len(s[i].nat)
			s[i].nat = p.arena[off : off+n : off+n]
			off += n
		}
	}
	p.s = s
	return p, s
}

// Family help texts, shared by the text and protobuf writers.
const (
	helpSent      = "Probes sent."
	helpLost      = "Probes the network lost: no valid reply within their timeout (decided at the deadline, or at an ICMP error). A TCP reset is an answer, not a loss (reason=\"refused\")."
	helpErrors    = "Failed probes by reason; every lost probe has exactly one reason. reason=\"refused\" counts TCP resets (port closed, path up: not lost); reason=\"resolve\" counts failed name resolutions (no probe sent)."
	helpRTT       = "Round-trip time of answered probes, from kernel timestamps (TCP: the kernel's handshake RTT)."
	helpJitter    = "RFC 3550 interarrival-jitter estimate over consecutive round-trip times."
	helpLoss      = "Share of the last probe.loss_window finished probes that were lost."
	helpResolved  = "Hostname targets: 1 while the name resolves, 0 while lookups fail (the agent probes the last address it had; a name that never resolved also has probed_target_up 0)."
	helpUp        = "1 after a reply (a TCP reset counts: the path answers), 0 after probe.down_after consecutive losses."
	helpViolation = "1 while a guard target (expect: unreachable) answers: traffic crosses a boundary that must hold."
	helpGuard     = "Replies received from guard targets (expect: unreachable)."
)

// writeText writes the per-target families in the Prometheus text format.
//
// With om set it writes OpenMetrics 1.0 instead: the same samples, counter
// families named without their _total suffix, and # EOF at the end — what
// Prometheus asks for when it does not scrape protobuf.
func writeText(w *bufio.Writer, snaps []snapshot, om bool) {
	var num []byte
	header := func(name, help, typ string) {
		if om && typ == "counter" {
			name = strings.TrimSuffix(name, "_total")
		}
		w.WriteString("# HELP ")
		w.WriteString(name)
		w.WriteByte(' ')
		w.WriteString(help)
		w.WriteString("\n# TYPE ")
		w.WriteString(name)
		w.WriteByte(' ')
		w.WriteString(typ)
		w.WriteByte('\n')
	}
	line := func(name, labels, extra string, v []byte) {
		w.WriteString(name)
		w.WriteString(labels)
		w.WriteString(extra)
		w.WriteString("} ")
		w.Write(v)
		w.WriteByte('\n')
	}
	u := func(v uint64) []byte { num = strconv.AppendUint(num[:0], v, 10); return num }
	f := func(v float64) []byte { num = appendFloat(num[:0], v); return num }

	header("probed_probes_sent_total", helpSent, "counter")
	for i := range snaps {
		if s := &snaps[i]; !s.guard {
			line("probed_probes_sent_total", s.r.labels, "", u(s.sent))
		}
	}
	header("probed_probes_lost_total", helpLost, "counter")
	for i := range snaps {
		if s := &snaps[i]; !s.guard {
			line("probed_probes_lost_total", s.r.labels, "", u(s.lost))
		}
	}
	header("probed_probe_errors_total", helpErrors, "counter")
	for i := range snaps {
		s := &snaps[i]
		for reason, n := range s.errs {
			if n > 0 {
				line("probed_probe_errors_total", s.r.labels, `,reason="`+probe.Reason(reason).String()+`"`, u(n))
			}
		}
	}
	header("probed_rtt_seconds", helpRTT, "histogram")
	for i := range snaps {
		s := &snaps[i]
		if s.guard {
			continue
		}
		var cum uint64
		for b, n := range s.classic {
			cum += n
			line("probed_rtt_seconds_bucket", s.r.labels, leLabels[b], u(cum))
		}
		line("probed_rtt_seconds_bucket", s.r.labels, `,le="+Inf"`, u(s.count))
		line("probed_rtt_seconds_sum", s.r.labels, "", f(s.sum))
		line("probed_rtt_seconds_count", s.r.labels, "", u(s.count))
	}
	header("probed_jitter_seconds", helpJitter, "gauge")
	for i := range snaps {
		if s := &snaps[i]; !s.guard && s.haveJitter {
			line("probed_jitter_seconds", s.r.labels, "", f(s.jitter))
		}
	}
	header("probed_loss_ratio", helpLoss, "gauge")
	for i := range snaps {
		if s := &snaps[i]; !s.guard && s.haveRatio {
			line("probed_loss_ratio", s.r.labels, "", f(s.ratio))
		}
	}
	header("probed_target_up", helpUp, "gauge")
	for i := range snaps {
		if s := &snaps[i]; !s.guard && s.up >= 0 {
			line("probed_target_up", s.r.labels, "", u(uint64(s.up)))
		}
	}
	header("probed_target_name_resolved", helpResolved, "gauge")
	for i := range snaps {
		if s := &snaps[i]; s.resolved >= 0 {
			line("probed_target_name_resolved", s.r.labels, "", u(uint64(s.resolved)))
		}
	}
	header("probed_segmentation_violation", helpViolation, "gauge")
	for i := range snaps {
		if s := &snaps[i]; s.guard {
			line("probed_segmentation_violation", s.r.labels, "", u(b2u(s.violating)))
		}
	}
	header("probed_segmentation_replies_total", helpGuard, "counter")
	for i := range snaps {
		if s := &snaps[i]; s.guard {
			line("probed_segmentation_replies_total", s.r.labels, "", u(s.guardReplies))
		}
	}
	writeFlowText(header, line, u, f, snaps)
	if om {
		w.WriteString("# EOF\n")
	}
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// leLabels are the rendered le="…" label of each classic bucket.
var leLabels = func() []string {
	out := make([]string, len(rttBucketsArr))
	for i, b := range rttBucketsArr {
		out[i] = `,le="` + strconv.FormatFloat(b, 'g', -1, 64) + `"`
	}
	return out
}()

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// protoFamilies builds the per-target families as protobuf messages,
// including native-histogram buckets for servers that scrape them.
func protoFamilies(snaps []snapshot) []*dto.MetricFamily {
	fam := func(name, help string, t dto.MetricType) *dto.MetricFamily {
		return &dto.MetricFamily{Name: proto.String(name), Help: proto.String(help), Type: t.Enum()}
	}
	sent := fam("probed_probes_sent_total", helpSent, dto.MetricType_COUNTER)
	lost := fam("probed_probes_lost_total", helpLost, dto.MetricType_COUNTER)
	errs := fam("probed_probe_errors_total", helpErrors, dto.MetricType_COUNTER)
	rtt := fam("probed_rtt_seconds", helpRTT, dto.MetricType_HISTOGRAM)
	jit := fam("probed_jitter_seconds", helpJitter, dto.MetricType_GAUGE)
	loss := fam("probed_loss_ratio", helpLoss, dto.MetricType_GAUGE)
	up := fam("probed_target_up", helpUp, dto.MetricType_GAUGE)
	res := fam("probed_target_name_resolved", helpResolved, dto.MetricType_GAUGE)
	vio := fam("probed_segmentation_violation", helpViolation, dto.MetricType_GAUGE)
	grd := fam("probed_segmentation_replies_total", helpGuard, dto.MetricType_COUNTER)
	counter := func(pairs []*dto.LabelPair, v uint64) *dto.Metric {
		return &dto.Metric{Label: pairs, Counter: &dto.Counter{Value: proto.Float64(float64(v))}}
	}
	gauge := func(pairs []*dto.LabelPair, v float64) *dto.Metric {
		return &dto.Metric{Label: pairs, Gauge: &dto.Gauge{Value: proto.Float64(v)}}
	}
	for i := range snaps {
		s := &snaps[i]
		p := s.r.pairs
		if s.guard {
			vio.Metric = append(vio.Metric, gauge(p, float64(b2u(s.violating))))
			grd.Metric = append(grd.Metric, counter(p, s.guardReplies))
			continue
		}
		sent.Metric = append(sent.Metric, counter(p, s.sent))
		lost.Metric = append(lost.Metric, counter(p, s.lost))
		for reason, n := range s.errs {
			if n > 0 {
				lp := append(append([]*dto.LabelPair{}, p...), &dto.LabelPair{Name: proto.String("reason"), Value: proto.String(probe.Reason(reason).String())})
				errs.Metric = append(errs.Metric, counter(lp, n))
			}
		}
		rtt.Metric = append(rtt.Metric, &dto.Metric{Label: p, Histogram: histogramProto(s)})
		if s.haveJitter {
			jit.Metric = append(jit.Metric, gauge(p, s.jitter))
		}
		if s.haveRatio {
			loss.Metric = append(loss.Metric, gauge(p, s.ratio))
		}
		if s.resolved >= 0 {
			res.Metric = append(res.Metric, gauge(p, float64(s.resolved)))
		}
		if s.up >= 0 {
			up.Metric = append(up.Metric, gauge(p, float64(s.up)))
		}
	}
	var out []*dto.MetricFamily
	for _, f := range append([]*dto.MetricFamily{sent, lost, errs, rtt, jit, loss, up, res, vio, grd}, flowFamilies(snaps)...) {
		if len(f.Metric) > 0 {
			out = append(out, f)
		}
	}
	return out
}

func histogramProto(s *snapshot) *dto.Histogram {
	h := &dto.Histogram{
		SampleCount:   proto.Uint64(s.count),
		SampleSum:     proto.Float64(s.sum),
		Schema:        proto.Int32(nativeSchema),
		ZeroThreshold: proto.Float64(nativeZeroThreshold),
		ZeroCount:     proto.Uint64(s.zero),
	}
	var cum uint64
	for b, n := range s.classic {
		cum += n
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(rttBucketsArr[b]), CumulativeCount: proto.Uint64(cum)})
	}
	// Native buckets as spans of consecutive indexes with delta-encoded
	// counts; gaps of up to two empty buckets are sent as zeros inside the
	// span (cheaper than a new span, as client_golang does).
	var prev int64
	last := math.MinInt
	for i, n := range s.nat {
		if n == 0 {
			continue
		}
		idx := i + s.nlo
		if gap := idx - last - 1; last != math.MinInt && gap > 0 && gap <= 2 {
			sp := h.PositiveSpan[len(h.PositiveSpan)-1]
			for range gap {
				*sp.Length++
				h.PositiveDelta = append(h.PositiveDelta, -prev)
				prev = 0
			}
			last = idx - 1
		}
		if last == math.MinInt || idx != last+1 {
			off := int32(idx)
			if last != math.MinInt {
				off = int32(idx - last - 1)
			}
			h.PositiveSpan = append(h.PositiveSpan, &dto.BucketSpan{Offset: proto.Int32(off), Length: proto.Uint32(0)})
		}
		sp := h.PositiveSpan[len(h.PositiveSpan)-1]
		*sp.Length++
		h.PositiveDelta = append(h.PositiveDelta, int64(n)-prev)
		prev = int64(n)
		last = idx
	}
	if len(h.PositiveSpan) == 0 && s.count == 0 {
		// An empty native histogram still needs a span to be recognised
		// as native by the server.
		h.PositiveSpan = []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(0)}}
	}
	return h
}

// metricsFormats are the exposition formats served, by preference when the
// scraper accepts several: protobuf (native histograms), OpenMetrics, text.
var metricsFormats = []expfmt.Format{
	expfmt.NewFormat(expfmt.TypeProtoDelim),
	expfmt.FmtOpenMetrics_1_0_0,
	expfmt.FmtOpenMetrics_0_0_1,
	expfmt.NewFormat(expfmt.TypeTextPlain),
}

// metricsHandler serves the registry's families plus the per-target ones,
// in whichever format the scraper asks for.
func metricsHandler(reg *prometheus.Registry, m *Metrics, log *zap.Logger, procs *Procs) http.Handler {
	sem := make(chan struct{}, 2)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "use GET to scrape metrics", http.StatusMethodNotAllowed)
			return
		}
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		case <-r.Context().Done():
			return
		}
		defer procs.scrape()()
		families, err := reg.Gather()
		if err != nil {
			log.Warn("gathering metrics", zap.Error(err))
		}
		format := expfmt.NegotiateAccept(r.Header, metricsFormats...)
		// The per-target families come as protobuf structures for the
		// protobuf encoder, and are written by hand for the text formats
		// (ten times cheaper at 10,000 targets than through the encoder).
		protoOut := format.FormatType() == expfmt.TypeProtoDelim
		om := format.FormatType() == expfmt.TypeOpenMetrics
		w.Header().Set("Content-Type", string(format))
		var out io.Writer = w
		if gzipAccepted(r) {
			w.Header().Set("Content-Encoding", "gzip")
			gz := gzipPool.Get().(*gzip.Writer)
			gz.Reset(w)
			defer func() { _ = gz.Close(); gzipPool.Put(gz) }() // a scraper gone mid-answer is not ours to report
			out = gz
		}
		bw := bufio.NewWriterSize(out, 256<<10)
		defer func() { _ = bw.Flush() }()
		pool, snaps := m.snapshots(protoOut)
		defer snapPool.Put(pool)
		enc := expfmt.NewEncoder(bw, format)
		if protoOut {
			families = append(families, protoFamilies(snaps)...)
		}
		for _, f := range families {
			if err := enc.Encode(f); err != nil {
				log.Debug("writing metrics", zap.Error(err))
				return
			}
		}
		if !protoOut {
			writeText(bw, snaps, om) // OpenMetrics: writes the # EOF the encoder would
		}
	})
}

var gzipPool = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return w
}}

func gzipAccepted(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		if strings.TrimSpace(strings.SplitN(part, ";", 2)[0]) == "gzip" {
			return true
		}
	}
	return false
}

// Procs manages GOMAXPROCS for the agent. Its steady work — the scheduler
// and the reply readers — is a few goroutines waking every couple of
// milliseconds; a second P only adds cross-CPU wake-ups and idle spinning
// (measured at 10,000 targets: 0.18 cores with two Ps, 0.115 with one). A
// scrape is the one burst of work, so it gets a P of its own while it runs
// and never delays the probes.
type Procs struct {
	mu     sync.Mutex
	base   int // steady GOMAXPROCS; 0: leave the runtime alone
	active int
}

// NewProcs returns a manager that runs on base Ps and adds one per
// concurrent scrape (up to the CPUs available). base 0 disables it.
func NewProcs(base int) *Procs {
	p := &Procs{base: base}
	if base > 0 {
		runtime.GOMAXPROCS(base)
	}
	return p
}

// scrape raises GOMAXPROCS for one scrape; call the returned func when done.
func (p *Procs) scrape() func() {
	if p == nil || p.base == 0 || runtime.NumCPU() <= p.base {
		return func() {}
	}
	p.mu.Lock()
	p.active++
	runtime.GOMAXPROCS(min(p.base+p.active, runtime.NumCPU()))
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		p.active--
		runtime.GOMAXPROCS(min(p.base+p.active, runtime.NumCPU()))
		p.mu.Unlock()
	}
}
