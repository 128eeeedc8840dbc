package probe

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/inet"
	"github.com/probed/probed/probe/ecmp"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/trace"
)

// pathSockets are the sockets every trace job (the tracer) and every MTU
// job (the prober) share: opened by the first job bound, closed with the
// last, so a mesh without path work never asks for raw sockets.
type pathSockets struct {
	e *Engine

	mu      sync.Mutex
	pps     int
	tracer  Tracer
	traces  int
	prober  MTUProber
	probers int
}

func (s *pathSockets) setPPS(pps int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pps = pps
	if s.tracer != nil {
		s.tracer.SetPPS(pps)
	}
}

func (s *pathSockets) acquire(k config.Kind) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k == config.KindTrace {
		if s.tracer == nil {
			t, err := s.e.socks.Tracer(s.pps)
			if err != nil {
				return fmt.Errorf("opening the path discovery sockets: %w", err)
			}
			s.tracer = t
		}
		s.traces++
		return nil
	}
	if s.prober == nil {
		p, err := s.e.socks.MTU()
		if err != nil {
			return fmt.Errorf("opening the path MTU sockets: %w", err)
		}
		s.prober = p
	}
	s.probers++
	return nil
}

func (s *pathSockets) release(k config.Kind) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k == config.KindTrace {
		if s.traces--; s.traces == 0 && s.tracer != nil {
			_ = s.tracer.Close()
			s.tracer = nil
		}
		return
	}
	if s.probers--; s.probers == 0 && s.prober != nil {
		_ = s.prober.Close()
		s.prober = nil
	}
}

func (s *pathSockets) get() (Tracer, MTUProber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tracer, s.prober
}

func (s *pathSockets) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tracer != nil {
		_ = s.tracer.Close()
	}
	if s.prober != nil {
		_ = s.prober.Close()
	}
	s.tracer, s.prober, s.traces, s.probers = nil, nil, 0, 0
}

// pathJob is one target's path discovery or path MTU search. Each slot
// starts a round unless the previous one is still running (a round can
// take several seconds).
type pathJob struct {
	e      *Engine
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	log    *zap.Logger

	mu      sync.Mutex
	running bool
	lastErr string      // the failure logged last, so a failing job logs once
	last    pmtu.Result // MTU: the previous result
}

func newPathJob(e *Engine, t *target) *pathJob {
	ctx, cancel := context.WithCancel(e.life)
	s := t.spec
	log := e.log.Named("paths").With(zap.String("target_site", s.TargetSite), zap.String("target", s.Target),
		zap.String("path", s.Path), zap.String("segment", s.Segment))
	return &pathJob{e: e, ctx: ctx, cancel: cancel, log: log}
}

func (j *pathJob) bind(t *target, ip netip.Addr) (*binding, error) {
	if err := j.e.shared.acquire(t.spec.Kind); err != nil {
		return nil, err
	}
	return &binding{ip: ip}, nil
}

func (j *pathJob) unbind(t *target, _ *binding) { j.e.shared.release(t.spec.Kind) }

func (j *pathJob) unsent(t *target, r Reason) { j.e.paths.Failed(t.spec, r, nil) }

func (j *pathJob) stop(*target) {
	j.cancel()
	j.wg.Wait()
}

func (j *pathJob) fire(t *target, b *binding) {
	j.mu.Lock()
	if j.running {
		j.mu.Unlock()
		return
	}
	j.running = true
	j.mu.Unlock()
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		if t.spec.Kind == config.KindTrace {
			j.trace(t, b.ip)
		} else {
			j.mtu(t, b.ip)
		}
		j.mu.Lock()
		j.running = false
		j.mu.Unlock()
	}()
}

func (j *pathJob) trace(t *target, dst netip.Addr) {
	tr, _ := j.e.shared.get()
	if tr == nil {
		return
	}
	s := t.spec
	o := s.TraceOpts
	p, err := tr.Trace(j.ctx, trace.Target{Dst: dst, Src: sourceOf(s), Interface: s.Interface, Method: o.Method, Port: o.Port,
		Flow: flowOf(s), MaxTTL: o.MaxTTL, ProbesPerHop: o.ProbesPerHop, Timeout: s.Timeout, TOS: s.TOS})
	if err != nil {
		if j.ctx.Err() == nil {
			j.fail(t, "path discovery failed", err)
		}
		return
	}
	j.ok("path discovery works again")
	j.e.paths.ObserveTrace(s, p)
}

func (j *pathJob) mtu(t *target, dst netip.Addr) {
	_, pr := j.e.shared.get()
	if pr == nil {
		return
	}
	s := t.spec
	r, err := pr.Search(j.ctx, pmtu.Target{Dst: dst, Src: sourceOf(s), Interface: s.Interface, Timeout: s.Timeout,
		Retries: s.MTUOpts.Retries, TOS: s.TOS})
	if err != nil {
		if j.ctx.Err() == nil {
			j.fail(t, "path MTU search failed", err)
		}
		return
	}
	if !r.Reached {
		// Not even the smallest size was answered: the target is down
		// or drops echo; the probe metrics tell which. Keep the last
		// MTU rather than report a fake one.
		floor := pmtu.MinIPv4
		if dst.Is6() {
			floor = pmtu.MinIPv6
		}
		j.fail(t, "path MTU search got no answer", fmt.Errorf("%w down to %d bytes", errNoMTUAnswer, floor))
		return
	}
	j.ok("path MTU search works again")
	j.e.paths.ObserveMTU(s, r)
	j.mu.Lock()
	last := j.last
	j.last = r
	j.mu.Unlock()
	switch {
	case r.Blackhole && !last.Blackhole:
		j.log.Warn("MTU black hole: packets above the path MTU vanish without Fragmentation Needed / Packet Too Big",
			zap.Int("mtu_bytes", r.MTU))
	case !r.Blackhole && last.Blackhole:
		j.log.Info("MTU black hole is gone", zap.Int("mtu_bytes", r.MTU))
	}
	if last.MTU != 0 && last.MTU != r.MTU {
		j.log.Info("path MTU changed", zap.Int("old_bytes", last.MTU), zap.Int("new_bytes", r.MTU))
	}
}

var errNoMTUAnswer = errors.New("no answer to probes of any size")

// fail reports a round without result, logging a failure once per distinct
// error rather than every round.
func (j *pathJob) fail(t *target, msg string, err error) {
	r := ReasonSendError
	var opErr *net.OpError
	switch {
	case errors.Is(err, errNoMTUAnswer):
		r = ReasonTimeout
	case errors.As(err, &opErr) && opErr.Op == "route":
		// net.InterfaceByName: the bound interface does not exist.
		r = ReasonBind
	}
	j.e.paths.Failed(t.spec, r, err)
	j.mu.Lock()
	repeat := err.Error() == j.lastErr
	j.lastErr = err.Error()
	j.mu.Unlock()
	if !repeat {
		j.log.Warn(msg, zap.Error(err))
	}
}

func (j *pathJob) ok(msg string) {
	j.mu.Lock()
	had := j.lastErr != ""
	j.lastErr = ""
	j.mu.Unlock()
	if had {
		j.log.Info(msg)
	}
}

func sourceOf(s *config.ProbeSpec) netip.Addr {
	a, _ := netip.ParseAddr(s.Source) // validated by config; "" gives the zero Addr
	return a.Unmap()
}

// flowOf gives each probe its own constant flow identifier, so two targets
// with the same address (another source, another TOS) are told apart and
// each keeps one ECMP path across rounds.
func flowOf(s *config.ProbeSpec) uint16 {
	h := fnv.New32a()
	h.Write([]byte(s.ProbeKey()))
	return inet.FlowID(h.Sum32())
}

// traceFlows is one member-path round of a multi-flow job (flows.go):
// a Paris trace of every flow with that flow's exact identity — ICMP echo
// with the flow's identifier (and a constant checksum), or TCP SYNs from
// the flow's source port to the job's port — so each trace follows the
// member path the flow's probes take; then the traces are grouped into
// member paths (ecmp.GroupPaths). The tracer's packets-per-second budget
// (trace.pps) paces them with every other trace.
func (e *Engine) traceFlows(ctx context.Context, t *target, b *binding, ids []uint16) MemberPathReport {
	r := MemberPathReport{Traced: len(ids)}
	if err := e.shared.acquire(config.KindTrace); err != nil {
		r.At, r.Err = time.Now(), err
		return r
	}
	defer e.shared.release(config.KindTrace)
	tr, _ := e.shared.get()
	if tr == nil {
		r.At, r.Err = time.Now(), errors.New("the path discovery sockets are closed")
		return r
	}
	s := t.spec
	method := trace.ICMP
	if s.Kind == config.KindTCP {
		method = trace.TCP
	} else {
		// Their echo replies and ICMP errors reach the echo prober's raw
		// sockets with our flow identifiers: skipped there, not counted.
		e.icmp.markTracing(ids, true)
		defer time.AfterFunc(s.Timeout+time.Second, func() { e.icmp.markTracing(ids, false) })
	}
	traces := make([]ecmp.Trace, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	work := make(chan int)
	for range min(tracesPerRound, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				traces[i].Flow = i
				if method == trace.TCP {
					if err := t.flows.afterProbe(ctx, e, t, i); err != nil {
						errs[i] = err
						continue
					}
				}
				p, err := tr.Trace(ctx, trace.Target{Dst: b.ip, Src: sourceOf(s), Interface: s.Interface, Method: method,
					Port: s.Port, Flow: ids[i], MaxTTL: s.TraceOpts.MaxTTL, ProbesPerHop: s.TraceOpts.ProbesPerHop,
					Timeout: s.Timeout, TOS: s.TOS})
				if err != nil {
					errs[i] = err
					continue
				}
				traces[i] = memberTrace(i, p)
			}
		}()
	}
	for i := range ids {
		if ctx.Err() != nil {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	r.At = time.Now()
	if err := ctx.Err(); err != nil {
		r.Err = err
		return r
	}
	ok := traces[:0:0]
	for i := range traces {
		if errs[i] == nil {
			ok = append(ok, traces[i])
		}
	}
	if len(ok) == 0 {
		r.Err = errors.Join(errs...)
		return r
	}
	// A flow whose trace failed is in no path (listed as ambiguous).
	r.Paths = ecmp.GroupPaths(ok)
	for i := range traces {
		if errs[i] != nil {
			r.Paths.Ambiguous = append(r.Paths.Ambiguous, i)
		}
	}
	slices.Sort(r.Paths.Ambiguous)
	return r
}

// memberTrace is a flow's trace as ecmp.GroupPaths reads it. A target
// that answered only after silent hops gives no evidence of its distance
// (on a lossy member every probe of the target's own TTL can be lost, and
// the next TTL answers: paths.md, "Path changes"): the trace then ends at
// its last answering router, not reached, and fits the member path of any
// length that it does not contradict.
func memberTrace(flow int, p *trace.Path) ecmp.Trace {
	t := ecmp.Trace{Flow: flow, Reached: p.Reached}
	for _, h := range p.Hops {
		t.Hops = append(t.Hops, h.Addr)
	}
	if n := len(t.Hops); t.Reached && n >= 2 && !t.Hops[n-2].IsValid() {
		end := n - 1
		for end > 0 && !t.Hops[end-1].IsValid() {
			end--
		}
		t.Hops, t.Reached = t.Hops[:end], false
	}
	return t
}
