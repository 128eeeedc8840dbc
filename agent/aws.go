package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/awsstate"
	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter/awscollector"
)

// discoveryCheck is how often the discovered targets are compared with the
// ones planned, to re-plan when AWS shows a new or removed SiteLink VIF.
const discoveryCheck = 5 * time.Second

// awsPoller polls AWS while the mesh file has an aws: section; the
// collector stays registered and emits nothing without a poller.
type awsPoller struct {
	log    *zap.Logger
	coll   *awscollector.Collector
	replan func(context.Context)
	svc    service
	// afterRound gets the poller after each of its poll rounds (events).
	afterRound func(*awsstate.Poller)

	mu     sync.Mutex
	poller *awsstate.Poller
	last   string // the discovered targets last planned
}

func newAWSPoller(log *zap.Logger, reg prometheus.Registerer, replan func(context.Context)) *awsPoller {
	p := &awsPoller{log: log, coll: awscollector.New(), replan: replan}
	reg.MustRegister(p.coll)
	return p
}

func (p *awsPoller) stop() { p.svc.halt() }

// settings is what the poller runs with: a change restarts it.
func settings(cfg *config.Config, site string) string {
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

// apply starts, restarts (the aws: section or the sites changed) or stops
// polling.
func (p *awsPoller) apply(ctx context.Context, cfg *config.Config, site string) error {
	if cfg.AWS == nil {
		if p.svc.stop != nil {
			p.log.Info("aws: section removed; AWS polling stopped")
		}
		p.svc.halt()
		return nil
	}
	return p.svc.apply(settings(cfg, site), func() (func(), error) {
		var pl *awsstate.Poller
		pl, err := awsstate.New(ctx, awsstate.Options{Config: cfg.AWS, Sites: cfg.Sites, Site: site, Logger: p.log,
			AfterRound: func() { p.afterRound(pl) }}) // called from pl.Run, started below
		if err != nil {
			return nil, fmt.Errorf("starting AWS polling: %w", err)
		}
		p.mu.Lock()
		p.poller, p.last = pl, ""
		p.mu.Unlock()
		p.coll.Set(pl)
		runCtx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); pl.Run(runCtx) }()
		if cfg.AWS.Discovery.Enabled {
			wg.Add(1)
			go func() { defer wg.Done(); p.watch(runCtx, cfg, site) }()
		}
		p.log.Info("AWS polling started", zap.Bool("poll_all", cfg.AWS.PollAll), zap.Bool("discovery", cfg.AWS.Discovery.Enabled),
			zap.Duration("interval", cfg.AWS.Interval.D()))
		return func() {
			cancel()
			wg.Wait()
			p.coll.Set(nil)
			p.mu.Lock()
			p.poller = nil
			p.mu.Unlock()
		}, nil
	})
}

// current is the running poller (nil without polling).
func (p *awsPoller) current() *awsstate.Poller {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.poller
}

// discovered is what discovery found for cfg's plan at site (nothing
// without a running poller or with discovery off).
func (p *awsPoller) discovered(cfg *config.Config, site string) []config.Discovered {
	p.mu.Lock()
	pl := p.poller
	p.mu.Unlock()
	if pl == nil || cfg.AWS == nil || !cfg.AWS.Discovery.Enabled {
		return nil
	}
	return awsstate.Targets(pl.Discovered(), cfg, site)
}

// watch re-plans when the discovered targets change.
func (p *awsPoller) watch(ctx context.Context, cfg *config.Config, site string) {
	t := time.NewTicker(discoveryCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		found := p.discovered(cfg, site)
		keys := make([]string, len(found))
		for i, d := range found {
			keys[i] = d.Site + "|" + d.Address + "|" + d.Segment
		}
		slices.Sort(keys)
		k, _ := json.Marshal(keys)
		p.mu.Lock()
		changed := string(k) != p.last
		p.last = string(k)
		p.mu.Unlock()
		if changed {
			p.log.Info("SiteLink discovery changed the target list", zap.Int("discovered", len(found)))
			// Not inline: the re-plan may restart this poller and wait
			// for this very goroutine.
			go p.replan(context.Background())
		}
	}
}

// DiscoverTargets runs one discovery pass for check-config, bounded by
// aws.timeout.
func DiscoverTargets(ctx context.Context, cfg *config.Config, site string, log *zap.Logger) ([]config.Discovered, error) {
	if cfg.AWS == nil || !cfg.AWS.Discovery.Enabled {
		return nil, nil
	}
	plan, err := cfg.Plan(site)
	if err != nil {
		return nil, err
	}
	pl, err := awsstate.New(ctx, awsstate.Options{Config: cfg.AWS, Sites: cfg.Sites, Site: plan.Site, Logger: log})
	if err != nil {
		return nil, err
	}
	found, err := pl.Discover(ctx)
	if err != nil {
		return nil, err
	}
	return awsstate.Targets(found, cfg, plan.Site), nil
}
