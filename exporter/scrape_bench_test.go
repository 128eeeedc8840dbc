package exporter

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe"
)

func newLoadedMetrics(b *testing.B, n int) (*prometheus.Registry, *Metrics) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, zap.NewNop())
	for i := 0; i < n; i++ {
		s := &config.ProbeSpec{SourceSite: "us-east", TargetSite: "eu-frankfurt", Target: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255),
			Path: "sitelink", Segment: "prod", Protocol: "icmp"}
		r := m.Add(s)
		for k := 0; k < 20; k++ {
			r.Sent()
			r.Succeeded(probe.Probe{}, time.Duration(70+k)*time.Millisecond)
		}
	}
	return reg, m
}

func BenchmarkScrape10k(b *testing.B) {
	reg, m := newLoadedMetrics(b, 10000)
	srv := NewServer(reg, m, zap.NewNop(), nil, ServerOptions{Reload: func() error { return nil }, Ready: func() (bool, string) { return true, "" }})
	hs := httptest.NewServer(srv.Mux)
	defer hs.Close()
	for _, tc := range []struct{ name, accept, encoding string }{
		{"text", "text/plain;version=0.0.4", ""},
		{"text-gzip", "text/plain;version=0.0.4", "gzip"},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", ""},
		// What Prometheus asks for without native histograms.
		{"openmetrics", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var size int64
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest("GET", hs.URL+"/metrics", nil)
				req.Header.Set("Accept", tc.accept)
				if tc.encoding != "" {
					req.Header.Set("Accept-Encoding", tc.encoding)
				}
				resp, err := hs.Client().Transport.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				size, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			b.ReportMetric(float64(size)/(1<<20), "MiB/scrape")
		})
	}
}

func BenchmarkGather10k(b *testing.B) {
	reg, _ := newLoadedMetrics(b, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
