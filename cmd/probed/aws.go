package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/awsstate"
	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter/awscollector"
)

// awsFeature polls AWS while the mesh file has an aws: section. The
// collector stays registered; without a poller it emits nothing.
type awsFeature struct {
	ctx  context.Context
	log  *zap.Logger
	coll *awscollector.Collector

	mu       sync.Mutex
	poller   *awsstate.Poller
	stop     context.CancelFunc
	done     chan struct{}
	applied  string // fingerprint of the settings the poller runs with
	cfg      *config.Config
	site     string
	file     []config.ProbeSpec // the plan's own probes, for de-duplication
	onChange func()
	lastDisc string
}

// newAWSFeature registers the AWS collector; polling starts in Apply once a
// config with an aws: section arrives.
func newAWSFeature(ctx context.Context, d *deps) feature {
	f := &awsFeature{ctx: ctx, log: d.Logger.Named("aws"), coll: awscollector.New()}
	if d.Registry != nil {
		if err := d.Registry.Register(f.coll); err != nil {
			f.log.Error("registering the AWS collector failed", zap.Error(err))
		}
	}
	return f
}

// SetOnChange sets what to call when SiteLink discovery finds a different
// set of targets (the daemon re-plans, so Discovered is read again).
func (f *awsFeature) SetOnChange(fn func()) {
	f.mu.Lock()
	f.onChange = fn
	f.mu.Unlock()
}

func fingerprint(cfg *config.Config, site string) string {
	type siteKey struct{ Name, Region, Location string }
	var sites []siteKey
	for _, s := range cfg.Sites {
		sites = append(sites, siteKey{s.Name, s.Region, s.Location})
	}
	b, _ := json.Marshal(struct {
		AWS   *config.AWSConfig
		Sites []siteKey
		Site  string
	}{cfg.AWS, sites, site})
	return string(b)
}

// Apply starts, restarts (when the aws: section or the sites changed) or
// stops polling.
func (f *awsFeature) Apply(ctx context.Context, cfg *config.Config, plan *config.Plan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg, f.site = cfg, plan.Site
	f.file = f.file[:0]
	for _, p := range plan.Probes {
		if !p.Discovered {
			f.file = append(f.file, p)
		}
	}
	if cfg.AWS == nil {
		if f.poller != nil {
			f.log.Info("aws: section removed; AWS polling stopped")
		}
		f.stopLocked()
		return nil
	}
	fp := fingerprint(cfg, plan.Site)
	if f.poller != nil && fp == f.applied {
		return nil
	}
	p, err := awsstate.New(f.ctx, awsstate.Options{Config: cfg.AWS, Sites: cfg.Sites, Site: plan.Site, Logger: f.log})
	if err != nil {
		return fmt.Errorf("starting AWS polling: %w", err)
	}
	f.stopLocked()
	runCtx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	f.poller, f.stop, f.done, f.applied = p, cancel, done, fp
	f.coll.Set(p)
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); p.Run(runCtx) }()
		if cfg.AWS.Discovery.Enabled {
			f.watchDiscovery(runCtx)
		}
		wg.Wait()
	}()
	f.log.Info("AWS polling started", zap.Bool("poll_all", cfg.AWS.PollAll), zap.Bool("discovery", cfg.AWS.Discovery.Enabled),
		zap.Duration("interval", cfg.AWS.Interval.D()))
	return nil
}

// stopLocked ends the running poller and waits for it (caller holds f.mu).
func (f *awsFeature) stopLocked() {
	f.coll.Set(nil)
	if f.stop != nil {
		f.stop()
		<-f.done
	}
	f.poller, f.stop, f.done, f.applied = nil, nil, nil, ""
}

// watchDiscovery calls onChange when the discovered targets change.
func (f *awsFeature) watchDiscovery(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		specs := f.Discovered()
		keys := make([]string, len(specs))
		for i := range specs {
			keys[i] = specs[i].Key()
		}
		slices.Sort(keys)
		k, _ := json.Marshal(keys)
		f.mu.Lock()
		changed := string(k) != f.lastDisc
		f.lastDisc = string(k)
		fn := f.onChange
		f.mu.Unlock()
		if changed && fn != nil {
			f.log.Info("SiteLink discovery changed the target list", zap.Int("discovered", len(specs)))
			// Not inline: the re-plan calls Apply, which may stop this
			// very goroutine and wait for it.
			go fn()
		}
	}
}

// Discovered returns the SiteLink targets AWS discovery found that the
// mesh file does not already list.
func (f *awsFeature) Discovered() []config.ProbeSpec {
	f.mu.Lock()
	p, cfg, site, file := f.poller, f.cfg, f.site, slices.Clone(f.file)
	f.mu.Unlock()
	if p == nil || cfg == nil || cfg.AWS == nil || !cfg.AWS.Discovery.Enabled {
		return nil
	}
	return awsstate.Targets(p.Discovered(), cfg, site, file)
}

// discoverTargets lists the targets AWS SiteLink discovery would add, for
// check-config: one discovery pass, bounded by aws.timeout.
func discoverTargets(ctx context.Context, cfg *config.Config, site string, logger *zap.Logger) ([]config.ProbeSpec, error) {
	if cfg.AWS == nil || !cfg.AWS.Discovery.Enabled {
		return nil, nil
	}
	plan, err := cfg.Plan(site)
	if err != nil {
		return nil, err
	}
	p, err := awsstate.New(ctx, awsstate.Options{Config: cfg.AWS, Sites: cfg.Sites, Site: plan.Site, Logger: logger})
	if err != nil {
		return nil, err
	}
	found, err := p.Discover(ctx)
	if err != nil {
		return nil, err
	}
	return awsstate.Targets(found, cfg, plan.Site, plan.Probes), nil
}
