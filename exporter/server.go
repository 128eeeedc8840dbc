package exporter

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
)

// Server serves /metrics, the /-/ lifecycle endpoints and whatever the
// agent mounts on Mux.
type Server struct {
	Mux  *http.ServeMux
	log  *zap.Logger
	opts ServerOptions
}

// ServerOptions are the agent's hooks into the HTTP endpoints.
type ServerOptions struct {
	// Reload is called by POST /-/reload, which answers 403 unless
	// Lifecycle is set (--web.enable-lifecycle, as in Prometheus: anyone
	// who can reach the port could otherwise make the agent re-read its
	// configuration).
	Reload    func() error
	Lifecycle bool
	// Ready says whether /-/ready answers 200, and if not, why.
	Ready func() (bool, string)
	// OnShutdown is called when the server starts shutting down: it ends
	// long-lived responses (the console's live event stream), which the
	// shutdown would otherwise wait for.
	OnShutdown func()
}

// NewServer builds the HTTP handlers.
func NewServer(reg *prometheus.Registry, m *Metrics, log *zap.Logger, procs *Procs, o ServerOptions) *Server {
	s := &Server{Mux: http.NewServeMux(), log: log, opts: o}
	s.Mux.Handle("/metrics", metricsHandler(reg, m, log, procs))
	s.Mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "Healthy")
	})
	s.Mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if ok, why := o.Ready(); !ok {
			http.Error(w, "Not ready: "+why, http.StatusServiceUnavailable)
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
		if !o.Lifecycle {
			http.Error(w, "Lifecycle API is not enabled: start probed with --web.enable-lifecycle, or send SIGHUP", http.StatusForbidden)
			return
		}
		if err := o.Reload(); err != nil {
			http.Error(w, "reload failed, the previous configuration stays active:\n"+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "Reloaded")
	})
	// GET / is the agent's console (package console), mounted by the
	// agent with its APIs: the same mux, so the same TLS and basic auth.
	return s
}

// WebConfigError is a --web.config.file that cannot be used (exit 2, like
// any bad configuration).
type WebConfigError struct {
	File string
	Err  error
}

func (e *WebConfigError) Error() string { return fmt.Sprintf("%s: %v", e.File, e.Err) }
func (e *WebConfigError) Unwrap() error { return e.Err }

// Listen checks the web config file and opens the listeners, so that a bad
// file or a busy port is reported before the agent says it started.
func (s *Server) Listen(flags *web.FlagConfig) ([]net.Listener, error) {
	if f := *flags.WebConfigFile; f != "" {
		if err := web.Validate(f); err != nil {
			return nil, &WebConfigError{File: f, Err: err}
		}
	}
	if flags.WebSystemdSocket != nil && *flags.WebSystemdSocket {
		ls, err := activation.Listeners()
		if err != nil {
			return nil, fmt.Errorf("systemd socket activation: %w", err)
		}
		if len(ls) == 0 {
			return nil, errors.New("systemd socket activation: no listening sockets passed")
		}
		return ls, nil
	}
	var ls []net.Listener
	for _, addr := range *flags.WebListenAddresses {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range ls {
				o.Close()
			}
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Serve serves on the listeners per the exporter-toolkit flags (TLS, basic
// auth) until ctx is done.
func (s *Server) Serve(ctx context.Context, ls []net.Listener, flags *web.FlagConfig) error {
	srv := &http.Server{Handler: s.Mux, ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake and other server errors in the agent's own log
		// format, not as plain stdlib lines any client can trigger.
		ErrorLog: mustStdLog(s.log.Named("http"))}
	if s.opts.OnShutdown != nil {
		srv.RegisterOnShutdown(s.opts.OnShutdown)
	}
	errc := make(chan error, 1)
	go func() { errc <- web.ServeMultiple(ls, srv, flags, slog.New(newSlogHandler(s.log))) }()
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

var targetsDesc = prometheus.NewDesc("probed_targets", "Jobs being run, by kind (icmp, tcp, stamp, trace, mtu).", []string{"kind"}, nil)

type targetsCollector struct{ f func() map[string]int }

func (c *targetsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- targetsDesc }
func (c *targetsCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.f()
	for _, k := range []string{"icmp", "tcp", "stamp", "trace", "mtu"} {
		ch <- prometheus.MustNewConstMetric(targetsDesc, prometheus.GaugeValue, float64(m[k]), k)
	}
}

func mustStdLog(l *zap.Logger) *log.Logger {
	std, err := zap.NewStdLogAt(l, zap.WarnLevel)
	if err != nil {
		return zap.NewStdLog(l)
	}
	return std
}
