package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/awsevents"
	"github.com/probed/probed/awsstate"
	"github.com/probed/probed/config"
	"github.com/probed/probed/console"
	"github.com/probed/probed/events"
	"github.com/probed/probed/exporter"
	"github.com/probed/probed/exporter/pathmetrics"
	"github.com/probed/probed/exporter/stampmetrics"
	"github.com/probed/probed/history"
	"github.com/probed/probed/internal/jsonapi"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/status"
	"github.com/probed/probed/watch"
	"github.com/prometheus/client_golang/prometheus"
)

// StorageOptions place the event journal.
type StorageOptions struct {
	// Path is --storage.path; the journal lives in Path/events. Empty:
	// no journal (events are not kept, GET /api/v1/events answers 503).
	Path string
	// Retention and MaxBytes cap the journal (0: the events package's
	// defaults, 30 days and 256 MiB).
	Retention time.Duration
	MaxBytes  int64
}

// HistoryOptions configure the in-memory per-minute history.
type HistoryOptions struct {
	// Disabled turns it off (very large meshes): no charts, no median RTT
	// in the status and the matrix.
	Disabled bool
	// Retention is how much is kept (0: history.DefaultDuration, 6 h).
	Retention time.Duration
}

// DefaultPeerPort is the web port of peers when nothing else is known
// (probed's default listen port).
const DefaultPeerPort = 9447

// PeerOptions say how to reach the other sites' agents (sites[].agent) for
// the mesh view.
type PeerOptions struct {
	// Scheme is "http" (default) or "https".
	Scheme string
	// Port is the peers' web port (0: DefaultPeerPort).
	Port int
	// Client carries the TLS and authentication settings peers need (nil:
	// a plain client).
	Client *http.Client
	// Timeout for one peer's answer (0: status' default, 2 s).
	Timeout time.Duration
}

// eventWiring is the agent's memory of what changed: the journal, the
// history, the per-target watchers, the AWS tracker, and the status and mesh
// views built from them.
type eventWiring struct {
	log     *zap.Logger
	version string
	started time.Time

	journal    *events.Journal // nil without storage
	journalErr error           // why there is no journal
	hist       *history.Store
	watcher    *watch.Watcher
	peers      PeerOptions
	mesh       atomic.Pointer[status.Mesh] // nil until a config is loaded
	meshSite   string                      // the site mesh was made for (under the agent's mu)

	awsMu sync.Mutex // serialises snapshot diffs (several regions poll at once)
	aws   *awsevents.Tracker

	stopped sync.Once
}

// newEventWiring opens the journal and builds the history and watchers.
// A journal that cannot be opened is logged and the agent runs without
// it: probing is the agent's first job.
func newEventWiring(o Options) *eventWiring {
	w := &eventWiring{log: o.Log, version: o.Version, started: time.Now(), peers: o.Peers}
	if o.Storage.Path != "" {
		dir := filepath.Join(o.Storage.Path, "events")
		j, err := events.Open(events.Options{Dir: dir, Retention: o.Storage.Retention, MaxBytes: o.Storage.MaxBytes,
			Registerer: o.Registry, Logger: o.Log.Named("events")})
		// A journal that could not be opened must show where alerts look,
		// not only in a log line read after the report came out wrong.
		up := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probed_events_journal_up",
			Help: "1 if the event journal under --storage.path is open and recording, 0 if it could not be opened (events are then not recorded)."})
		o.Registry.MustRegister(up)
		if err != nil {
			w.journalErr = err
			o.Log.Error("the event journal cannot be opened: events are not recorded; fix --storage.path and restart",
				zap.String("path", dir), zap.Error(err))
		} else {
			w.journal = j
			up.Set(1)
		}
	} else {
		w.journalErr = errors.New("no --storage.path: events are not recorded")
		o.Log.Info("no --storage.path: events are not recorded")
	}
	w.hist = history.New(history.Options{Disabled: o.History.Disabled, Duration: o.History.Retention})
	wt, err := watch.New(watch.Options{Emit: w.emit, History: w.hist})
	if err != nil {
		panic(err) // the default parameters are valid
	}
	w.watcher = wt
	return w
}

// emit records one event (one call per fact).
func (w *eventWiring) emit(e events.Event) { w.journal.Emit(e) }

// attach makes the sinks report to the journal. Before the engine runs.
func (w *eventWiring) attach(m *exporter.Metrics, stamps *stampmetrics.Metrics, paths *pathmetrics.Sink) {
	m.SetWatcher(w.watcher)
	stamps.SetEmit(w.emit)
	paths.SetEmit(w.emit)
}

// apply takes a (re)loaded config: probe.down_after for up/down, the peers
// of the mesh view, the site of the AWS events.
func (w *eventWiring) apply(cfg *config.Config, plan *config.Plan, selfStatus status.Provider) {
	w.watcher.SetDownAfter(plan.DownAfter)
	sites, peers := w.peerList(cfg, plan.Site)
	if m := w.mesh.Load(); m != nil && w.meshSite == plan.Site {
		m.SetPeers(sites, peers)
	} else {
		w.meshSite = plan.Site
		w.mesh.Store(status.NewMesh(status.MeshOptions{Site: plan.Site, Self: selfStatus, Sites: sites, Peers: peers,
			Client: w.peers.Client, Timeout: w.peers.Timeout, Logger: w.log.Named("mesh")}))
	}
	w.awsMu.Lock()
	if w.aws == nil {
		w.aws = awsevents.New(plan.Site, w.started)
	}
	w.awsMu.Unlock()
}

// peerList is every site of the mesh (the matrix's rows and columns) and
// the other sites' agents with an address.
func (w *eventWiring) peerList(cfg *config.Config, self string) ([]string, []status.Peer) {
	scheme, port := w.peers.Scheme, w.peers.Port
	if scheme == "" {
		scheme = "http"
	}
	if port == 0 {
		port = DefaultPeerPort
	}
	var sites []string
	var peers []status.Peer
	for _, s := range cfg.Sites {
		sites = append(sites, s.Name)
		if s.Name == self || s.Agent == "" {
			continue
		}
		peers = append(peers, status.Peer{Site: s.Name,
			URL: scheme + "://" + net.JoinHostPort(s.Agent, strconv.Itoa(port)) + status.PathStatus})
	}
	return sites, peers
}

// awsRound diffs the poller's new snapshot against the last one.
func (w *eventWiring) awsRound(pl *awsstate.Poller) {
	w.awsMu.Lock()
	defer w.awsMu.Unlock()
	if w.aws == nil {
		return
	}
	for _, e := range w.aws.Update(pl.Snapshot()) {
		w.emit(e)
	}
}

// awsStatus is the AWS section of the status (nil without polling).
func (w *eventWiring) awsStatus(pl *awsstate.Poller) *status.AWS {
	if pl == nil {
		return nil
	}
	w.awsMu.Lock()
	tr := w.aws
	w.awsMu.Unlock()
	if tr == nil {
		return nil
	}
	return tr.AWS(pl.Snapshot())
}

// start records agent_started.
func (w *eventWiring) start(site string) {
	w.emit(events.NewAgentStarted(time.Now(), site, w.version))
}

// stop records agent_stopped (once) with why the run ended.
func (w *eventWiring) stop(site string, cause error) {
	w.stopped.Do(func() {
		w.emit(events.NewAgentStopped(time.Now(), site, stopReason(cause)))
	})
}

// stopReason words the end of the run: the signal (SIGTERM, SIGINT) when
// signal.NotifyContext ended it, else the cause as it is.
func stopReason(cause error) string {
	if cause == nil {
		return "stopped"
	}
	s := cause.Error()
	switch s {
	case "terminated signal received":
		return "SIGTERM"
	case "interrupt signal received":
		return "SIGINT"
	case context.Canceled.Error():
		return "stopped"
	}
	return s
}

// reloaded records config_reloaded: what the reload added, removed and
// changed, job by job (reconciled by key as the engine does), and the
// plan-wide settings that changed.
func (w *eventWiring) reloaded(old, cur *config.Plan, c probe.Changes) {
	added, removed, changed := describeChanges(old, cur, c)
	w.emit(events.NewConfigReloaded(time.Now(), cur.Site, added, removed, changed))
}

// describeChanges words what a reload changed: the jobs the engine added,
// removed and restarted (it reconciles by key), and the plan-wide settings.
func describeChanges(old, cur *config.Plan, c probe.Changes) (added, removed, changed []string) {
	for _, s := range c.Added {
		added = append(added, describeJob(s))
	}
	for _, s := range c.Removed {
		removed = append(removed, describeJob(s))
	}
	for _, p := range c.Changed {
		changed = append(changed, describeJob(p[1])+": "+strings.Join(settingsDiff(p[0], p[1]), ", "))
	}
	if old != nil {
		for _, c := range []struct {
			name     string
			old, cur any
		}{
			{"site", old.Site, cur.Site},
			{"probe.loss_window", old.LossWindow, cur.LossWindow},
			{"probe.down_after", old.DownAfter, cur.DownAfter},
			{"probe.resolve_interval", old.ResolveInterval, cur.ResolveInterval},
			{"trace.pps", old.TracePPS, cur.TracePPS},
		} {
			if c.old != c.cur {
				changed = append(changed, fmt.Sprintf("%s %v → %v", c.name, c.old, c.cur))
			}
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

// describeJob names a job in a reload event: "icmp us-east → ap-tokyo
// 10.77.5.1 (sitelink/prod)", "tcp/443 …", "trace …".
func describeJob(s *config.ProbeSpec) string {
	kind := s.Kind.String()
	if s.Port != 0 && (s.Kind == config.KindTCP || s.Kind == config.KindSTAMP) {
		kind += "/" + s.PortLabel()
	}
	d := fmt.Sprintf("%s %s → %s %s (%s/%s)", kind, s.SourceSite, s.TargetSite, s.Target, s.Path, s.Segment)
	if s.Kind == config.KindTrace || s.Kind == config.KindMTU {
		d += " of " + s.Protocol
		if s.Port != 0 {
			d += "/" + s.PortLabel()
		}
	}
	if s.Discovered {
		d += " [discovered]"
	}
	return d
}

// settingsDiff lists the settings outside the key that differ (what
// SameSettings compares).
func settingsDiff(a, b *config.ProbeSpec) []string {
	var out []string
	add := func(name string, x, y any) {
		if x != y {
			out = append(out, fmt.Sprintf("%s %v → %v", name, x, y))
		}
	}
	add("interval", a.Interval, b.Interval)
	add("timeout", a.Timeout, b.Timeout)
	add("size", a.Size, b.Size)
	add("expect unreachable", a.Guard, b.Guard)
	add("flows", a.Flows, b.Flows)
	add("flow_series", a.FlowSeries, b.FlowSeries)
	add("trace", a.TraceOpts, b.TraceOpts)
	add("mtu", a.MTUOpts, b.MTUOpts)
	add("stamp window", a.STAMPOpts.Window, b.STAMPOpts.Window)
	if string(a.STAMPOpts.Key) != string(b.STAMPOpts.Key) {
		out = append(out, "stamp key changed")
	}
	if len(out) == 0 {
		out = append(out, "settings changed")
	}
	return out
}

// Status implements status.Provider: this agent's current view, the same
// numbers as /metrics.
func (a *Agent) Status(ctx context.Context) (*status.Status, error) {
	a.mu.Lock()
	cfg, plan := a.cfg, a.plan
	a.mu.Unlock()
	if plan == nil {
		return nil, errors.New("the configuration is not loaded yet")
	}
	w := a.ev
	now := time.Now()
	started := w.started.UTC()
	st := &status.Status{Site: plan.Site, Version: w.version, Time: now.UTC(), Started: &started,
		IntervalSeconds: cfg.Probe.Interval.D().Seconds(), Targets: []status.Target{}}
	if st.IntervalSeconds == 0 {
		st.IntervalSeconds = config.DefaultInterval.Seconds()
	}
	type pathKey [7]string
	paths := map[pathKey]pathmetrics.TargetPath{}
	for _, p := range a.paths.Snapshot() {
		paths[pathKey{p.SourceSite, p.TargetSite, p.Target, p.Path, p.Segment, p.Protocol, p.Port}] = p
	}
	for _, ts := range a.Metrics.Targets() {
		lv := ts.Spec.LabelValues()
		t := status.Target{SourceSite: lv[0], TargetSite: lv[1], Target: lv[2], Path: lv[3], Segment: lv[4],
			Protocol: lv[5], Port: lv[6], Sent: ts.Sent, Lost: ts.Lost, Guard: ts.Guard}
		_, changed := ts.Watch.State()
		if changed.IsZero() {
			changed = w.started
		}
		since := changed.UTC()
		if ts.Up >= 0 {
			up := ts.Up == 1
			t.Up, t.Since = &up, &since
		}
		if ts.Guard {
			v := ts.Violation
			t.Violation = &v
		} else {
			if ts.HaveLossRatio {
				t.LossRatio = &ts.LossRatio
			}
			if ts.HaveJitter {
				t.JitterSeconds = &ts.Jitter
			}
			k := history.Key{SourceSite: lv[0], TargetSite: lv[1], Target: lv[2], Path: lv[3], Segment: lv[4], Protocol: lv[5], Port: lv[6]}
			if p, ok := w.hist.Get(k).Latest(now); ok {
				med := p.Median.Seconds()
				t.RTTMedianSeconds = &med
			}
		}
		if p, ok := paths[pathKey(lv)]; ok {
			t.Trace = traceStatus(p)
		}
		st.Targets = append(st.Targets, t)
	}
	st.AWS = w.awsStatus(a.aws.current())
	return st, ctx.Err()
}

func traceStatus(p pathmetrics.TargetPath) *status.Trace {
	tr := &status.Trace{Hops: []string{}, LastChange: p.LastChange, Changes: p.Changes, Previous: p.PreviousPath,
		MTUBytes: p.MTUBytes, MTUBlackhole: p.MTUBlackhole}
	for _, h := range p.Hops {
		tr.Hops = append(tr.Hops, h.Address)
	}
	return tr
}

// mountEvents adds the journal's, history's, status and mesh APIs and the
// console to mux.
func (w *eventWiring) mount(mux *http.ServeMux, self status.Provider) {
	if w.journal != nil {
		w.journal.Register(mux)
	} else {
		unavailable := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if jsonapi.Get(rw, r) {
				jsonapi.Error(rw, http.StatusServiceUnavailable, "event journal unavailable: "+w.journalErr.Error())
			}
		})
		mux.Handle(events.PathEvents, unavailable)
		mux.Handle(events.PathStream, unavailable)
	}
	w.hist.Register(mux)
	// The mesh exists once a config is loaded; its handlers are looked up
	// per request.
	mux.Handle(status.PathStatus, status.Handler(self, w.log))
	mux.HandleFunc(status.PathMesh, func(rw http.ResponseWriter, r *http.Request) {
		m := w.mesh.Load()
		if m == nil {
			if jsonapi.Get(rw, r) {
				jsonapi.Error(rw, http.StatusServiceUnavailable, "the configuration is not loaded yet")
			}
			return
		}
		m.Handler().ServeHTTP(rw, r)
	})
	console.Register(mux)
}
