package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v4"

	"github.com/probed/probed/agent"
	"github.com/probed/probed/config"
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

	storagePath      string
	eventsRetention  string
	eventsSize       string
	history          bool
	historyRetention string
	peerScheme       string
	peerPort         int
	peerTimeout      time.Duration
	peerHTTPConfig   string
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
	cmd.Flag("storage.path", "Directory of the agent's event journal (events/ in it), created if missing; empty: events are not recorded.").Default("data/").StringVar(&f.storagePath)
	cmd.Flag("storage.events.retention.time", "How long events are kept (e.g. 30d, 2w, 720h).").Default("30d").StringVar(&f.eventsRetention)
	cmd.Flag("storage.events.retention.size", "Most disk space the event journal uses (e.g. 256MB, 1GB: units of 1024); the oldest events go first.").Default("256MB").StringVar(&f.eventsSize)
	cmd.Flag("history", "Keep each target's per-minute RTT and loss in memory for the console's charts and median RTT (--no-history for very large meshes).").Default("true").BoolVar(&f.history)
	cmd.Flag("history.retention", "How much per-minute history is kept (about 0.75 kB per target per hour).").Default("6h").StringVar(&f.historyRetention)
	cmd.Flag("peers.scheme", "Scheme of the other sites' agents (sites[].agent), fetched for the console's mesh view: http or https.").Default("http").StringVar(&f.peerScheme)
	cmd.Flag("peers.port", "Web port of the other sites' agents (default: the port of this agent's first --web.listen-address).").IntVar(&f.peerPort)
	cmd.Flag("peers.timeout", "Timeout of one peer's status answer; a peer that does not answer in time shows as unknown.").Default("2s").DurationVar(&f.peerTimeout)
	cmd.Flag("peers.http-config.file", "HTTP client settings for the peers, in Prometheus' http_config format (basic_auth, tls_config, …).").ExistingFileVar(&f.peerHTTPConfig)
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
	storage, hist, peers, err := f.eventOptions()
	if err != nil {
		fmt.Fprintf(os.Stderr, "probed: %v\n", err)
		return exitConfig
	}
	reg := prometheus.NewRegistry()
	a := agent.New(agent.Options{ConfigFile: f.configFile, Site: f.site, PollAll: f.pollAll, Version: version,
		Log: log, Registry: reg, Storage: storage, History: hist, Peers: peers})
	defer func() {
		// After the run: agent_stopped is written, the journal fsynced.
		if err := a.Close(); err != nil {
			log.Error("closing the event journal", zap.Error(err))
		}
	}()
	srv := exporter.NewServer(reg, a.Metrics, log, exporter.NewProcs(base), exporter.ServerOptions{
		Reload: func() error { return a.Load(ctx) }, Lifecycle: f.lifecycle, Ready: a.Ready, OnShutdown: a.EndStreams})
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
		zap.String("config", f.configFile), zap.Int("jobs", a.Jobs()), zap.String("icmp_sockets", a.ICMPMode()),
		zap.String("console", consoleURL(listeners, f.web)))

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

// eventOptions checks the storage, history and peer flags.
func (f *daemonFlags) eventOptions() (agent.StorageOptions, agent.HistoryOptions, agent.PeerOptions, error) {
	var (
		st agent.StorageOptions
		h  agent.HistoryOptions
		p  agent.PeerOptions
	)
	// Zero values (flags built in code rather than parsed) take the
	// defaults; an empty --storage.path keeps no journal.
	ret := 30 * 24 * time.Hour
	if f.eventsRetention != "" {
		var err error
		if ret, err = config.ParseDuration(f.eventsRetention); err != nil || ret <= 0 {
			return st, h, p, fmt.Errorf("--storage.events.retention.time=%q: want a positive duration such as 30d or 720h", f.eventsRetention)
		}
	}
	size := units.Base2Bytes(256 << 20)
	if f.eventsSize != "" {
		var err error
		if size, err = units.ParseBase2Bytes(f.eventsSize); err != nil {
			return st, h, p, fmt.Errorf("--storage.events.retention.size=%q: want a size such as 256MB or 1GB", f.eventsSize)
		}
	}
	if size < minEventsSize {
		return st, h, p, fmt.Errorf("--storage.events.retention.size=%s: want at least 1MB", size)
	}
	st = agent.StorageOptions{Path: f.storagePath, Retention: ret, MaxBytes: int64(size)}
	hr := 6 * time.Hour
	if f.historyRetention != "" {
		var err error
		if hr, err = config.ParseDuration(f.historyRetention); err != nil || hr < time.Minute || hr > 7*24*time.Hour {
			return st, h, p, fmt.Errorf("--history.retention=%q: want a duration from 1m to 7d, such as 6h", f.historyRetention)
		}
	}
	h = agent.HistoryOptions{Disabled: !f.history, Retention: hr}
	switch f.peerScheme {
	case "":
		f.peerScheme = "http"
	case "http", "https":
	default:
		return st, h, p, fmt.Errorf("--peers.scheme=%q: want http or https", f.peerScheme)
	}
	if f.peerPort < 0 || f.peerPort > 65535 {
		return st, h, p, fmt.Errorf("--peers.port=%d: not a port", f.peerPort)
	}
	if f.peerTimeout < 0 {
		return st, h, p, fmt.Errorf("--peers.timeout=%s: want a positive duration", f.peerTimeout)
	}
	p = agent.PeerOptions{Scheme: f.peerScheme, Port: f.peerPort, Timeout: f.peerTimeout}
	if p.Port == 0 {
		p.Port = listenPort(*f.web.WebListenAddresses)
	}
	if f.peerHTTPConfig != "" {
		cfg, _, err := promconfig.LoadHTTPConfigFile(f.peerHTTPConfig)
		if err != nil {
			return st, h, p, fmt.Errorf("--peers.http-config.file: %w", err)
		}
		if p.Client, err = promconfig.NewClientFromConfig(*cfg, "probed-peers"); err != nil {
			return st, h, p, fmt.Errorf("--peers.http-config.file=%s: %w", f.peerHTTPConfig, err)
		}
	}
	return st, h, p, nil
}

// minEventsSize is the least --storage.events.retention.size.
const minEventsSize = 1 << 20

// listenPort is the port of the first listen address (the peers' port by
// default: one mesh, one port), or agent.DefaultPeerPort.
func listenPort(addrs []string) int {
	if len(addrs) > 0 {
		if _, port, err := net.SplitHostPort(addrs[0]); err == nil {
			if n, err := strconv.Atoi(port); err == nil && n > 0 {
				return n
			}
		}
	}
	return agent.DefaultPeerPort
}

// consoleURL is where the console answers, for the start-up log line.
func consoleURL(ls []net.Listener, flags *web.FlagConfig) string {
	if len(ls) == 0 {
		return ""
	}
	scheme := "http"
	if f := *flags.WebConfigFile; f != "" {
		// TLS is on when the (already validated) file has a server
		// certificate section.
		var wc struct {
			TLS map[string]any `yaml:"tls_server_config"`
		}
		if b, err := os.ReadFile(f); err == nil && yaml.Unmarshal(b, &wc) == nil && len(wc.TLS) > 0 {
			scheme = "https"
		}
	}
	addr := ls[0].Addr().String()
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("localhost", port)
		}
	}
	return scheme + "://" + addr + "/"
}
