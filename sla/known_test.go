package sla

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/sla/slatest"
)

// TestPairWithoutSamplesShowsAsNoData: an agent down for the whole period
// leaves its pair without a single sample in it. The pair was probed
// before, so it is listed, as no data, in every format, not dropped.
// Real promtool blocks served by a real Prometheus.
func TestPairWithoutSamplesShowsAsNoData(t *testing.T) {
	promtool := slatest.RequireTool(t, "promtool")
	dir := t.TempDir()
	from := time.Date(2026, 10, 5, 0, 0, 0, 0, time.UTC) // the period: 2 h from here
	var b strings.Builder
	up := `{source_site="us-east",target_site="ap-tokyo",target="10.77.4.1",path="sitelink",segment="prod",protocol="icmp"}`
	down := `{source_site="ap-sydney",target_site="us-east",target="10.77.1.1",path="mpls",segment="dev",protocol="icmp"}`
	// us-east → ap-tokyo: samples every 15 s from 3 h before the period
	// to its end. ap-sydney → us-east: only until 1 h before the period.
	write := func(labels string, start, end time.Time) {
		type series struct {
			name string
			v    func(i int) float64
		}
		for _, s := range []series{
			{"probed_probes_sent_total", func(i int) float64 { return float64(15 * i) }},
			{"probed_probes_lost_total", func(i int) float64 { return 0 }},
			{`probed_rtt_seconds_bucket{le="0.1",`, func(i int) float64 { return 0 }},
			{`probed_rtt_seconds_bucket{le="0.2",`, func(i int) float64 { return float64(15 * i) }},
			{`probed_rtt_seconds_bucket{le="+Inf",`, func(i int) float64 { return float64(15 * i) }},
			{"probed_rtt_seconds_count", func(i int) float64 { return float64(15 * i) }},
			{"probed_rtt_seconds_sum", func(i int) float64 { return float64(15*i) * 0.15 }},
		} {
			name, l := s.name, labels
			if strings.HasSuffix(name, ",") {
				name, l = strings.TrimSuffix(name, ","), ","+labels[1:]
			}
			for i, at := 0, start; !at.After(end); i, at = i+1, at.Add(15*time.Second) {
				fmt.Fprintf(&b, "%s%s %g %d\n", name, l, s.v(i), at.Unix())
			}
		}
	}
	write(up, from.Add(-3*time.Hour), from.Add(2*time.Hour))
	write(down, from.Add(-3*time.Hour), from.Add(-time.Hour))
	b.WriteString("# EOF\n")
	om := filepath.Join(dir, "data.om")
	if err := os.WriteFile(om, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	blocks := filepath.Join(dir, "blocks")
	if err := slatest.CreateBlocks(promtool, []string{om}, blocks); err != nil {
		t.Fatal(err)
	}
	prom := slatest.StartPrometheus(t, blocks, "", nil)
	c, err := NewClient(prom.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Build(context.Background(), c, Options{From: from, To: from.Add(2 * time.Hour), Chunk: time.Hour,
		Now: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range rep.Pairs {
		got = append(got, fmt.Sprintf("%s %s good=%d no_data=%d total=%d", p.Name(), p.Status, p.Minutes.Good, p.Minutes.NoData, p.Minutes.Total))
	}
	want := []string{
		"ap-sydney → us-east mpls/dev no data good=0 no_data=120 total=120",
		"us-east → ap-tokyo sitelink/prod met good=120 no_data=0 total=120",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("pairs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, format := range Formats {
		var out bytes.Buffer
		if err := Render(&out, rep, format); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if !strings.Contains(out.String(), "ap-sydney") {
			t.Errorf("%s: the pair without samples is not in the report", format)
		}
		if format == "json" {
			var j struct {
				Notes []string `json:"notes"`
				Pairs []struct {
					Status       string   `json:"status"`
					Availability *float64 `json:"availability_percent"`
				} `json:"pairs"`
			}
			if err := json.Unmarshal(out.Bytes(), &j); err != nil {
				t.Fatal(err)
			}
			if j.Notes == nil || len(j.Pairs) != 2 || j.Pairs[0].Status != "no data" || j.Pairs[0].Availability != nil {
				t.Errorf("json: notes %v (want [] not null), pairs %+v", j.Notes, j.Pairs)
			}
			if bytes.Contains(out.Bytes(), []byte(`"notes": null`)) {
				t.Error(`json: "notes": null`)
			}
		}
	}
}

func TestValidateMatch(t *testing.T) {
	for _, ok := range []string{"", `source_site="us-east"`, `source_site="us-east",path=~"sitelink|mpls"`, `segment!="dev"`} {
		if err := ValidateMatch(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{`source_site=us-east`, `source_site="us-east`, `a="b"} or vector(1) or {a="b"`, `path=~"("`, `{a="b"}`} {
		if err := ValidateMatch(bad); err == nil || !strings.Contains(err.Error(), "--query.match") {
			t.Errorf("%q: %v, want an error naming --query.match", bad, err)
		}
	}
}
