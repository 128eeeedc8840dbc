package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter/pathmetrics"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/trace"
)

// pathFeature runs path discovery (every trace.interval) and path MTU
// searches (every mtu.interval) for the plan's targets that ask for them,
// feeds pathmetrics and serves GET /paths.
type pathFeature struct {
	log  *zap.Logger
	set  *pathmetrics.Set
	life context.Context // the daemon's lifetime: jobs outlive an Apply call

	mu     sync.Mutex
	tracer *trace.Tracer
	prober *pmtu.Prober
	jobs   map[string]*pathJob
	wg     sync.WaitGroup
}

// pathJob is one target's trace or MTU loop.
type pathJob struct {
	sig    string // the settings it runs with: a change restarts it
	cancel context.CancelFunc
}

// newPathFeature registers the path collectors and /paths. Sockets are
// opened on the first Apply that needs them, so a mesh without trace or mtu
// targets never asks for raw sockets.
func newPathFeature(ctx context.Context, d *deps) feature {
	f := &pathFeature{log: d.Logger.Named("paths"), set: pathmetrics.New(), life: ctx, jobs: map[string]*pathJob{}}
	if d.Registry != nil {
		if err := d.Registry.Register(f.set); err != nil {
			f.log.Error("registering path metrics", zap.Error(err))
		}
	}
	if d.Mux != nil {
		d.Mux.Handle("/paths", f.set.Handler())
	}
	go func() {
		<-ctx.Done()
		f.close()
	}()
	return f
}

// close stops every job and closes the sockets.
func (f *pathFeature) close() {
	f.mu.Lock()
	for k, j := range f.jobs {
		j.cancel()
		delete(f.jobs, k)
	}
	f.mu.Unlock()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tracer != nil {
		f.tracer.Close()
		f.tracer = nil
	}
	if f.prober != nil {
		f.prober.Close()
		f.prober = nil
	}
}

// Apply starts, restarts and stops jobs to match the plan.
func (f *pathFeature) Apply(_ context.Context, cfg *config.Config, plan *config.Plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.life.Err() != nil {
		return nil
	}
	want := map[string]string{} // job key -> settings signature
	specs := map[string]config.ProbeSpec{}
	traced, mtud := map[string]bool{}, map[string]bool{}
	for _, s := range plan.Probes {
		// Guards are expected not to answer: tracing them would only
		// report a broken path.
		if s.Guard {
			continue
		}
		k := s.Key()
		if s.Trace {
			want["trace|"+k] = fmt.Sprint(s.Target, s.Family, s.Source, s.Interface, s.TOS, s.Timeout, cfg.Trace.Interval, cfg.Trace.Method,
				cfg.Trace.Port, cfg.Trace.MaxTTL, cfg.Trace.ProbesPerHop)
			traced[k] = true
		}
		if s.MTU {
			want["mtu|"+k] = fmt.Sprint(s.Target, s.Family, s.Source, s.Interface, s.TOS, s.Timeout, cfg.MTU.Interval, *cfg.MTU.Retries)
			mtud[k] = true
		}
		specs[k] = s
	}
	var errs []error
	if len(traced) > 0 && f.tracer == nil {
		t, err := trace.New(cfg.Trace.PPS)
		if err != nil {
			errs = append(errs, fmt.Errorf("starting path discovery: %w", err))
		}
		f.tracer = t
	} else if f.tracer != nil {
		f.tracer.SetPPS(cfg.Trace.PPS)
	}
	if len(mtud) > 0 && f.prober == nil {
		p, err := pmtu.New()
		if err != nil {
			errs = append(errs, fmt.Errorf("starting path MTU probing: %w", err))
		}
		f.prober = p
	}
	for k, j := range f.jobs {
		if want[k] != j.sig {
			j.cancel()
			delete(f.jobs, k)
		}
	}
	f.set.Retain(func(k string) bool { return traced[k] || mtud[k] })
	for k := range specs {
		if !traced[k] {
			f.set.ForgetPath(k)
		}
		if !mtud[k] {
			f.set.ForgetMTU(k)
		}
	}
	tc, mc := cfg.Trace, cfg.MTU
	for jk, sig := range want {
		if _, running := f.jobs[jk]; running {
			continue
		}
		kind, k, _ := strings.Cut(jk, "|")
		s := specs[k]
		var run func(context.Context)
		switch {
		case kind == "trace" && f.tracer != nil:
			tr := f.tracer
			run = func(ctx context.Context) { f.traceLoop(ctx, s, tc, tr) }
		case kind == "mtu" && f.prober != nil:
			pr := f.prober
			run = func(ctx context.Context) { f.mtuLoop(ctx, s, mc, pr) }
		default:
			continue // its sockets failed to open (reported above); the next Apply retries
		}
		ctx, cancel := context.WithCancel(f.life)
		f.jobs[jk] = &pathJob{sig: sig, cancel: cancel}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			run(ctx)
		}()
	}
	return errors.Join(errs...)
}

func labelsOf(s *config.ProbeSpec) pathmetrics.Labels {
	return pathmetrics.Labels{SourceSite: s.SourceSite, TargetSite: s.TargetSite, Target: s.Target, Path: s.Path,
		Segment: s.Segment, Protocol: s.Protocol, Port: s.PortLabel()}
}

func specFields(s *config.ProbeSpec) []zap.Field {
	return []zap.Field{zap.String("target_site", s.TargetSite), zap.String("target", s.Target), zap.String("path", s.Path), zap.String("segment", s.Segment)}
}

// every runs f now (after a small spread, so a reload does not start every
// target in the same millisecond) and then every interval, until ctx ends.
func every(ctx context.Context, key string, interval time.Duration, f func(context.Context)) {
	h := fnv.New32a()
	h.Write([]byte(key))
	spread := min(interval, time.Second)
	next := time.Now().Add(time.Duration(h.Sum32()) % spread)
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		start := time.Now()
		f(ctx)
		next = start.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now // a round longer than the interval: go again at once
		}
	}
}

// resolve returns the address to trace: the literal, or the first address
// DNS gives in the target's family.
func resolve(ctx context.Context, s *config.ProbeSpec) (netip.Addr, error) {
	if a, err := netip.ParseAddr(s.Target); err == nil {
		return a.Unmap(), nil
	}
	network := "ip"
	if s.Family != "" {
		network = s.Family
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(rctx, network, s.Target)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving %s: %w", s.Target, err)
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("resolving %s: no addresses", s.Target)
	}
	return ips[0].Unmap(), nil
}

func sourceOf(s *config.ProbeSpec) netip.Addr {
	a, _ := netip.ParseAddr(s.Source) // validated by config; "" gives the zero Addr
	return a.Unmap()
}

// flowOf gives each target its own constant flow identifier, so two
// targets with the same address (another source, another TOS) are told
// apart and each keeps one ECMP path across rounds.
func flowOf(s *config.ProbeSpec) uint16 {
	h := fnv.New32a()
	h.Write([]byte(s.Key()))
	return uint16(49152 + h.Sum32()%16384)
}

// failLog logs a job's failures once per distinct error and its recovery,
// not every round.
type failLog struct {
	log  *zap.Logger
	last string
}

func (l *failLog) fail(msg string, err error, fields []zap.Field) {
	if err.Error() == l.last {
		return
	}
	l.last = err.Error()
	l.log.Warn(msg, append(fields, zap.Error(err))...)
}

func (l *failLog) ok(msg string, fields []zap.Field) {
	if l.last != "" {
		l.last = ""
		l.log.Info(msg, fields...)
	}
}

func (f *pathFeature) traceLoop(ctx context.Context, s config.ProbeSpec, tc config.TraceConfig, tr *trace.Tracer) {
	key, labels, fields := s.Key(), labelsOf(&s), specFields(&s)
	fl := failLog{log: f.log}
	every(ctx, "trace|"+key, tc.Interval.D(), func(ctx context.Context) {
		dst, err := resolve(ctx, &s)
		if err != nil {
			fl.fail("path discovery failed", err, fields)
			return
		}
		p, err := tr.Trace(ctx, trace.Target{Dst: dst, Src: sourceOf(&s), Interface: s.Interface, Method: tc.Method, Port: tc.Port, Flow: flowOf(&s),
			MaxTTL: tc.MaxTTL, ProbesPerHop: tc.ProbesPerHop, Timeout: s.Timeout, TOS: s.TOS})
		if err != nil {
			if ctx.Err() == nil {
				fl.fail("path discovery failed", err, fields)
			}
			return
		}
		fl.ok("path discovery works again", fields)
		obs := pathmetrics.Trace{Reached: p.Reached, At: p.Start}
		for i := range p.Hops {
			h := &p.Hops[i]
			ph := pathmetrics.Hop{RTT: h.RTT(), Sent: h.Sent, Received: h.Received}
			if !h.Silent() {
				ph.Addr = h.Addr.String()
			}
			obs.Hops = append(obs.Hops, ph)
		}
		if ch, changed := f.set.ObserveTrace(key, labels, obs); changed {
			f.log.Info("path changed", append(fields, zap.Strings("old", ch.Old), zap.Strings("new", ch.New))...)
		}
	})
}

func (f *pathFeature) mtuLoop(ctx context.Context, s config.ProbeSpec, mc config.MTUConfig, pr *pmtu.Prober) {
	key, labels, fields := s.Key(), labelsOf(&s), specFields(&s)
	fl := failLog{log: f.log}
	last := pmtu.Result{}
	every(ctx, "mtu|"+key, mc.Interval.D(), func(ctx context.Context) {
		dst, err := resolve(ctx, &s)
		if err != nil {
			fl.fail("path MTU search failed", err, fields)
			return
		}
		r, err := pr.Search(ctx, pmtu.Target{Dst: dst, Src: sourceOf(&s), Interface: s.Interface, Timeout: s.Timeout, Retries: *mc.Retries, TOS: s.TOS})
		if err != nil {
			if ctx.Err() == nil {
				fl.fail("path MTU search failed", err, fields)
			}
			return
		}
		if !r.Reached {
			// Not even the smallest size was answered: the target is
			// down or drops echo; the probe metrics tell which. Keep
			// the last MTU rather than report a fake one.
			fl.fail("path MTU search got no answer", fmt.Errorf("no answer to %d-byte probes", pmtu.DefaultMin), fields)
			return
		}
		fl.ok("path MTU search works again", fields)
		f.set.ObserveMTU(key, labels, r.MTU, r.Blackhole, time.Now())
		switch {
		case r.Blackhole && !last.Blackhole:
			f.log.Warn("MTU black hole: packets above the path MTU vanish without Fragmentation Needed / Packet Too Big",
				append(fields, zap.Int("mtu_bytes", r.MTU))...)
		case !r.Blackhole && last.Blackhole:
			f.log.Info("MTU black hole is gone", append(fields, zap.Int("mtu_bytes", r.MTU))...)
		}
		if last.MTU != 0 && last.MTU != r.MTU {
			f.log.Info("path MTU changed", append(fields, zap.Int("old_bytes", last.MTU), zap.Int("new_bytes", r.MTU))...)
		}
		last = r
	})
}
