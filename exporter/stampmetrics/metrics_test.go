package stampmetrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/stamp"
)

var spec = config.ProbeSpec{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.79.7.1",
	Path: "sitelink", Segment: "prod", Protocol: config.ProtoSTAMP, Port: 862}

const lbl = `path="sitelink",port="862",protocol="stamp",segment="prod",source_site="us-east",target="10.79.7.1",target_site="eu-frankfurt"`

// scrape renders what reg exposes in the text format.
func scrape(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

func expectLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, "\n"+l+"\n") {
			t.Errorf("missing line %q in:\n%s", l, out)
		}
	}
}

func TestSessionSeries(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	s := m.Session(&spec)
	s.Sent()
	s.Sent()
	s.Sent()
	s.Lost(1, 0)
	s.Reply(&stamp.Reply{RTT: 40 * time.Millisecond, Forward: 30 * time.Millisecond, Reverse: 10 * time.Millisecond,
		ForwardVariation: 2 * time.Millisecond, Synced: true,
		HasForwardDSCP: true, ForwardRemarked: true, HasReverseDSCP: true})
	s.Duplicate()

	out := scrape(t, reg)
	expectLines(t, out,
		`probed_stamp_lost_total{direction="forward",`+lbl+`} 1`,
		`probed_stamp_lost_total{direction="reverse",`+lbl+`} 0`,
		`probed_stamp_lost_total{direction="unknown",`+lbl+`} 0`,
		`probed_stamp_reflector_stateless{`+lbl+`} 0`,
		`probed_stamp_one_way_delay_seconds{direction="forward",`+lbl+`} 0.03`,
		`probed_stamp_one_way_delay_seconds{direction="reverse",`+lbl+`} 0.01`,
		`probed_stamp_one_way_delay_variation_seconds{direction="forward",`+lbl+`} 0.002`,
		`probed_stamp_dscp_remarked{direction="forward",`+lbl+`} 1`,
		`probed_stamp_dscp_remarked{direction="reverse",`+lbl+`} 0`,
		`probed_stamp_sent_total{`+lbl+`} 3`,
		`probed_stamp_duplicates_total{`+lbl+`} 1`,
		`probed_stamp_rtt_seconds_count{`+lbl+`} 1`,
		`probed_stamp_rtt_seconds_sum{`+lbl+`} 0.04`,
		`probed_stamp_clocks_synchronized{`+lbl+`} 1`,
	)

	// Clocks fall out of sync: the one-way delay series must go.
	s.Reply(&stamp.Reply{RTT: 40 * time.Millisecond, Forward: -3 * time.Second})
	out = scrape(t, reg)
	if strings.Contains(out, "probed_stamp_one_way_delay_seconds{") {
		t.Errorf("one-way delay exported while unsynchronised:\n%s", out)
	}
	expectLines(t, out, `probed_stamp_clocks_synchronized{`+lbl+`} 0`)

	// A stateless reflector: marked, and its losses have no direction.
	s.Reply(&stamp.Reply{RTT: 40 * time.Millisecond, Stateless: true})
	s.LostUnknownDirection(3)
	expectLines(t, scrape(t, reg),
		`probed_stamp_reflector_stateless{`+lbl+`} 1`,
		`probed_stamp_lost_total{direction="unknown",`+lbl+`} 3`,
		`probed_stamp_lost_total{direction="forward",`+lbl+`} 1`,
	)

	s.Error("send")
	m.Forget(&spec)
	if out := scrape(t, reg); strings.Contains(out, `target="10.79.7.1"`) {
		t.Errorf("series left after Forget:\n%s", out)
	}
}

func TestReflectorCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewReflectorCollector(func() string { return "us-east" }, func() stamp.ReflectorStats {
		return stamp.ReflectorStats{Reflected: 5, NotAllowed: 1000, Sessions: 2, IntegrityFailed: 1, SocketDrops: 60000}
	}))
	expectLines(t, scrape(t, reg),
		`probed_stamp_reflector_socket_drops_total{site="us-east"} 60000`,
		`probed_stamp_reflector_integrity_failures_total{site="us-east"} 1`,
		`probed_stamp_reflector_sessions{site="us-east"} 2`,
		`probed_stamp_reflector_packets_total{result="not_allowed",site="us-east"} 1000`,
		`probed_stamp_reflector_packets_total{result="reflected",site="us-east"} 5`,
		`probed_stamp_reflector_packets_total{result="rate_limited",site="us-east"} 0`,
	)
}

// BenchmarkReply is the per-reply cost of the metrics side (run with
// -benchmem: it must not allocate).
func BenchmarkReply(b *testing.B) {
	m := New(prometheus.NewRegistry())
	s := m.Session(&spec)
	r := &stamp.Reply{RTT: 40 * time.Millisecond, Forward: 30 * time.Millisecond, Reverse: 10 * time.Millisecond,
		Synced: true, HasForwardDSCP: true, HasReverseDSCP: true}
	b.ReportAllocs()
	for b.Loop() {
		s.Sent()
		s.Reply(r)
	}
}
