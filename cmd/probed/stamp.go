package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter/stampmetrics"
	"github.com/probed/probed/probe/stamp"
)

// stampFeature runs the STAMP session-reflector (when stamp.reflector.enabled)
// and one session-sender per STAMP probe of the plan (targets marked
// stamp: true, plus the other sites' agents with stamp.probe_agents).
type stampFeature struct {
	ctx     context.Context
	log     *zap.Logger
	metrics *stampmetrics.Metrics

	mu      sync.Mutex
	senders map[string]*stampSender
	refl    *stampReflector
	// current serves the reflector collector; nil while none runs.
	current atomic.Pointer[stamp.Reflector]
	site    atomic.Pointer[string] // the plan's site, for the reflector's label
}

type stampSender struct {
	spec   config.ProbeSpec
	ident  string // everything that needs a restart when it changes
	cancel context.CancelFunc
	done   chan struct{}
}

type stampReflector struct {
	ident  string
	r      *stamp.Reflector
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newSTAMPFeature(ctx context.Context, d *deps) feature {
	f := &stampFeature{
		ctx:     ctx,
		log:     d.Logger.With(zap.String("feature", "stamp")),
		metrics: stampmetrics.New(d.Registry),
		senders: map[string]*stampSender{},
	}
	site := d.Site
	f.site.Store(&site)
	d.Registry.MustRegister(stampmetrics.NewReflectorCollector(func() string { return *f.site.Load() }, func() stamp.ReflectorStats {
		if r := f.current.Load(); r != nil {
			return r.Stats()
		}
		return stamp.ReflectorStats{}
	}))
	go func() {
		<-ctx.Done()
		f.stopAll()
	}()
	return f
}

// Apply starts, restarts and stops the reflector and the senders to match cfg.
func (f *stampFeature) Apply(ctx context.Context, cfg *config.Config, plan *config.Plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	site := plan.Site
	f.site.Store(&site)
	mode, key := stamp.Unauthenticated, (*stamp.Key)(nil)
	if k := cfg.STAMP.Key(); k != nil {
		var err error
		if key, err = stamp.NewKey(k); err != nil {
			return fmt.Errorf("STAMP key from %s: %w", cfg.STAMP.AuthKeyFile, err)
		}
		mode = stamp.Authenticated
	}
	if err := f.applyReflector(cfg, mode, key); err != nil {
		return err
	}
	f.applySenders(cfg, plan, mode, key)
	return nil
}

func (f *stampFeature) applyReflector(cfg *config.Config, mode stamp.Mode, key *stamp.Key) error {
	rc := &cfg.STAMP.Reflector
	if !rc.Enabled {
		f.stopReflector()
		return nil
	}
	allow, err := stamp.NewAllowList(cfg.STAMPAllowedSources())
	if err != nil {
		return fmt.Errorf("STAMP reflector allow-list: %w", err)
	}
	ident := fmt.Sprintf("%v|%s|%x|%g|%d|%s", rc.Listen, mode, cfg.STAMP.Key(), rc.RateLimit, rc.Burst, rc.SessionTimeout.D())
	if f.refl != nil && f.refl.ident == ident {
		f.refl.r.SetAllow(allow) // the mesh changed: new sources, same sockets
		return nil
	}
	r, err := stamp.NewReflector(stamp.ReflectorConfig{
		Mode: mode, Key: key, Allow: allow, RateLimit: rc.RateLimit, Burst: rc.Burst,
		SessionTimeout: rc.SessionTimeout.D(),
	})
	if err != nil {
		return fmt.Errorf("STAMP reflector: %w", err)
	}
	// Release the old sockets first: the new ones bind the same ports.
	f.stopReflector()
	ctx, cancel := context.WithCancel(f.ctx)
	sr := &stampReflector{ident: ident, r: r, cancel: cancel}
	var conns []*net.UDPConn
	for _, addr := range rc.Listen {
		network := "udp4"
		if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is6() {
			network = "udp6"
		}
		c, err := stamp.Listen(ctx, network, addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			cancel()
			return err
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		sr.wg.Add(1)
		go func() {
			defer sr.wg.Done()
			if err := r.Serve(ctx, c); err != nil {
				f.log.Error("STAMP reflector stopped", zap.Stringer("listen", c.LocalAddr()), zap.Error(err))
			}
		}()
	}
	f.refl = sr
	f.current.Store(r)
	f.log.Info("STAMP reflector listening", zap.Strings("listen", rc.Listen), zap.Stringer("mode", mode),
		zap.Int("allowed_sources", allow.Len()), zap.Float64("rate_limit", rc.RateLimit))
	return nil
}

func (f *stampFeature) stopReflector() {
	if f.refl == nil {
		return
	}
	f.refl.cancel()
	f.refl.wg.Wait()
	f.refl = nil
	f.current.Store(nil)
}

func (f *stampFeature) applySenders(cfg *config.Config, plan *config.Plan, mode stamp.Mode, key *stamp.Key) {
	var specs []config.ProbeSpec
	for _, p := range plan.Probes {
		if p.Protocol == config.ProtoSTAMP {
			specs = append(specs, p)
		}
	}
	specs = append(specs, cfg.STAMPAgentSpecs(plan)...)
	want := map[string]bool{}
	for i := range specs {
		spec := specs[i]
		k := spec.Key()
		want[k] = true
		ident := fmt.Sprintf("%s|%s|%s|%d|%s|%x|%d", k, spec.Interval, spec.Timeout, spec.Size, mode, cfg.STAMP.Key(), plan.LossWindow)
		if old, ok := f.senders[k]; ok {
			if old.ident == ident {
				continue
			}
			// Restarted with the new settings; the series (keyed by
			// labels) keep their values.
			old.cancel()
			<-old.done
		}
		f.senders[k] = f.startSender(spec, ident, mode, key, plan.LossWindow)
	}
	for k, s := range f.senders {
		if !want[k] {
			s.cancel()
			<-s.done
			f.metrics.Forget(&s.spec)
			delete(f.senders, k)
		}
	}
}

func (f *stampFeature) startSender(spec config.ProbeSpec, ident string, mode stamp.Mode, key *stamp.Key, window int) *stampSender {
	ctx, cancel := context.WithCancel(f.ctx)
	s := &stampSender{spec: spec, ident: ident, cancel: cancel, done: make(chan struct{})}
	obs := f.metrics.Session(&spec)
	log := f.log.With(zap.String("target_site", spec.TargetSite), zap.String("target", spec.Target), zap.Uint16("port", spec.Port))
	go func() {
		defer close(s.done)
		backoff := time.Second
		for ctx.Err() == nil {
			snd, err := stamp.NewSender(stamp.SenderConfig{
				Target: spec.Target, Port: spec.Port, Family: spec.Family, Source: spec.Source, Interface: spec.Interface,
				TOS: spec.TOS, Interval: spec.Interval, Timeout: spec.Timeout, Size: spec.Size,
				Mode: mode, Key: key, VariationWindow: window, Observer: obs,
			})
			if err == nil {
				log.Debug("STAMP session starting", zap.Uint16("ssid", snd.SSID()))
				if err = snd.Run(ctx); err == nil {
					return
				}
			}
			// Resolution or socket errors: retry, as the ICMP prober does.
			obs.Error("open")
			log.Warn("STAMP session failed; retrying", zap.Error(err), zap.Duration("in", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
		}
	}()
	return s
}

func (f *stampFeature) stopAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, s := range f.senders {
		s.cancel()
		<-s.done
		delete(f.senders, k)
	}
	f.stopReflector()
}

// String lists the running sessions (debugging).
func (f *stampFeature) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := make([]string, 0, len(f.senders))
	for k := range f.senders {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}
