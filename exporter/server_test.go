package exporter

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"go.uber.org/zap"
)

// POST /-/reload needs --web.enable-lifecycle, as in Prometheus; /-/ready
// says why the agent is not ready.
func TestLifecycleEndpoints(t *testing.T) {
	reloads := 0
	ready, why := false, "2 of 5 jobs not running"
	opts := ServerOptions{Reload: func() error { reloads++; return errors.New("bad file") }, Ready: func() (bool, string) { return ready, why }}
	for _, lifecycle := range []bool{false, true} {
		opts.Lifecycle = lifecycle
		reg := prometheus.NewRegistry()
		srv := NewServer(reg, NewMetrics(reg, zap.NewNop()), zap.NewNop(), nil, opts)
		rec := httptest.NewRecorder()
		srv.Mux.ServeHTTP(rec, httptest.NewRequest("POST", "/-/reload", nil))
		want := http.StatusForbidden
		if lifecycle {
			want = http.StatusInternalServerError
		}
		if rec.Code != want || (!lifecycle && !strings.Contains(rec.Body.String(), "--web.enable-lifecycle")) {
			t.Errorf("lifecycle %v: POST /-/reload answered %d %q, want %d", lifecycle, rec.Code, rec.Body, want)
		}
		rec = httptest.NewRecorder()
		srv.Mux.ServeHTTP(rec, httptest.NewRequest("GET", "/-/reload", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("GET /-/reload answered %d", rec.Code)
		}
		rec = httptest.NewRecorder()
		srv.Mux.ServeHTTP(rec, httptest.NewRequest("GET", "/-/ready", nil))
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), why) {
			t.Errorf("/-/ready answered %d %q", rec.Code, rec.Body)
		}
	}
	if reloads != 1 {
		t.Errorf("reload ran %d times, want once (only with the lifecycle API on)", reloads)
	}
}

// /metrics answers GET and HEAD only, and speaks OpenMetrics to a scraper
// that asks for it (with # EOF and the per-target families).
func TestMetricsMethodsAndOpenMetrics(t *testing.T) {
	m, hs := fixture(t)
	spec := &config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: "10.0.0.1", Path: "p", Segment: "s", Protocol: "icmp"}
	r := m.Add(spec)
	r.Sent()
	r.Succeeded(probe.Probe{}, 3*time.Millisecond)
	req, _ := http.NewRequest("FOO", hs.URL+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("FOO /metrics: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// What Prometheus asks for when it does not scrape protobuf.
	resp, body := get(t, hs.URL+"/metrics", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	ct := resp.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/openmetrics-text") || !strings.HasSuffix(strings.TrimSpace(string(body)), "# EOF") ||
		!strings.Contains(string(body), `probed_rtt_seconds_count{source_site="a",target_site="b",target="10.0.0.1",path="p",segment="s",protocol="icmp",port=""} 1`) {
		t.Errorf("OpenMetrics answer: %s\n%s", ct, body)
	}
	// Prometheus' own OpenMetrics parser reads all of it.
	p := textparse.NewOpenMetricsParser(body, labels.NewSymbolTable())
	samples := 0
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("OpenMetrics parse error after %d samples: %v\n%s", samples, err, body)
		}
		if e == textparse.EntrySeries {
			samples++
		}
	}
	if samples < 20 {
		t.Errorf("parsed %d samples", samples)
	}
}
