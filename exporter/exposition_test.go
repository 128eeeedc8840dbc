package exporter

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe"
)

func fixture(t *testing.T) (*Metrics, *httptest.Server) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, zap.NewNop())
	m.SetPlan(&config.Plan{LossWindow: 4, DownAfter: 2})
	srv := NewServer(reg, m, zap.NewNop(), nil, ServerOptions{Reload: func() error { return nil }, Ready: func() (bool, string) { return true, "" }})
	hs := httptest.NewServer(srv.Mux)
	t.Cleanup(hs.Close)
	return m, hs
}

func get(t *testing.T, url, accept string) (*http.Response, []byte) {
	req, _ := http.NewRequest("GET", url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestTextExposition(t *testing.T) {
	m, hs := fixture(t)
	spec := &config.ProbeSpec{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.77.7.1", Path: "sitelink", Segment: "prod", Protocol: "tcp", Port: 443}
	r := m.Add(spec)
	for _, ms := range []int{80, 82, 81} {
		r.Sent()
		r.Succeeded(probe.Probe{}, time.Duration(ms)*time.Millisecond)
	}
	r.Sent()
	r.Failed(probe.Probe{}, probe.ReasonRefused)
	guard := m.Add(&config.ProbeSpec{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.77.7.99", Path: "sitelink", Segment: "dev", Protocol: "icmp", Guard: true})
	guard.Sent()
	guard.Succeeded(probe.Probe{}, time.Millisecond)

	_, body := get(t, hs.URL+"/metrics", "")
	// The text must parse as the Prometheus text format.
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, body)
	}
	lbl := `{source_site="us-east",target_site="eu-frankfurt",target="10.77.7.1",path="sitelink",segment="prod",protocol="tcp",port="443"`
	for _, want := range []string{
		"probed_probes_sent_total" + lbl + "} 4",
		// A reset is an answer: not lost, and the target is up.
		"probed_probes_lost_total" + lbl + "} 0",
		"probed_probe_errors_total" + lbl + `,reason="refused"} 1`,
		"probed_rtt_seconds_bucket" + lbl + `,le="0.075"} 0`,
		"probed_rtt_seconds_bucket" + lbl + `,le="0.1"} 3`,
		"probed_rtt_seconds_bucket" + lbl + `,le="+Inf"} 3`,
		"probed_rtt_seconds_count" + lbl + "} 3",
		"probed_loss_ratio" + lbl + "} 0",
		"probed_target_up" + lbl + "} 1",
		`probed_segmentation_violation{source_site="us-east",target_site="eu-frankfurt",target="10.77.7.99",path="sitelink",segment="dev",protocol="icmp",port=""} 1`,
		"probed_icmp_ignored_replies_total{reason=\"late\"} 0",
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	// RFC 3550 jitter after RTTs 80, 82, 81 ms: 2/16 ms, then += (1 - 0.125)/16 ms.
	j := fams["probed_jitter_seconds"].Metric[0].GetGauge().GetValue()
	if want := (0.002/16 + (0.001-0.002/16)/16); abs(j-want) > 1e-12 {
		t.Errorf("jitter %v, want %v", j, want)
	}
	// Guards stay out of loss, up and RTT.
	if strings.Contains(string(body), `probed_probes_sent_total{source_site="us-east",target_site="eu-frankfurt",target="10.77.7.99"`) ||
		strings.Contains(string(body), `probed_target_up{source_site="us-east",target_site="eu-frankfurt",target="10.77.7.99"`) {
		t.Error("guard target in loss/up series")
	}
	// Two losses in a row: down (down_after 2).
	for range 2 {
		r.Sent()
		r.Failed(probe.Probe{}, probe.ReasonTimeout)
	}
	_, body = get(t, hs.URL+"/metrics", "")
	if !strings.Contains(string(body), "probed_target_up"+lbl+"} 0\n") {
		t.Error("target not down after down_after losses")
	}
	// Removal: every series of the target disappears.
	m.Remove(spec, r)
	_, body = get(t, hs.URL+"/metrics", "")
	if strings.Contains(string(body), `target="10.77.7.1"`) {
		t.Error("removed target still exported")
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestProtobufHasNativeBuckets(t *testing.T) {
	m, hs := fixture(t)
	r := m.Add(&config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Path: "p", Segment: "s", Protocol: "icmp"})
	for _, ms := range []float64{1, 1, 1.0274, 2, 100} {
		r.Sent()
		r.Succeeded(probe.Probe{}, time.Duration(ms*float64(time.Millisecond)))
	}
	resp, body := get(t, hs.URL+"/metrics", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited")
	if !strings.Contains(resp.Header.Get("Content-Type"), "protobuf") {
		t.Fatalf("content type %s", resp.Header.Get("Content-Type"))
	}
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.NewFormat(expfmt.TypeProtoDelim))
	var h *dto.Histogram
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			break
		}
		if mf.GetName() == "probed_rtt_seconds" {
			h = mf.Metric[0].GetHistogram()
		}
	}
	if h == nil {
		t.Fatal("no probed_rtt_seconds in protobuf output")
	}
	if h.GetSchema() != 6 || h.GetSampleCount() != 5 || len(h.Bucket) != len(RTTBuckets) {
		t.Fatalf("histogram: schema %d count %d classic %d", h.GetSchema(), h.GetSampleCount(), len(h.Bucket))
	}
	// Decode the native buckets back: counts must add up and sit at the
	// right indexes (1 ms → index -637, 1.0274 ms → -635, 2 ms → -573,
	// 100 ms → -212: ceil(64·log2 v)); the one-bucket gap at -636 is a zero
	// inside the first span, not a span of its own.
	got := map[int]int64{}
	idx, di := 0, 0
	var count int64
	for si, sp := range h.PositiveSpan {
		if si == 0 {
			idx = int(sp.GetOffset())
		} else {
			idx += int(sp.GetOffset())
		}
		for k := 0; k < int(sp.GetLength()); k++ {
			count += h.PositiveDelta[di]
			got[idx] = count
			di++
			idx++
		}
	}
	want := map[int]int64{-637: 2, -636: 0, -635: 1, -573: 1, -212: 1}
	if len(h.PositiveSpan) != 3 {
		t.Errorf("%d spans, want 3: %v", len(h.PositiveSpan), h.PositiveSpan)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("native bucket %d = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// TestRefusedIsNotLoss: a TCP reset proves the path works (the port is
// closed): it counts as errors{reason="refused"} only — no loss, no lost
// probe, the target stays up — while timeouts still are loss.
func TestRefusedIsNotLoss(t *testing.T) {
	m, hs := fixture(t) // loss window 4, down_after 2
	r := m.Add(&config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Path: "p", Segment: "s", Protocol: "tcp", Port: 9})
	for range 10 {
		r.Sent()
		r.Failed(probe.Probe{}, probe.ReasonRefused)
	}
	_, body := get(t, hs.URL+"/metrics", "")
	lbl := `{source_site="a",target_site="b",target="10.0.0.1",path="p",segment="s",protocol="tcp",port="9"`
	for _, want := range []string{
		"probed_probes_sent_total" + lbl + "} 10",
		"probed_probes_lost_total" + lbl + "} 0",
		"probed_probe_errors_total" + lbl + `,reason="refused"} 10`,
		"probed_loss_ratio" + lbl + "} 0",
		"probed_target_up" + lbl + "} 1",
		"probed_rtt_seconds_count" + lbl + "} 0",
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	// A timeout, then a reset, then a timeout: never two losses in a row.
	for _, rs := range []probe.Reason{probe.ReasonTimeout, probe.ReasonRefused, probe.ReasonTimeout} {
		r.Sent()
		r.Failed(probe.Probe{}, rs)
	}
	_, body = get(t, hs.URL+"/metrics", "")
	for _, want := range []string{
		"probed_probes_lost_total" + lbl + "} 2",
		"probed_loss_ratio" + lbl + "} 0.5",
		"probed_target_up" + lbl + "} 1",
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
}

// TestNativeWindowGrows: RTTs far apart (30 ns to 32 s, and beyond) all
// land in their buckets while the kept window widens.
func TestNativeWindowGrows(t *testing.T) {
	var h rttHistogram
	vals := []time.Duration{70 * time.Millisecond, 71 * time.Millisecond, 5 * time.Microsecond, 3 * time.Second, time.Nanosecond, time.Hour, 70 * time.Millisecond}
	for _, v := range vals {
		h.observe(v)
	}
	got := map[int]uint64{}
	for i, n := range h.native.c {
		if n > 0 {
			got[h.native.lo+i] = n
		}
	}
	want := map[int]uint64{}
	for _, v := range vals {
		want[nativeIndex(v.Seconds())]++
	}
	if len(got) != len(want) {
		t.Fatalf("buckets %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("bucket %d = %d, want %d", k, got[k], v)
		}
	}
	if want[nativeMinIndex] != 1 || want[nativeMaxIndex] != 1 {
		t.Errorf("1 ns and 1 h not clamped to the extreme buckets: %v", want)
	}
	if n := len(h.native.c); n > nativeMaxIndex-nativeMinIndex+1 {
		t.Errorf("window of %d buckets exceeds the schema's range", n)
	}
}

// BenchmarkRecorder is the exporter side of the per-probe path.
func BenchmarkRecorder(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry(), zap.NewNop())
	r := m.Add(&config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Protocol: "icmp"})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Sent()
		r.Succeeded(probe.Probe{}, time.Duration(70_000_000+i%1000))
	}
}

// BenchmarkRecorderFlows is the same for a target of 16 flows: the
// per-flow window adds one bucket cell per probe.
func BenchmarkRecorderFlows(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry(), zap.NewNop())
	r := m.Add(&config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Protocol: "icmp", Flows: 16, Interval: time.Second})
	sent := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Sent()
		r.Succeeded(probe.Probe{Sent: sent.Add(time.Duration(i) * time.Millisecond), Flow: i % 16}, time.Duration(70_000_000+i%1000))
	}
}
