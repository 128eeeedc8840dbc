package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/probed/probed/agent"
	"github.com/probed/probed/exporter"
	"github.com/probed/probed/probe/icmpsock"
)

// DefaultListenAddress is probed's HTTP port.
const DefaultListenAddress = ":9447"

type daemonFlags struct {
	configFile string
	site       string
	logLevel   string
	logFormat  string
	lifecycle  bool
	pollAll    *bool // nil: as aws.poll_all says
	web        *web.FlagConfig
}

func newDaemonCommand(app *kingpin.Application) command {
	cmd := app.Command("run", "Run the agent (the default command).").Default()
	f := &daemonFlags{}
	cmd.Flag("config.file", "Mesh file.").Default("probed.yaml").StringVar(&f.configFile)
	cmd.Flag("site", "This agent's site (overrides site: in the mesh file).").Envar("PROBED_SITE").StringVar(&f.site)
	cmd.Flag("log.level", "Log level: debug, info, warn, error.").Default("info").EnumVar(&f.logLevel, "debug", "info", "warn", "error")
	cmd.Flag("log.format", "Log format: console or json.").Default("console").EnumVar(&f.logFormat, "console", "json")
	cmd.Flag("web.enable-lifecycle", "Enable reloading over HTTP (POST /-/reload); SIGHUP always works.").BoolVar(&f.lifecycle)
	var pollAll bool
	pollAllFlag := cmd.Flag("aws.poll-all", "Poll every site's AWS resources from this agent, overriding aws.poll_all (so one mesh file serves every agent; --no-aws.poll-all turns it off).").
		Envar("PROBED_AWS_POLL_ALL")
	pollAllFlag.BoolVar(&pollAll)
	pollAllFlag.PreAction(func(*kingpin.ParseContext) error { f.pollAll = &pollAll; return nil })
	f.web = kingpinflag.AddFlags(cmd, DefaultListenAddress)
	return command{name: "run", signals: true, run: func(ctx context.Context) int { return runDaemon(ctx, f) }}
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

// runDaemon runs the agent until ctx ends. Exit status: 0 after a clean
// stop, 2 for a bad mesh file or web config file, 1 for anything else that
// stops it (no privilege for ICMP, a port that cannot be bound).
func runDaemon(ctx context.Context, f *daemonFlags) int {
	// SIGHUP is caught before anything else: a reload sent right after
	// start (systemctl reload) must not kill the agent.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintf(os.Stderr, "probed: %v\n", err)
		return exitConfig
	}
	defer func() { _ = log.Sync() }() // stderr may not sync (EINVAL on a terminal)

	// One P for the probing, one more per scrape, unless the operator set
	// GOMAXPROCS (see exporter.Procs for the measurements behind this).
	base := 1
	if os.Getenv("GOMAXPROCS") != "" {
		base = 0
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0)) // for in-process tests

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reg := prometheus.NewRegistry()
	a := agent.New(agent.Options{ConfigFile: f.configFile, Site: f.site, PollAll: f.pollAll, Version: version,
		Log: log, Registry: reg})
	srv := exporter.NewServer(reg, a.Metrics, log, exporter.NewProcs(base), exporter.ServerOptions{
		Reload: func() error { return a.Load(ctx) }, Lifecycle: f.lifecycle, Ready: a.Ready})
	a.Mount(srv.Mux)

	if err := a.Load(ctx); err != nil {
		// The first load fails only on the config (exit 2, like
		// check-config) or on the privilege to open ICMP sockets.
		if errors.Is(err, icmpsock.ErrPermission) {
			fmt.Fprintf(os.Stderr, "probed: %v\n", icmpsock.ErrPermission)
			return 1
		}
		fmt.Fprintln(os.Stderr, err)
		return exitConfig
	}
	listeners, err := srv.Listen(f.web)
	if err != nil {
		fmt.Fprintf(os.Stderr, "probed: %v\n", err)
		var wc *exporter.WebConfigError
		if errors.As(err, &wc) {
			return exitConfig
		}
		return 1
	}
	log.Info("probed started", zap.String("version", version), zap.String("site", a.Site()),
		zap.String("config", f.configFile), zap.Int("jobs", a.Jobs()), zap.String("icmp_sockets", a.ICMPMode()))

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = a.Load(ctx)
			}
		}
	}()
	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(ctx) }()
	if err := srv.Serve(ctx, listeners, f.web); err != nil {
		log.Error("HTTP server failed", zap.Error(err))
		cancel()
		if err := <-agentDone; err != nil {
			log.Error("the agent stopped with an error", zap.Error(err))
		}
		return 1
	}
	if err := <-agentDone; err != nil {
		log.Error("the agent stopped with an error", zap.Error(err))
		return 1
	}
	log.Info("probed stopped")
	return 0
}
