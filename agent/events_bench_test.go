package agent

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/events"
	"github.com/probed/probed/exporter"
)

// fillJournal writes n events of the reference mesh's mix (us-east's
// journal: probe transitions over 6 sites × 6 targets, path and AWS
// changes, a few reloads) over span, ending at end.
func fillJournal(tb testing.TB, dir string, n int, end time.Time, span time.Duration) events.Stats {
	tb.Helper()
	j, err := events.Open(events.Options{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	defer j.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	sites := []string{"us-central", "us-west", "ap-tokyo", "ap-singapore", "ap-sydney", "eu-frankfurt"}
	step := span / time.Duration(n)
	for i := range n {
		at := end.Add(-span + time.Duration(i)*step)
		si := rng.IntN(len(sites))
		path, prefix := "sitelink", "10.77"
		if rng.IntN(2) == 1 {
			path, prefix = "mpls", "10.78"
		}
		l := events.Probe("us-east", sites[si], fmt.Sprintf("%s.%d.1", prefix, si+2), path, "prod", "icmp", "")
		aws := events.Labels{Site: "us-east", Segment: "prod", Region: "us-east-1", VIFID: "dxvif-fp1k7x2q", BGPPeerID: "dxpeer-fp14k7x2q"}
		var e events.Event
		switch r := rng.IntN(100); {
		case r < 20:
			e = events.NewTargetDown(at, l, 3)
		case r < 35:
			e = events.NewTargetUp(at, l, 95*time.Second)
		case r < 50:
			e = events.NewLossStarted(at, l, 3, 20)
		case r < 62:
			e = events.NewLossEnded(at, l, at.Add(-time.Minute), 7, 60)
		case r < 72:
			e = events.NewLatencyShift(at, l, 71*time.Millisecond, 93*time.Millisecond, at.Add(90*time.Second))
		case r < 85:
			e = events.NewPathChanged(at, l, []string{"10.90.17.1", "10.90.17.5", l.Target}, []string{"10.90.17.1", "10.90.17.9", "10.90.17.2", l.Target})
		case r < 97:
			e = events.NewBGPPeerChanged(at, aws, "169.254.100.1/30", "up", "down")
		default:
			e = events.NewConfigReloaded(at, "us-east", []string{"icmp us-east → ap-tokyo " + l.Target + " (sitelink/prod)"}, nil, nil)
		}
		j.Emit(e)
	}
	return j.Stats()
}

// BenchmarkEventsAPIOnAgent measures GET /api/v1/events of a running
// agent whose journal holds 100,000 events (30 days), over HTTP through the
// agent's own server, as the console and `probed sla` ask.
func BenchmarkEventsAPIOnAgent(b *testing.B) {
	dir := b.TempDir()
	st := fillJournal(b, filepath.Join(dir, "events"), 100_000, time.Now(), 30*24*time.Hour)
	mesh := filepath.Join(b.TempDir(), "mesh.yaml")
	if err := os.WriteFile(mesh, []byte("site: us-east\nsites:\n  - name: us-east\n    targets: []\n  - name: ap-tokyo\n    targets: [{address: 127.0.0.1, icmp: false, tcp_ports: [9]}]\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a := New(Options{ConfigFile: mesh, Registry: reg, Log: zap.NewNop(), Storage: StorageOptions{Path: dir}})
	srv := exporter.NewServer(reg, a.Metrics, zap.NewNop(), nil, exporter.ServerOptions{Ready: a.Ready})
	a.Mount(srv.Mux)
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Load(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done; a.Close() }()
	hs := httptest.NewServer(srv.Mux)
	defer hs.Close()
	for _, c := range []struct{ name, q string }{
		{"newest100", ""},
		{"newest100_no_related", "related=false"},
		{"pair_last_6h", "source_site=us-east&target_site=ap-tokyo&since=6h"},
		{"kind_and_site_30d_limit1000", "kind=latency_shift&target_site=ap-tokyo&limit=1000"},
		{"kind_3pct_limit10", "kind=config_reloaded&limit=10"},
		{"absent_kind_full_scan", "kind=dscp_remarked&limit=10"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				resp, err := http.Get(hs.URL + "/api/v1/events?" + c.q)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%d %s", resp.StatusCode, body)
				}
				size = len(body)
			}
			b.ReportMetric(float64(size), "resp_bytes")
		})
	}
	b.Logf("%d events in %d segments, %d bytes (%.0f bytes per event)", st.Events, st.Segments, st.Bytes, float64(st.Bytes)/float64(st.Events))
}
