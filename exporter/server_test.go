package exporter

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
