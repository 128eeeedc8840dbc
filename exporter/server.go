package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
)

// Server serves /metrics, the /-/ lifecycle endpoints and whatever features
// mount on Mux.
type Server struct {
	Mux    *http.ServeMux
	log    *zap.Logger
	ready  atomic.Bool
	reason atomic.Value // string: why not ready
	reload func() error
}

// NewServer builds the HTTP handlers. reload is called by POST /-/reload.
func NewServer(reg *prometheus.Registry, m *Metrics, log *zap.Logger, procs *Procs, reload func() error) *Server {
	s := &Server{Mux: http.NewServeMux(), log: log, reload: reload}
	s.reason.Store("starting")
	s.Mux.Handle("/metrics", metricsHandler(reg, m, log, procs))
	s.Mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "Healthy")
	})
	s.Mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "Not ready: "+s.reason.Load().(string), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	s.Mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			w.Header().Set("Allow", "POST, PUT")
			http.Error(w, "use POST to reload the configuration", http.StatusMethodNotAllowed)
			return
		}
		if err := s.reload(); err != nil {
			http.Error(w, "reload failed, the previous configuration stays active:\n"+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "Reloaded")
	})
	s.Mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><html><head><title>probed</title></head><body>
<h1>probed</h1><p>Synthetic network monitoring of the site mesh.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="-/healthy">/-/healthy</a></li><li><a href="-/ready">/-/ready</a></li><li><a href="paths">/paths</a></li></ul>
</body></html>`)
	})
	return s
}

// SetReady marks the agent ready (or not, with a reason).
func (s *Server) SetReady(ok bool, reason string) {
	s.reason.Store(reason)
	s.ready.Store(ok)
}

// Serve listens per the exporter-toolkit flags (addresses, TLS, basic auth)
// until ctx is done.
func (s *Server) Serve(ctx context.Context, flags *web.FlagConfig) error {
	srv := &http.Server{Handler: s.Mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe(srv, flags, slog.New(newSlogHandler(s.log))) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// AgentMetrics are the agent's own series: build, config reloads, targets.
type AgentMetrics struct {
	ReloadOK   prometheus.Gauge
	ReloadTime prometheus.Gauge
}

// NewAgentMetrics registers build info, reload status, the Go and process
// collectors, and a probed_targets gauge read from targets at scrape time.
func NewAgentMetrics(reg prometheus.Registerer, version string, targets func() map[string]int) *AgentMetrics {
	a := &AgentMetrics{
		ReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "probed_config_last_reload_successful", Help: "Whether the last configuration load or reload succeeded.",
		}),
		ReloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "probed_config_last_reload_success_timestamp_seconds", Help: "When the configuration was last loaded successfully.",
		}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "probed_build_info", Help: "Build information (value 1).",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, goVersion()).Set(1)
	reg.MustRegister(a.ReloadOK, a.ReloadTime, build, &targetsCollector{f: targets},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a
}

var targetsDesc = prometheus.NewDesc("probed_targets", "Probe specs being run, by protocol.", []string{"protocol"}, nil)

type targetsCollector struct{ f func() map[string]int }

func (c *targetsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- targetsDesc }
func (c *targetsCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.f()
	for _, p := range []string{"icmp", "tcp"} {
		ch <- prometheus.MustNewConstMetric(targetsDesc, prometheus.GaugeValue, float64(m[p]), p)
	}
}
