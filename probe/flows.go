package probe

import (
	"context"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/inet"
	"github.com/probed/probed/probe/ecmp"
)

// Multi-flow probing (docs/ecmp.md). A job with flows: N > 1 sends its
// probes over N flow identities, probe i on flow i mod N: N ICMP echo
// identifiers, or N TCP source ports. A flow's identity is derived from the
// job's key and the flow's index, so it stays the same across reloads (and
// restarts) and routers keep hashing it onto the same member path. Every
// outcome carries its flow (Probe.Flow); a recorder that implements
// FlowRecorder accounts per flow, and the engine asks it every
// flowEvaluation whether the loss concentrates on some flows
// (ecmp.Test), and traces the flows' member paths with Paris traceroute
// (their exact identities) when it does, when the job starts, and then
// now and again.

// FlowRecorder is implemented by recorders that account per flow. The
// engine calls it for ICMP and TCP jobs with more than one flow.
type FlowRecorder interface {
	// SetFlows gives the identities of the job's flows: ids[i] is flow
	// i's ICMP echo identifier or TCP source port. It is called when the
	// job is bound and whenever an identity changes. len(ids) is the
	// number of flows actually probed: less than spec.Flows where the
	// kernel sets the identifier (ICMP over ping sockets: one).
	SetFlows(spec *config.ProbeSpec, ids []uint16)
	// EvaluateFlows runs ecmp.Test over the recorder's per-flow window,
	// keeps the verdict for export and returns it.
	EvaluateFlows(now time.Time) ecmp.Verdict
	// MemberPaths publishes what the Paris traces of the job's flows found.
	MemberPaths(r MemberPathReport)
}

// MemberPathReport is one round of Paris traces over a job's flows.
type MemberPathReport struct {
	At time.Time
	// Paths groups the traced flows into member paths (ecmp.GroupPaths).
	Paths ecmp.PathSet
	// Traced is how many flows were traced (every flow of the job).
	Traced int
	// Err is why the round could not run (no raw sockets, no route);
	// Paths is empty then.
	Err error
}

// Cadence of the flow statistics and member-path traces.
const (
	// flowEvaluation is how often each job's flows are tested (docs/ecmp.md:
	// at most Alpha × 10 min / flowEvaluation false alarms per 10 minutes).
	flowEvaluation = 10 * time.Second
	// memberRefresh: a job's flows are traced when it starts and again
	// this often, so the number of member paths follows the network.
	memberRefresh = time.Hour
	// attributionRefresh: while the loss concentrates, the flows are
	// traced again this often (the fault may move the paths).
	attributionRefresh = 10 * time.Minute
	// flowRounds bounds the member-path rounds running at once over all
	// jobs; the others wait for a later evaluation. The tracer's pps
	// budget (trace.pps) paces their packets.
	flowRounds = 4
	// tracesPerRound is how many of one round's flows are traced at once.
	tracesPerRound = 4
)

// flowSet is the multi-flow state of one ICMP or TCP job.
type flowSet struct {
	n   int
	rr  atomic.Uint64 // probes sent: the next one goes to flow rr mod flows
	rec FlowRecorder  // nil: the recorder does not account per flow

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// ports are the TCP jobs' source ports (ICMP identifiers live in the
	// binding: they belong to the job's socket).
	ports []uint16
	// done is when each TCP flow's last probe ended (engine mono ns).
	done []atomic.Int64
	// conns serialises each TCP flow's connections: held from the connect
	// to its outcome, and shared with the job this one replaces, so a
	// restarted job's first connection on a port waits for the old job's
	// last one instead of finding its port (4-tuple) in use.
	conns []*sync.Mutex
	// Member-path rounds.
	running     bool
	lastRound   time.Time
	concentrate bool   // the last evaluation found concentrated loss
	lastErr     string // the round failure logged last
}

func newFlowSet(e *Engine, spec *config.ProbeSpec, key string) *flowSet {
	fs := &flowSet{n: spec.Flows}
	fs.ctx, fs.cancel = context.WithCancel(e.life)
	if spec.Kind == config.KindTCP {
		fs.ports = make([]uint16, fs.n)
		fs.done = make([]atomic.Int64, fs.n)
		fs.conns = make([]*sync.Mutex, fs.n)
		for i := range fs.ports {
			fs.conns[i] = new(sync.Mutex)
			fs.ports[i] = tcpFlowPort(key, i, 0)
		}
	}
	return fs
}

// next is the flow of the next probe of a job probing n flows: round
// robin, so every flow samples the same moments (a burst of loss is
// spread over the flows, not pinned on one).
func (fs *flowSet) next(n int) int {
	return int((fs.rr.Add(1) - 1) % uint64(n))
}

// inherit takes over from the job this one replaces (a reload that
// changed its settings): the round state (the flows keep their
// identities, so the member paths found stay valid), and for TCP the
// flows' ports (one that had to move keeps its new one) and connection
// locks.
func (fs *flowSet) inherit(old *flowSet) {
	old.mu.Lock()
	last, conc := old.lastRound, old.concentrate
	ports := slices.Clone(old.ports)
	old.mu.Unlock()
	fs.mu.Lock()
	fs.lastRound, fs.concentrate = last, conc
	for i := range min(len(fs.ports), len(ports)) {
		fs.ports[i] = ports[i]
		fs.conns[i] = old.conns[i]
	}
	fs.mu.Unlock()
}

// stop ends the job's rounds and waits for the one running.
func (fs *flowSet) stop() {
	fs.cancel()
	fs.wg.Wait()
}

func (fs *flowSet) tcpPorts() []uint16 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return slices.Clone(fs.ports)
}

func (fs *flowSet) port(flow int) uint16 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.ports[flow]
}

// movePort gives flow its port for attempt (its port was taken), unless
// another probe of the flow moved it already, and says so.
func (fs *flowSet) movePort(e *Engine, t *target, flow int, was uint16, attempt int, why error) uint16 {
	fs.mu.Lock()
	if fs.ports[flow] != was {
		p := fs.ports[flow]
		fs.mu.Unlock()
		return p
	}
	p := tcpFlowPort(t.key, flow, attempt)
	fs.ports[flow] = p
	ports := slices.Clone(fs.ports)
	fs.mu.Unlock()
	e.log.Info("a TCP flow's source port is held by another socket; the flow takes another port (and may take another member path)",
		zap.String("target", t.spec.Target), zap.Uint16("port", t.spec.Port), zap.Int("flow", flow),
		zap.Uint16("old_source_port", was), zap.Uint16("source_port", p), zap.Error(why))
	if fs.rec != nil {
		fs.rec.SetFlows(t.spec, ports)
	}
	return p
}

// afterProbe waits until flow's next probe has ended, so that a Paris
// trace of a TCP flow runs in the gap before the one after (a flows ×
// interval away): a trace SYN from the flow's port that reaches the
// target leaves a half-open connection there for a round trip, and the
// flow's own SYN must not meet it (the target would answer it for the
// trace's connection, and the probe would be lost). It gives up waiting
// after two of the flow's turns.
func (fs *flowSet) afterProbe(ctx context.Context, e *Engine, t *target, flow int) error {
	start := e.monoNow()
	turn := time.Duration(t.interval) * time.Duration(fs.n)
	poll := min(max(turn/32, time.Millisecond), 20*time.Millisecond)
	for e.monoNow()-start < int64(2*turn+time.Duration(t.timeout)) {
		if fs.done[flow].Load() > start {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
	return nil
}

// flowHash is the hash a flow's identity is derived from: the job's key,
// the flow's index and, for TCP, the attempt (a port another socket holds
// is replaced by the next attempt's).
func flowHash(key string, flow, attempt int) uint32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	h.Write([]byte{'|'})
	h.Write(strconv.AppendInt(nil, int64(flow), 10))
	if attempt > 0 {
		h.Write([]byte{'|'})
		h.Write(strconv.AppendInt(nil, int64(attempt), 10))
	}
	// FNV of keys that differ in their last bytes differ in a few bits
	// only; MurmurHash3's finaliser spreads them over the whole range, so
	// a router's hash sees unrelated identifiers.
	x := h.Sum32()
	x ^= x >> 16
	x *= 0x85ebca6b
	x ^= x >> 13
	x *= 0xc2b2ae35
	x ^= x >> 16
	return x
}

// tcpFlowPort is the source port of flow i of a TCP job: in the dynamic
// port range (inet.FlowID), like ordinary client connections.
func tcpFlowPort(key string, flow, attempt int) uint16 {
	return inet.FlowID(flowHash(key, flow, attempt))
}

// icmpFlowStart is where the search for flow i's echo identifier starts
// (the identifier itself unless another socket of ours holds it).
func icmpFlowStart(key string, flow int) uint16 {
	return uint16(flowHash(key, flow, 0) % pathFeatureIDs)
}

// SetFlowEvaluation changes how often the jobs' flows are tested (tests
// run at a faster pace than the default 10 s).
func (e *Engine) SetFlowEvaluation(every time.Duration) {
	e.flowEvery.Store(int64(every))
	e.kick(e.flowKick)
}

// flowLoop tests every multi-flow job's flows every flowEvaluation and
// starts the member-path rounds that are due.
func (e *Engine) flowLoop(ctx context.Context) {
	timer := time.NewTimer(time.Duration(e.flowEvery.Load()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.flowKick:
		}
		e.evaluateFlows(time.Now())
		timer.Reset(time.Duration(e.flowEvery.Load()))
	}
}

func (e *Engine) evaluateFlows(now time.Time) {
	e.mu.Lock()
	var jobs []*target
	for _, t := range e.targets {
		if t.flows != nil && t.flows.rec != nil && t.live {
			jobs = append(jobs, t)
		}
	}
	e.mu.Unlock()
	for _, t := range jobs {
		v := t.flows.rec.EvaluateFlows(now)
		e.considerRound(t, v, now)
	}
}

// considerRound starts a member-path round for t when one is due: the
// first evaluation after the job started (how many member paths are
// there?), when the loss starts to concentrate (which paths are the lossy
// flows on, and where do they leave the healthy ones?), every
// attributionRefresh while it does, and every memberRefresh otherwise.
func (e *Engine) considerRound(t *target, v ecmp.Verdict, now time.Time) {
	fs := t.flows
	b := t.bound.Load()
	var ids []uint16
	switch {
	case b == nil:
	case t.spec.Kind == config.KindTCP:
		ids = fs.tcpPorts()
	default:
		ids = b.flowIDs
	}
	fs.mu.Lock()
	started := v.Concentrated && !fs.concentrate
	fs.concentrate = v.Concentrated
	since := now.Sub(fs.lastRound)
	due := fs.lastRound.IsZero() || started || since >= memberRefresh || (v.Concentrated && since >= attributionRefresh)
	if !due || fs.running || len(ids) < 2 || v.Sent == 0 || fs.ctx.Err() != nil {
		fs.mu.Unlock()
		return
	}
	select {
	case e.rounds <- struct{}{}:
	default:
		fs.mu.Unlock()
		return // as many rounds as allowed run: at a later evaluation
	}
	fs.running = true
	fs.wg.Add(1)
	fs.mu.Unlock()
	go func() {
		defer fs.wg.Done()
		r := e.traceFlows(fs.ctx, t, b, ids)
		<-e.rounds
		fs.mu.Lock()
		fs.running = false
		if fs.ctx.Err() == nil {
			fs.lastRound = r.At
		}
		repeat := r.Err != nil && r.Err.Error() == fs.lastErr
		had := fs.lastErr != ""
		if r.Err != nil {
			fs.lastErr = r.Err.Error()
		} else {
			fs.lastErr = ""
		}
		fs.mu.Unlock()
		if fs.ctx.Err() != nil {
			return
		}
		fs.rec.MemberPaths(r)
		log := e.log.Named("flows").With(zap.String("target_site", t.spec.TargetSite), zap.String("target", t.spec.Target),
			zap.String("protocol", t.spec.Protocol), zap.String("port", t.spec.PortLabel()), zap.String("path", t.spec.Path),
			zap.String("segment", t.spec.Segment))
		switch {
		case r.Err != nil && !repeat:
			log.Warn("cannot trace the member paths of the target's flows; retrying at the next round", zap.Error(r.Err))
		case r.Err == nil && had:
			log.Info("member paths of the target's flows traced again")
		case r.Err == nil:
			log.Debug("member paths of the target's flows traced", zap.Int("flows", r.Traced),
				zap.Int("member_paths", len(r.Paths.Paths)), zap.Ints("ambiguous", r.Paths.Ambiguous))
		}
	}()
}
