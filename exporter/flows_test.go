package exporter

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/ecmp"
)

// The flow window slides by buckets of the probes' send times: outcomes
// older than the window drop out, probes sent before the window started
// over (other settings) never enter it, totals keep everything.
func TestFlowWindow(t *testing.T) {
	spec := &config.ProbeSpec{Flows: 2, Interval: time.Second}
	// 40 probes × 2 flows × 1 s × 16/15 = 85.3 s, whole seconds: 86 s.
	if w := newFlowStats(spec, 16*time.Second).window; w != 86*time.Second {
		t.Fatalf("window %v, want 86s", w)
	}
	f := newFlowStats(spec, 48*time.Second) // shorter than 40 probes per flow
	if f.window != 86*time.Second {
		t.Fatalf("window %v, want 86s", f.window)
	}
	f = newFlowStats(spec, 96*time.Second)
	if f.window != 96*time.Second || f.width != int64(6*time.Second) {
		t.Fatalf("window %v, bucket %v", f.window, time.Duration(f.width))
	}
	base := time.Unix(0, f.since).Add(time.Second)
	for i := range 100 {
		at := base.Add(time.Duration(i) * time.Second)
		f.add(probe.Probe{Sent: at, Flow: i % 2}, time.Duration(10+i%2)*time.Millisecond, i%2 == 1 && i%4 == 1)
	}
	now := base.Add(99 * time.Second)
	w := f.sum(now, 2, nil)
	// The window ends in the bucket of now and holds 16 buckets: the
	// probes from the start of the oldest bucket on.
	first := (now.UnixNano()/f.width - flowBuckets + 1) * f.width
	var want [2]flowWin
	for i := range 100 {
		at := base.Add(time.Duration(i) * time.Second)
		if at.UnixNano() < first {
			continue
		}
		want[i%2].sent++
		if i%2 == 1 && i%4 == 1 {
			want[i%2].lost++
		}
	}
	if w[0].sent != want[0].sent || w[1].sent != want[1].sent || w[0].lost != 0 || w[1].lost != want[1].lost {
		t.Fatalf("window %+v, want %+v", w, want)
	}
	if w[0].rttMin != 10000 || w[0].rttSum != 10000*w[0].rtts || w[1].rtts != w[1].sent-w[1].lost || w[1].rttMin != 11000 {
		t.Errorf("RTTs: %+v", w)
	}
	if f.total[0].sent != 50 || f.total[1].sent != 50 || f.total[1].lost != 25 {
		t.Errorf("totals %+v", f.total)
	}
	// Nothing of an hour ago counts; a probe sent before the window
	// started over is in the totals only.
	f.add(probe.Probe{Sent: base.Add(-time.Hour), Flow: 0}, time.Millisecond, false)
	if w2 := f.sum(now, 2, nil); w2[0] != w[0] || f.total[0].sent != 51 {
		t.Errorf("an old probe entered the window: %+v", w2[0])
	}
	later := f.sum(now.Add(f.window), 2, nil)
	if later[0].sent != 0 || later[1].sent != 0 {
		t.Errorf("a window later: %+v", later)
	}
}

// A target of 8 flows whose flows 1 and 5 lose a third of their probes:
// the test names them; with the member paths of a round the suspect hop
// is exported, and /api/v1/flows has the detail; flow_series adds the
// per-flow series; a target with one flow has none of it.
func TestFlowsExported(t *testing.T) {
	m, hs := fixture(t)
	spec := &config.ProbeSpec{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.77.7.1", Path: "sitelink", Segment: "prod",
		Protocol: "icmp", Flows: 8, Interval: time.Second}
	r := m.Add(spec).(*recorder)
	ids := []uint16{100, 101, 102, 103, 104, 105, 106, 107}
	r.SetFlows(spec, ids)
	plain := m.Add(&config.ProbeSpec{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: "10.77.7.2", Protocol: "icmp", Flows: 1})
	plain.Sent()
	plain.Succeeded(probe.Probe{}, time.Millisecond)
	start := time.Now()
	for i := range 8 * 45 {
		p := probe.Probe{Sent: start.Add(time.Duration(i) * time.Millisecond), Flow: i % 8}
		r.Sent()
		if (p.Flow == 1 || p.Flow == 5) && i%3 == 0 {
			r.Failed(p, probe.ReasonTimeout)
			continue
		}
		r.Succeeded(p, time.Duration(40+p.Flow)*time.Millisecond)
	}
	v := r.EvaluateFlows(start.Add(time.Second))
	if !v.Concentrated || !slices.Equal(v.Lossy, []int{1, 5}) {
		t.Fatalf("verdict %+v", v)
	}
	a := netip.MustParseAddr
	hops := func(mid string) []netip.Addr { return []netip.Addr{a("10.90.17.1"), a(mid), a("10.77.7.1")} }
	r.MemberPaths(probe.MemberPathReport{At: start, Traced: 8, Paths: ecmp.GroupPaths([]ecmp.Trace{
		{Flow: 0, Hops: hops("10.90.17.10"), Reached: true}, {Flow: 1, Hops: hops("10.90.17.12"), Reached: true},
		{Flow: 2, Hops: hops("10.90.17.10"), Reached: true}, {Flow: 3, Hops: hops("10.90.17.11"), Reached: true},
		{Flow: 4, Hops: hops("10.90.17.11"), Reached: true}, {Flow: 5, Hops: hops("10.90.17.12"), Reached: true},
		{Flow: 6, Hops: hops("10.90.17.13"), Reached: true}, {Flow: 7, Hops: []netip.Addr{{}, {}, {}}},
	})})

	_, body := get(t, hs.URL+"/metrics", "")
	parser := expfmt.NewTextParser(model.LegacyValidation)
	if _, err := parser.TextToMetricFamilies(bytes.NewReader(body)); err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, body)
	}
	lbl := `{source_site="us-east",target_site="eu-frankfurt",target="10.77.7.1",path="sitelink",segment="prod",protocol="icmp",port=""`
	for _, want := range []string{
		"probed_flows" + lbl + "} 8",
		"probed_flow_member_paths" + lbl + "} 4",
		"probed_flows_lossy" + lbl + "} 2",
		"probed_flow_worst_loss_ratio" + lbl + "} 0.3333333333333333",
		"probed_flow_suspect_hop_info" + lbl + `,hop="2",address="10.90.17.12",previous="10.90.17.1"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	if strings.Contains(string(body), `probed_flows{source_site="us-east",target_site="eu-frankfurt",target="10.77.7.2"`) ||
		strings.Contains(string(body), "probed_flow_probes_sent_total") {
		t.Errorf("flow series of a one-flow target, or per-flow series nobody asked for:\n%s", body)
	}

	// The protobuf exposition has the same families.
	_, pb := get(t, hs.URL+"/metrics", `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited`)
	got := map[string]*dto.MetricFamily{}
	dec := expfmt.NewDecoder(bytes.NewReader(pb), expfmt.NewFormat(expfmt.TypeProtoDelim))
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			break
		}
		got[mf.GetName()] = &mf
	}
	for name, want := range map[string]float64{"probed_flows": 8, "probed_flow_member_paths": 4, "probed_flows_lossy": 2, "probed_flow_suspect_hop_info": 1} {
		mf := got[name]
		if mf == nil || len(mf.Metric) != 1 || mf.Metric[0].GetGauge().GetValue() != want {
			t.Errorf("protobuf %s = %v, want one series of %v", name, mf, want)
		}
	}

	// The JSON API (the agent mounts it).
	rec := httptest.NewRecorder()
	m.FlowsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/flows", nil))
	var doc FlowsDoc
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || rec.Code != 200 {
		t.Fatalf("GET /api/v1/flows: %d %v\n%s", rec.Code, err, rec.Body)
	}
	if len(doc.Targets) != 1 {
		t.Fatalf("%d targets in the flows document", len(doc.Targets))
	}
	ft := doc.Targets[0]
	if ft.Flows != 8 || !ft.Concentrated || !slices.Equal(ft.LossyFlows, []int{1, 5}) || len(ft.MemberPaths) != 4 ||
		!slices.Equal(ft.AmbiguousFlows, []int{7}) || ft.Evaluations != 1 || ft.Flagged != 1 {
		t.Fatalf("flows document %+v", ft)
	}
	for _, mp := range ft.MemberPaths {
		lossy := mp.Hops[1] == "10.90.17.12"
		if mp.Lossy != lossy || (mp.Suspect != nil) != lossy || lossy && (mp.Suspect.Hop != 2 || mp.Suspect.Previous != "10.90.17.1") {
			t.Errorf("member path %+v", mp)
		}
	}
	for _, d := range ft.FlowDetail {
		if d.ICMPID == nil || *d.ICMPID != ids[d.Flow] || d.SourcePort != nil || d.Sent != 45 || d.SentTotal != 45 {
			t.Errorf("flow %d: %+v", d.Flow, d)
		}
		if d.Lossy != (d.Flow == 1 || d.Flow == 5) || d.LossLow > d.LossRatio || d.LossHigh < d.LossRatio {
			t.Errorf("flow %d: lossy %v, loss %v in [%v, %v]", d.Flow, d.Lossy, d.LossRatio, d.LossLow, d.LossHigh)
		}
		if d.RTTMin == nil || *d.RTTMin != float64(40+d.Flow)/1000 || (d.Flow != 7) != (d.MemberPath != nil) {
			t.Errorf("flow %d: rtt min %v, member path %v", d.Flow, d.RTTMin, d.MemberPath)
		}
	}

	// The loss gone (out of the 10-minute window): no lossy flows, no
	// suspect; the paths stay.
	later := start.Add(11 * time.Minute)
	for i := range 8 * 400 {
		p := probe.Probe{Sent: later.Add(time.Duration(i) * time.Millisecond), Flow: i % 8}
		r.Sent()
		r.Succeeded(p, 40*time.Millisecond)
	}
	if v := r.EvaluateFlows(later.Add(4 * time.Second)); v.Concentrated {
		t.Fatalf("still concentrated: %+v", v)
	}
	_, body = get(t, hs.URL+"/metrics", "")
	if !strings.Contains(string(body), "probed_flows_lossy"+lbl+"} 0\n") || strings.Contains(string(body), "probed_flow_suspect_hop_info{") ||
		!strings.Contains(string(body), "probed_flow_member_paths"+lbl+"} 4\n") {
		t.Errorf("after the loss:\n%s", grep(string(body), "probed_flow"))
	}

	// flow_series: one series per flow and family.
	spec2 := *spec
	spec2.FlowSeries = true
	r.SetFlows(&spec2, ids)
	_, body = get(t, hs.URL+"/metrics", "")
	if !strings.Contains(string(body), "probed_flow_probes_sent_total"+lbl+`,flow="5"} 445`+"\n") ||
		!strings.Contains(string(body), "probed_flow_probes_lost_total"+lbl+`,flow="5"} 15`+"\n") ||
		!strings.Contains(string(body), "probed_flow_rtt_seconds"+lbl+`,flow="3"} `) {
		t.Errorf("per-flow series:\n%s", grep(string(body), "probed_flow_"))
	}
}

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
