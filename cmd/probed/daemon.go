package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/icmpsock"
)

// DefaultListenAddress is probed's HTTP port.
const DefaultListenAddress = ":9447"

type daemonFlags struct {
	configFile string
	site       string
	logLevel   string
	logFormat  string
	web        *web.FlagConfig
}

func newDaemonCommand(app *kingpin.Application) command {
	cmd := app.Command("run", "Run the agent (the default command).").Default()
	f := &daemonFlags{}
	cmd.Flag("config.file", "Mesh file.").Default("probed.yaml").StringVar(&f.configFile)
	cmd.Flag("site", "This agent's site (overrides site: in the mesh file).").Envar("PROBED_SITE").StringVar(&f.site)
	cmd.Flag("log.level", "Log level: debug, info, warn, error.").Default("info").EnumVar(&f.logLevel, "debug", "info", "warn", "error")
	cmd.Flag("log.format", "Log format: console or json.").Default("console").EnumVar(&f.logFormat, "console", "json")
	f.web = kingpinflag.AddFlags(cmd, DefaultListenAddress)
	return command{name: "run", run: func(ctx context.Context) int { return runDaemon(ctx, f) }}
}

func newLogger(level, format string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.Set(level); err != nil {
		return nil, err
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = format
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.Sampling = nil
	cfg.DisableStacktrace = true // errors here are operational, not bugs
	if format == "console" {
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalLevelEncoder
	}
	return cfg.Build()
}

// agent holds the running daemon's parts and its current config.
type agent struct {
	flags    *daemonFlags
	log      *zap.Logger
	engine   *probe.Engine
	metrics  *exporter.Metrics
	agentM   *exporter.AgentMetrics
	features []feature

	mu   sync.Mutex // serialises loads
	cfg  *config.Config
	plan *config.Plan
}

func runDaemon(ctx context.Context, f *daemonFlags) int {
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "probed: %v\n", err)
		return exitConfig
	}
	defer log.Sync()

	reg := prometheus.NewRegistry()
	a := &agent{flags: f, log: log}
	a.metrics = exporter.NewMetrics(reg, log)
	a.engine = probe.New(log, a.metrics)
	a.agentM = exporter.NewAgentMetrics(reg, version, a.engine.Targets)
	// One P for the probing, one more per scrape, unless the operator set
	// GOMAXPROCS (see exporter.Procs for the measurements behind this).
	base := 1
	if os.Getenv("GOMAXPROCS") != "" {
		base = 0
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0)) // for in-process tests
	srv := exporter.NewServer(reg, a.metrics, log, exporter.NewProcs(base), func() error { return a.load(ctx, false) })
	a.features = newFeatures(ctx, &deps{Logger: log, Registry: reg, Mux: srv.Mux, Site: f.site})
	for _, ft := range a.features {
		if n, ok := ft.(changeNotifier); ok {
			n.SetOnChange(func() { a.replan(ctx) })
		}
	}

	if err := a.load(ctx, true); err != nil {
		// The first load fails only on the config (exit 2, like
		// check-config) or on the privilege to open ICMP sockets.
		if errors.Is(err, icmpsock.ErrPermission) {
			fmt.Fprintf(os.Stderr, "probed: %v\n", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, err)
		return exitConfig
	}
	log.Info("probed started", zap.String("version", version), zap.String("site", a.plan.Site),
		zap.String("config", f.configFile), zap.Int("probes", len(a.plan.Probes)), zap.String("icmp_sockets", a.engine.ICMPMode()))

	// SIGHUP reloads, as in every Prometheus component.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = a.load(ctx, false)
			}
		}
	}()

	engineDone := make(chan error, 1)
	go func() { engineDone <- a.engine.Run(ctx) }()
	srv.SetReady(true, "")
	if err := srv.Serve(ctx, f.web); err != nil {
		log.Error("HTTP server failed", zap.Error(err))
		return 1
	}
	<-engineDone
	log.Info("probed stopped")
	return 0
}

// replan applies the current config again, picking up targets a feature
// discovered since (AWS SiteLink discovery).
func (a *agent) replan(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg == nil {
		return
	}
	plan, err := a.cfg.Plan(a.flags.site)
	if err != nil {
		return
	}
	a.apply(ctx, a.cfg, plan)
	a.log.Info("plan updated with discovered targets", zap.Int("probes", len(plan.Probes)))
}

// load reads the config and applies it. On failure the running config stays
// as it is and probed_config_last_reload_successful drops to 0.
func (a *agent) load(ctx context.Context, first bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fail := func(err error) error {
		a.agentM.ReloadOK.Set(0)
		if !first {
			a.log.Error("config reload failed; keeping the previous configuration", zap.String("file", a.flags.configFile), zap.Error(err))
		}
		return err
	}
	cfg, err := config.Load(a.flags.configFile)
	if err != nil {
		return fail(err)
	}
	plan, err := cfg.Plan(a.flags.site)
	if err != nil {
		return fail(err)
	}
	if err := a.apply(ctx, cfg, plan); err != nil && first && errors.Is(err, icmpsock.ErrPermission) {
		return err
	}
	a.agentM.ReloadOK.Set(1)
	a.agentM.ReloadTime.SetToCurrentTime()
	if !first {
		a.log.Info("config reloaded", zap.String("file", a.flags.configFile), zap.Int("probes", len(plan.Probes)))
	}
	return nil
}

// apply runs a plan: discovered targets are added, the engine and every
// feature get it. Called with a.mu held.
func (a *agent) apply(ctx context.Context, cfg *config.Config, plan *config.Plan) error {
	for _, f := range a.features {
		if d, ok := f.(discoverer); ok {
			plan.Probes = append(plan.Probes, d.Discovered()...)
		}
	}
	a.metrics.SetPlan(plan)
	err := a.engine.Update(plan)
	if err != nil {
		a.log.Error("some targets cannot be probed", zap.Error(err))
	}
	for _, f := range a.features {
		if ferr := f.Apply(ctx, cfg, plan); ferr != nil {
			a.log.Error("applying config to a feature failed", zap.Error(ferr))
		}
	}
	a.cfg, a.plan = cfg, plan
	return err
}
