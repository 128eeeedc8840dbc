package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/icmpsock"
)

// tick is the scheduler's resolution: probes due within the same tick leave
// together, so 10,000 targets at 1 s cost at most 500 wake-ups a second.
// (1 ms measured 0.03 cores more at 10,000 targets; the RTT does not depend
// on it, being taken at the actual send.)
const tick = 2 * time.Millisecond

// job is what one kind of job does at its slots. ICMP and TCP share one
// prober across every job of their kind (the shared-socket fast path);
// STAMP, trace and MTU keep state per job.
type job interface {
	// bind prepares sending to ip: opens or references the sockets the
	// job sends with. It runs outside the scheduler and may block briefly.
	bind(t *target, ip netip.Addr) (*binding, error)
	// unbind releases what bind took.
	unbind(t *target, b *binding)
	// fire runs one slot with the job's current binding. It is called by
	// the scheduler and must not block.
	fire(t *target, b *binding)
	// unsent reports a slot at which nothing could be sent, and why.
	unsent(t *target, r Reason)
	// stop ends the job (it left the plan or is restarted with other
	// settings); its series are forgotten by the engine, not here.
	stop(t *target)
}

// binding is a job's current address and what sending to it needs.
type binding struct {
	ip   netip.Addr
	sa   unix.Sockaddr
	conn *icmpConn // ICMP: the shared socket of this family, source, interface and TOS
	// flowIDs are the echo identifiers of an ICMP job's flows on conn
	// (nil: one flow, the socket's identifier).
	flowIDs []uint16
	sess    Session // STAMP: the session socket
	// ifindex is the index of the bound interface when the binding was
	// made (STAMP): a different index later means the device was re-created.
	ifindex int
}

// target is one job being run. Its spec and settings never change: a job
// whose settings change on reload is replaced by a new target that takes
// over the old one's series.
type target struct {
	spec     *config.ProbeSpec
	key      string
	job      job
	rec      Recorder // ICMP and TCP
	flows    *flowSet // ICMP and TCP jobs with more than one flow
	literal  netip.Addr
	interval int64  // ns
	timeout  int64  // ns
	planGen  uint64 // the last Update whose plan holds it (under Engine.mu)

	// bound is read by the scheduler and the reply path without e.mu.
	bound atomic.Pointer[binding]

	// Guarded by the engine's mu.
	next    int64 // mono ns of the next slot
	index   int   // in the schedule heap; -1 when stopped
	initial bool  // a round job's first run, before it follows its phase
	live    bool
	want    netip.Addr // the address it should be bound to
	reason  Reason     // why nothing is sent while unbound (resolve or bind); NumReasons: not known yet
	bindErr error
	retryAt int64 // mono ns: when a failed bind is tried again
	backoff time.Duration
	binding bool // a bind is in progress
}

// Engine schedules and runs every job of one agent.
type Engine struct {
	log   *zap.Logger
	sink  Sink
	sess  SessionSink
	paths PathSink
	socks Sockets
	base  time.Time // monotonic origin of every *Mono value
	clock func() int64
	life  context.Context
	end   context.CancelFunc

	icmp    *icmpProber
	tcp     *tcpProber
	shared  *pathSockets
	names   *resolver
	bindLog bindLog

	mu      sync.Mutex // guards targets, sched, and the guarded fields of targets
	targets map[config.JobID]*target
	planGen uint64 // counts Updates, to find the jobs a plan no longer holds
	sched   schedule
	wake    chan struct{}
	maint   chan struct{}
	running atomic.Bool

	flowEvery atomic.Int64  // ns between tests of the jobs' flows
	flowKick  chan struct{} // SetFlowEvaluation: apply the new pace now
	rounds    chan struct{} // member-path rounds running (at most flowRounds)
}

// Options configures an engine. Zero fields take the real thing.
type Options struct {
	Log  *zap.Logger
	Sink Sink
	// Sessions and Paths receive STAMP and trace/MTU results; jobs of a
	// kind whose sink is nil are not run.
	Sessions SessionSink
	Paths    PathSink
	// Resolver resolves target names (net.DefaultResolver by default).
	Resolver Resolver
	// Sockets opens every socket the jobs use (the kernel's by default).
	Sockets Sockets
}

// New returns an engine. It runs jobs once Update gives it a plan and Run
// is called.
func New(o Options) *Engine {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Sockets == nil {
		o.Sockets = KernelSockets{}
	}
	if o.Resolver == nil {
		o.Resolver = defaultResolver
	}
	e := &Engine{
		log:      o.Log,
		sink:     o.Sink,
		sess:     o.Sessions,
		paths:    o.Paths,
		socks:    o.Sockets,
		base:     time.Now(),
		targets:  map[config.JobID]*target{},
		wake:     make(chan struct{}, 1),
		maint:    make(chan struct{}, 1),
		flowKick: make(chan struct{}, 1),
		rounds:   make(chan struct{}, flowRounds),
	}
	e.flowEvery.Store(int64(flowEvaluation))
	e.clock = func() int64 { return int64(time.Since(e.base)) }
	e.life, e.end = context.WithCancel(context.Background())
	e.icmp = newICMPProber(e)
	e.tcp = &tcpProber{e: e}
	e.shared = &pathSockets{e: e}
	e.names = newResolver(e, o.Resolver)
	e.bindLog.log = o.Log
	return e
}

// monoNow is the engine's monotonic clock (tests replace it).
func (e *Engine) monoNow() int64 { return e.clock() }

// Changes is what an Update did to the running jobs.
type Changes struct {
	Added, Removed []*config.ProbeSpec
	// Changed holds the old and new settings of each job restarted with
	// other settings.
	Changed [][2]*config.ProbeSpec
}

// Update makes the engine run exactly plan's jobs. Jobs whose key and
// settings stay keep their state, counters and phase; jobs whose settings
// changed restart and keep their series; new ones start in their own phase;
// removed ones stop, release their sockets and memory, and their series
// disappear. Errors opening sockets for literal addresses are returned
// (joined); those jobs are retried in the background and the rest of the
// plan runs anyway. It says what it added, removed and restarted.
func (e *Engine) Update(plan *config.Plan) (Changes, error) {
	var ch Changes
	e.mu.Lock()
	e.names.setInterval(plan.ResolveInterval)
	if plan.TracePPS > 0 {
		e.shared.setPPS(plan.TracePPS)
	}
	// Jobs in this plan are marked with its generation rather than put in
	// a set: a 10,000-job set cost half a megabyte on every reload.
	e.planGen++
	gen := e.planGen
	nowMono, nowWall := e.monoNow(), time.Now().UnixNano()
	var fresh []*target
	var stopped []*target
	for i := range plan.Probes {
		spec := &plan.Probes[i]
		if !e.runs(spec.Kind) {
			continue
		}
		k := spec.ID()
		old, ok := e.targets[k]
		if ok && old.planGen == gen {
			continue // listed twice: the first one counts
		}
		if ok && old.spec.SameSettings(spec) {
			old.planGen = gen
			continue
		}
		t := e.newTarget(spec, spec.Key(), nowMono, nowWall)
		t.planGen = gen
		if ok {
			// Restart with the new settings: the series continue.
			t.rec = old.rec
			e.stopLocked(old)
			stopped = append(stopped, old)
			ch.Changed = append(ch.Changed, [2]*config.ProbeSpec{old.spec, t.spec})
		} else {
			if spec.Kind == config.KindICMP || spec.Kind == config.KindTCP {
				t.rec = e.sink.Add(t.spec)
			}
			ch.Added = append(ch.Added, t.spec)
		}
		if t.flows != nil {
			t.flows.rec, _ = t.rec.(FlowRecorder)
			if ok && old.flows != nil {
				t.flows.inherit(old.flows)
			}
		}
		e.targets[k] = t
		e.sched.push(t)
		fresh = append(fresh, t)
	}
	var removed []*target
	for k, t := range e.targets {
		if t.planGen != gen {
			delete(e.targets, k)
			e.stopLocked(t)
			removed = append(removed, t)
			ch.Removed = append(ch.Removed, t.spec)
		}
	}
	e.mu.Unlock()

	e.icmp.forget(removed, stopped)
	for _, t := range append(stopped, removed...) {
		t.job.stop(t)
		if b := t.bound.Swap(nil); b != nil {
			t.job.unbind(t, b)
		}
	}
	for _, t := range removed {
		e.forgetSeries(t)
	}
	// Literal addresses bind now, so a first load sees socket errors
	// (no privilege for ICMP) at once; names resolve in the background.
	var errs []error
	for _, t := range fresh {
		if t.literal.IsValid() {
			if err := e.bindNow(t, t.literal); err != nil {
				errs = append(errs, fmt.Errorf("%s target %s (line %d): %w", t.spec.Kind, t.spec.Target, t.spec.Line, err))
			}
		} else {
			e.names.add(t)
		}
	}
	e.names.retain(func(t *target) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return t.live && t.planGen == gen
	})
	e.kick(e.wake)
	e.kick(e.maint)
	return ch, errors.Join(errs...)
}

// runs reports whether jobs of kind k have somewhere to report.
func (e *Engine) runs(k config.Kind) bool {
	switch k {
	case config.KindICMP, config.KindTCP:
		return e.sink != nil
	case config.KindSTAMP:
		return e.sess != nil
	case config.KindTrace, config.KindMTU:
		return e.paths != nil
	}
	return false
}

func (e *Engine) newTarget(spec *config.ProbeSpec, key string, nowMono, nowWall int64) *target {
	s := *spec
	t := &target{spec: &s, key: key, interval: int64(s.Interval), timeout: int64(s.Timeout),
		live: true, reason: NumReasons}
	if ip, err := netip.ParseAddr(s.Target); err == nil {
		t.literal = ip.Unmap()
	}
	if (s.Kind == config.KindICMP || s.Kind == config.KindTCP) && s.Flows > 1 {
		t.flows = newFlowSet(e, t.spec, key)
	}
	switch s.Kind {
	case config.KindICMP:
		t.job = e.icmp
	case config.KindTCP:
		t.job = e.tcp
	case config.KindSTAMP:
		t.job = &stampJob{e: e, obs: e.sess.Session(t.spec)}
	case config.KindTrace, config.KindMTU:
		t.job = newPathJob(e, t)
	}
	t.next = firstSlot(key, t.interval, nowMono, nowWall)
	if s.Kind == config.KindTrace || s.Kind == config.KindMTU {
		// A path is wanted soon after start, not up to a whole (long)
		// interval later: the first round runs within a second, at the
		// same hash phase, and later rounds follow the interval's phase.
		t.initial = true
		t.next = firstSlot(key, min(t.interval, int64(time.Second)), nowMono, nowWall)
	}
	return t
}

// stopLocked takes t out of the schedule. e.mu is held.
func (e *Engine) stopLocked(t *target) {
	if t.index >= 0 {
		e.sched.remove(t.index)
	}
	t.index = -1
	t.live = false
}

func (e *Engine) forgetSeries(t *target) {
	switch t.spec.Kind {
	case config.KindICMP, config.KindTCP:
		e.sink.Remove(t.spec, t.rec)
	case config.KindSTAMP:
		e.sess.Forget(t.spec)
	case config.KindTrace, config.KindMTU:
		e.paths.Forget(t.spec)
	}
}

func (e *Engine) kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run schedules jobs until ctx is done, then stops every job and closes
// every socket.
func (e *Engine) Run(ctx context.Context) error {
	e.running.Store(true)
	maintDone := make(chan struct{})
	go func() {
		defer close(maintDone)
		e.maintain(ctx)
	}()
	flowDone := make(chan struct{})
	go func() {
		defer close(flowDone)
		e.flowLoop(ctx)
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := e.monoNow()
		deadline := e.icmp.expire(now)
		next := e.sendDue(now)
		if deadline != 0 && deadline < next {
			next = deadline
		}
		wait := time.Duration(next - e.monoNow())
		if wait < tick {
			wait = tick
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			<-maintDone
			<-flowDone
			e.shutdown()
			return nil
		case <-e.wake:
		case <-timer.C:
		}
	}
}

// shutdown stops every job and closes every socket.
func (e *Engine) shutdown() {
	// Replies already queued are read first: readers wait up to coalesce
	// between reads. Probes still in flight after that get no verdict (a
	// shutdown is not loss).
	time.Sleep(2 * coalesce)
	e.end()
	e.mu.Lock()
	all := make([]*target, 0, len(e.targets))
	for _, t := range e.targets {
		e.stopLocked(t)
		all = append(all, t)
	}
	e.mu.Unlock()
	for _, t := range all {
		t.job.stop(t)
		// ICMP sockets are closed together below, and stay listed so
		// the probes in flight can still be expired.
		if b := t.bound.Load(); b != nil && b.conn == nil {
			t.bound.Store(nil)
			t.job.unbind(t, b)
		}
	}
	e.tcp.wait()
	e.icmp.closeAll()
	e.shared.closeAll()
}

// sendDue runs every job whose slot falls before the end of this tick and
// returns the mono time of the next slot (at most a second away).
func (e *Engine) sendDue(now int64) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	horizon := now + int64(tick)/2
	for len(e.sched) > 0 {
		t := e.sched[0]
		if t.next > horizon {
			break
		}
		e.sink.SchedulerLag(time.Duration(max(0, e.monoNow()-t.next)))
		if b := t.bound.Load(); b != nil {
			t.job.fire(t, b)
		} else if t.reason != NumReasons {
			t.job.unsent(t, t.reason)
		}
		if t.initial {
			// The first round of a round job ran; from now on it
			// follows the phase of its interval.
			t.initial = false
			t.next = firstSlot(t.key, t.interval, now, time.Now().UnixNano())
		} else {
			// Keep the phase; if the agent stalled for longer than an
			// interval, skip the missed slots rather than bursting them.
			t.next += t.interval
			if t.next < now {
				t.next += (now - t.next + t.interval - 1) / t.interval * t.interval
			}
		}
		e.sched.fix(0)
	}
	next := now + int64(time.Second)
	if len(e.sched) > 0 && e.sched[0].next < next {
		next = e.sched[0].next
	}
	return next
}

// Targets returns how many jobs run per kind.
func (e *Engine) Targets() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[string]int{}
	for _, t := range e.targets {
		m[t.spec.Kind.String()]++
	}
	return m
}

// ICMPMode reports how ICMP sockets were opened ("raw", "datagram", or "" if none yet).
func (e *Engine) ICMPMode() string { return e.icmp.mode() }

// Status says whether every job of the plan is running: it has an address
// and its sockets are open. If not, the reason counts what is missing, for
// /-/ready.
func (e *Engine) Status() (ok bool, reason string) {
	e.mu.Lock()
	var resolving, unresolved, unbound int
	var why []string
	for _, t := range e.targets {
		b := t.bound.Load()
		switch {
		case b != nil && b.conn != nil && b.conn.broken() != nil:
			unbound++
			why = append(why, fmt.Sprintf("%s %s: %v", t.spec.Kind, t.spec.Target, b.conn.broken()))
		case b != nil:
		case t.reason == ReasonResolve:
			unresolved++
		case t.reason == ReasonBind:
			unbound++
			why = append(why, fmt.Sprintf("%s %s: %v", t.spec.Kind, t.spec.Target, t.bindErr))
		default:
			resolving++
		}
	}
	total := len(e.targets)
	e.mu.Unlock()
	if resolving+unresolved+unbound == 0 {
		return true, ""
	}
	sort.Strings(why)
	if len(why) > 3 {
		why = append(why[:3], fmt.Sprintf("and %d more", len(why)-3))
	}
	msg := fmt.Sprintf("%d of %d jobs not running (%d resolving, %d unresolvable names, %d sockets not bound)",
		resolving+unresolved+unbound, total, resolving, unresolved, unbound)
	if len(why) > 0 {
		msg += ": " + strings.Join(why, "; ")
	}
	return false, msg
}

// icmpKey is the shared socket an ICMP job to ip uses.
func icmpKey(s *config.ProbeSpec, ip netip.Addr) icmpsock.Key {
	k := icmpsock.Key{V6: ip.Is6(), Interface: s.Interface, TOS: s.TOS}
	if s.Source != "" {
		k.Source, _ = netip.ParseAddr(s.Source)
		k.Source = k.Source.Unmap()
	}
	return k
}

func sockaddr(ip netip.Addr, port uint16) unix.Sockaddr {
	if ip.Is4() {
		return &unix.SockaddrInet4{Addr: ip.As4(), Port: int(port)}
	}
	return &unix.SockaddrInet6{Addr: ip.As16(), Port: int(port)}
}
