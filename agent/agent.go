// Package agent runs one probed agent: it loads the mesh file, plans this
// agent's jobs (with the targets AWS discovery found), and applies the plan
// to the probe engine, the STAMP reflector and the AWS poller — at start,
// on every reload, and whenever discovery changes the target list. A bad
// file changes nothing. cmd/probed only wires flags, signals and HTTP to it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter"
	"github.com/probed/probed/exporter/pathmetrics"
	"github.com/probed/probed/exporter/stampmetrics"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/icmpsock"
)

// Options configures an agent.
type Options struct {
	ConfigFile string
	// Site overrides site: in the file (--site, PROBED_SITE).
	Site string
	// PollAll overrides aws.poll_all for this agent when set
	// (--aws.poll-all), so one mesh file serves every agent.
	PollAll *bool
	Version string
	Log     *zap.Logger
	// Registry gets every agent-wide and feature metric.
	Registry *prometheus.Registry
	// Sockets and Resolver replace the kernel's (tests).
	Sockets  probe.Sockets
	Resolver probe.Resolver
	// Storage, History and Peers: the event journal, the per-minute
	// history and the other agents of the mesh view (events.go).
	Storage StorageOptions
	History HistoryOptions
	Peers   PeerOptions
}

// Agent is one running agent.
type Agent struct {
	o       Options
	log     *zap.Logger
	Metrics *exporter.Metrics
	agentM  *exporter.AgentMetrics
	engine  *probe.Engine
	paths   *pathmetrics.Set
	refl    *reflector
	aws     *awsPoller
	ev      *eventWiring

	mu      sync.Mutex // serialises loads and re-plans
	cfg     *config.Config
	plan    *config.Plan
	changes probe.Changes // what the last apply changed, for the reload event
	loaded  bool
}

// New builds the agent and registers its metrics; Load then gives it a
// config and Run runs it.
func New(o Options) *Agent {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	a := &Agent{o: o, log: o.Log}
	a.Metrics = exporter.NewMetrics(o.Registry, o.Log)
	stamps := stampmetrics.New(o.Registry)
	a.paths = pathmetrics.New()
	pathSink := pathmetrics.NewSink(a.paths, o.Log.Named("paths"))
	o.Registry.MustRegister(a.paths, pathSink)
	a.ev = newEventWiring(o)
	a.ev.attach(a.Metrics, stamps, pathSink)
	a.engine = probe.New(probe.Options{Log: o.Log, Sink: a.Metrics, Sessions: stampmetrics.Sink{Metrics: stamps},
		Paths: pathSink, Sockets: o.Sockets, Resolver: o.Resolver})
	a.agentM = exporter.NewAgentMetrics(o.Registry, o.Version, a.engine.Targets)
	a.refl = newReflector(o.Log.Named("stamp"), o.Registry)
	a.aws = newAWSPoller(o.Log.Named("aws"), o.Registry, a.replan)
	a.aws.afterRound = a.ev.awsRound
	return a
}

// Load reads the config file and applies it. On failure the running config
// stays as it is and probed_config_last_reload_successful drops to 0. The
// first load also fails when ICMP sockets may not be opened at all
// (icmpsock.ErrPermission).
func (a *Agent) Load(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	// A load leaves tens of MB of garbage behind at 10,000 targets (the
	// parsed YAML, the old plan): return it to the kernel now, rather than
	// let the heap grow to twice the peak until the next GC cycle. Reloads
	// are rare; a full GC costs tens of milliseconds.
	defer debug.FreeOSMemory()
	first := !a.loaded
	fail := func(err error) error {
		a.agentM.ReloadOK.Set(0)
		if !first {
			a.log.Error("config reload failed; keeping the previous configuration", zap.String("file", a.o.ConfigFile), zap.Error(err))
		}
		return err
	}
	cfg, err := config.Load(a.o.ConfigFile)
	if err != nil {
		return fail(err)
	}
	if a.o.PollAll != nil && cfg.AWS != nil {
		cfg.AWS.PollAll = *a.o.PollAll
	}
	plan, err := cfg.Plan(a.o.Site, a.aws.discovered(cfg, a.siteOf(cfg))...)
	if err != nil {
		return fail(err)
	}
	old := a.plan
	if err := a.apply(ctx, cfg, plan); err != nil && errors.Is(err, icmpsock.ErrPermission) {
		if first {
			return err // fatal: the caller says what to grant
		}
		a.log.Error("some ICMP jobs cannot run", zap.Error(icmpsock.ErrPermission))
	}
	a.loaded = true
	a.agentM.ReloadOK.Set(1)
	a.agentM.ReloadTime.SetToCurrentTime()
	if !first {
		a.log.Info("config reloaded", zap.String("file", a.o.ConfigFile), zap.Int("jobs", len(plan.Probes)))
		a.ev.reloaded(old, plan, a.changes)
	}
	return nil
}

func (a *Agent) siteOf(cfg *config.Config) string {
	if a.o.Site != "" {
		return a.o.Site
	}
	return cfg.Site
}

// replan applies the current config again with the targets discovery found.
func (a *Agent) replan(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg == nil {
		return
	}
	plan, err := a.cfg.Plan(a.o.Site, a.aws.discovered(a.cfg, a.plan.Site)...)
	if err != nil {
		return
	}
	_ = a.apply(ctx, a.cfg, plan)
	a.log.Info("plan updated with discovered targets", zap.Int("jobs", len(plan.Probes)))
}

// apply runs a plan. Called with a.mu held. Errors are logged; the one
// returned is the engine's (sockets of literal addresses).
func (a *Agent) apply(ctx context.Context, cfg *config.Config, plan *config.Plan) error {
	a.Metrics.SetPlan(plan)
	a.ev.apply(cfg, plan, a)
	changes, err := a.engine.Update(plan) // the engine logs each job it cannot bind yet
	a.changes = changes

	if rerr := a.refl.apply(ctx, cfg, plan.Site); rerr != nil {
		a.log.Error("STAMP reflector", zap.Error(rerr))
	}
	if aerr := a.aws.apply(ctx, cfg, plan.Site); aerr != nil {
		a.log.Error("AWS polling", zap.Error(aerr))
	}
	a.cfg, a.plan = cfg, plan
	return err
}

// Run runs the engine (and the reflector and poller started by Load)
// until ctx ends, then stops everything.
func (a *Agent) Run(ctx context.Context) error {
	a.ev.start(a.Site())
	err := a.engine.Run(ctx)
	a.mu.Lock() // a reload (SIGHUP) may be applying the services right now
	a.refl.stop()
	a.aws.stop()
	a.mu.Unlock()
	a.ev.stop(a.Site(), context.Cause(ctx))
	return err
}

// Close writes the event journal to disk and ends its live streams: after
// Run, before the process exits.
func (a *Agent) Close() error { return a.ev.journal.Close() }

// EndStreams ends the live event streams (the HTTP server's shutdown
// would otherwise wait for them).
func (a *Agent) EndStreams() { a.ev.journal.EndStreams() }

// Ready says whether the agent runs all of its plan; if not, why.
func (a *Agent) Ready() (bool, string) {
	a.mu.Lock()
	loaded := a.loaded
	a.mu.Unlock()
	if !loaded {
		return false, "the configuration is not loaded yet"
	}
	if ok, why := a.engine.Status(); !ok {
		return false, why
	}
	if err := a.refl.err(); err != nil {
		return false, fmt.Sprintf("STAMP reflector: %v", err)
	}
	return true, ""
}

// Site is the site of the loaded plan ("" before the first load).
func (a *Agent) Site() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.plan == nil {
		return ""
	}
	return a.plan.Site
}

// Jobs is the number of jobs of the loaded plan.
func (a *Agent) Jobs() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.plan == nil {
		return 0
	}
	return len(a.plan.Probes)
}

// Mount adds the agent's endpoints to mux: /paths, /api/v1/flows, the
// console (/), and the status, mesh, history and events APIs (/api/v1/…).
func (a *Agent) Mount(mux *http.ServeMux) {
	mux.Handle("/paths", a.paths.Handler())
	mux.Handle("/api/v1/flows", a.Metrics.FlowsHandler())
	a.ev.mount(mux, a)
}

// ICMPMode says how ICMP sockets were opened ("raw", "datagram" or "").
func (a *Agent) ICMPMode() string { return a.engine.ICMPMode() }
