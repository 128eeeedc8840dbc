package awsstate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/directconnect"
	"github.com/aws/aws-sdk-go-v2/service/networkmonitor"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
)

// Service names, as in the source label and the request counter.
const (
	ServiceDX         = "directconnect"
	ServiceNSM        = "networkmonitor"
	ServiceCloudWatch = "cloudwatch"
)

// Options configure a Poller.
type Options struct {
	Config *config.AWSConfig
	Sites  []config.Site
	// Site is the agent's own site; without aws.poll_all only resources
	// mapped to it are polled.
	Site   string
	Logger *zap.Logger
	// Now is the clock for staleness and CloudWatch windows (tests).
	Now func() time.Time
	// LoadOptions are appended to the SDK's default config loading, which
	// already honours AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL* and the
	// rest of the standard environment.
	LoadOptions []func(*awsconfig.LoadOptions) error
	// AfterRound, when set, is called after every poll round of one
	// service in one region (and every discovery pass), from the polling
	// goroutine: the moment a new Snapshot may differ. It must not block
	// for long (the event journal diffs snapshots here).
	AfterRound func()
}

// Poller polls AWS and keeps the state that Snapshot reports.
type Poller struct {
	opts   Options
	cfg    *config.AWSConfig
	log    *zap.Logger
	now    func() time.Time
	mapper *mapper
	counts *requestCounter

	mu         sync.Mutex
	accounts   []*account
	regions    map[regionKey]*regionState
	discovered []DiscoveredVIF
	discStatus status
	running    map[regionKey]bool
}

type account struct {
	name    string
	cfg     aws.Config
	regions []string // explicit, or nil for the mesh's regions
}

type regionKey struct{ account, region string }

// New builds a poller; it loads the SDK configuration (credentials are only
// fetched on the first request).
func New(ctx context.Context, opts Options) (*Poller, error) {
	if opts.Config == nil {
		return nil, fmt.Errorf("AWS polling needs an aws: section")
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Poller{opts: opts, cfg: opts.Config, log: opts.Logger, now: opts.Now,
		mapper: newMapper(opts.Config, opts.Sites, opts.Site), counts: newRequestCounter(),
		regions: map[regionKey]*regionState{}, running: map[regionKey]bool{}}
	if len(p.baseRegions(nil)) == 0 && len(p.cfg.Accounts) == 0 && !p.needsGateways() {
		return nil, fmt.Errorf("no AWS region to poll for site %q: set the site's region in the mesh file or list aws.regions", opts.Site)
	}
	home := p.homeRegion()
	base, err := awsconfig.LoadDefaultConfig(ctx, append([]func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(home)}, opts.LoadOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS SDK configuration: %w", err)
	}
	if len(p.cfg.Accounts) == 0 {
		p.accounts = []*account{{name: "", cfg: base}}
	}
	for _, a := range p.cfg.Accounts {
		c := base.Copy()
		stsClient := sts.NewFromConfig(base, func(o *sts.Options) {
			o.APIOptions = append(o.APIOptions, p.counts.countAttempts("sts"))
		})
		ext := a.ExternalID
		c.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, a.RoleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = "probed"
			if ext != "" {
				o.ExternalID = aws.String(ext)
			}
		}))
		p.accounts = append(p.accounts, &account{name: a.Name, cfg: c, regions: a.Regions})
	}
	return p, nil
}

// homeRegion is where global calls (STS, DX gateways) go: the own site's
// region, else the first region the mesh names.
func (p *Poller) homeRegion() string {
	for _, s := range p.opts.Sites {
		if s.Name == p.opts.Site && s.Region != "" {
			return s.Region
		}
	}
	if rs := p.baseRegions(nil); len(rs) > 0 {
		return rs[0]
	}
	return "us-east-1"
}

// baseRegions are the regions polled from the start: the own site's (or
// every site's with poll_all), aws.regions, or the account's own list.
func (p *Poller) baseRegions(acc *account) []string {
	if acc != nil && len(acc.regions) > 0 {
		return acc.regions
	}
	seen := map[string]bool{}
	var out []string
	add := func(r string) {
		if r != "" && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for _, s := range p.opts.Sites {
		if p.cfg.PollAll || s.Name == p.opts.Site {
			add(s.Region)
		}
	}
	for _, r := range p.cfg.Regions {
		add(r)
	}
	return out
}

// regionState is what one (account, region) poller knows.
type regionState struct {
	key regionKey
	dx  *directconnect.Client
	nsm *networkmonitor.Client
	cw  *cloudwatch.Client

	dxStatus, nsmStatus, cwStatus status

	conns   []Connection
	vifs    []VIF
	dxTime  time.Time
	probes  []NSMProbe
	nsmTime time.Time
	// lanes maps a connection to its OpticalLaneNumber values (from
	// ListMetrics); absent or empty: light levels without a lane.
	lanes     map[string][]string
	lanesTime time.Time
	points    map[string]Datapoint
}

// status tracks one poller's health and what has been logged about it.
type status struct {
	tried       bool
	up          bool
	lastSuccess time.Time
	lastErr     string
	lastOutcome string
	fails       int
}

func (p *Poller) state(acc *account, region string) *regionState {
	k := regionKey{acc.name, region}
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.regions[k]
	if rs == nil {
		rs = &regionState{key: k, points: map[string]Datapoint{}, lanes: map[string][]string{}}
		// Every operation of these clients is read-only, so an answer
		// cut off mid-body is retried (CutResponseError).
		rs.dx = directconnect.NewFromConfig(acc.cfg, func(o *directconnect.Options) {
			o.Region = region
			o.HTTPClient = retryCutResponses(o.HTTPClient)
			o.Logger = sdkLogger{p.log}
			o.APIOptions = append(o.APIOptions, p.counts.countAttempts(ServiceDX))
		})
		rs.nsm = networkmonitor.NewFromConfig(acc.cfg, func(o *networkmonitor.Options) {
			o.Region = region
			o.HTTPClient = retryCutResponses(o.HTTPClient)
			o.Logger = sdkLogger{p.log}
			o.APIOptions = append(o.APIOptions, p.counts.countAttempts(ServiceNSM))
		})
		rs.cw = cloudwatch.NewFromConfig(acc.cfg, func(o *cloudwatch.Options) {
			o.Region = region
			o.HTTPClient = retryCutResponses(o.HTTPClient)
			o.Logger = sdkLogger{p.log}
			o.APIOptions = append(o.APIOptions, p.counts.countAttempts(ServiceCloudWatch))
		})
		p.regions[k] = rs
	}
	return rs
}

// record updates a status after a poll and logs a failure once per kind
// (with what to fix), and the recovery.
func (p *Poller) record(st *status, service string, k regionKey, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st.tried = true
	fields := []zap.Field{zap.String("service", service), zap.String("region", k.region)}
	if k.account != "" {
		fields = append(fields, zap.String("account", k.account))
	}
	if err == nil {
		if !st.up && st.fails > 0 {
			p.log.Info("AWS polling recovered", fields...)
		}
		st.up, st.lastSuccess, st.lastErr, st.lastOutcome, st.fails = true, p.now(), "", "", 0
		return
	}
	outcome := Classify(err)
	if outcome == OutcomeCanceled {
		return
	}
	st.up = false
	st.fails++
	st.lastErr = err.Error()
	if outcome != st.lastOutcome {
		p.log.Warn("AWS polling failed; will retry with backoff",
			append(fields, zap.String("outcome", outcome), zap.Error(err), zap.String("fix", Hint(outcome)))...)
	} else {
		p.log.Debug("AWS polling still failing", append(fields, zap.String("outcome", outcome), zap.Error(err))...)
	}
	st.lastOutcome = outcome
}

// PollOnce runs one complete round synchronously: discovery (when
// configured), then every region's API and CloudWatch polls. Errors are
// recorded in the snapshot, not returned.
func (p *Poller) PollOnce(ctx context.Context) {
	if p.needsGateways() {
		p.discover(ctx)
	}
	var wg sync.WaitGroup
	for _, acc := range p.accounts {
		for _, r := range p.regionsOf(acc) {
			rs := p.state(acc, r)
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.pollAPI(ctx, rs)
				if p.cfg.CloudWatchEnabled() {
					p.pollCWRound(ctx, rs, true)
				}
			}()
		}
	}
	wg.Wait()
}

// needsGateways: the DX gateway attachments are read for discovery, and to
// find every region when one agent polls all.
func (p *Poller) needsGateways() bool {
	return len(p.cfg.DXGatewayIDs) > 0 && (p.cfg.Discovery.Enabled || p.cfg.PollAll)
}

// regionsOf lists the regions an account is polled in: the base regions
// plus, with poll_all, those of the gateways' attachments.
func (p *Poller) regionsOf(acc *account) []string {
	rs := p.baseRegions(acc)
	if p.cfg.PollAll && len(acc.regions) == 0 {
		p.mu.Lock()
		seen := map[string]bool{}
		for _, r := range rs {
			seen[r] = true
		}
		for _, d := range p.discovered {
			if d.Account == acc.name && !seen[d.Region] {
				seen[d.Region] = true
				rs = append(rs, d.Region)
			}
		}
		p.mu.Unlock()
	}
	sort.Strings(rs)
	return rs
}

// Run polls until ctx ends: each (account, region) on its own schedule, so
// a failing region or service never holds up another.
func (p *Poller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	startWorkers := func() {
		for _, acc := range p.accounts {
			for _, r := range p.regionsOf(acc) {
				k := regionKey{acc.name, r}
				p.mu.Lock()
				started := p.running[k]
				p.running[k] = true
				p.mu.Unlock()
				if started {
					continue
				}
				rs := p.state(acc, r)
				wg.Add(1)
				go func() {
					defer wg.Done()
					p.runRegion(ctx, rs)
				}()
			}
		}
	}
	if !p.needsGateways() {
		startWorkers()
		<-ctx.Done()
		return
	}
	interval := p.cfg.Discovery.Interval.D()
	for {
		p.discover(ctx)
		p.afterRound(ctx)
		startWorkers()
		p.mu.Lock()
		fails := p.discStatus.fails
		p.mu.Unlock()
		if !sleep(ctx, backoff(interval, fails)) {
			return
		}
	}
}

// afterRound calls Options.AfterRound, unless the poller is stopping (a
// round cut short by the end of ctx is no news).
func (p *Poller) afterRound(ctx context.Context) {
	if p.opts.AfterRound != nil && ctx.Err() == nil {
		p.opts.AfterRound()
	}
}

func (p *Poller) runRegion(ctx context.Context, rs *regionState) {
	// Spread agents and regions over the interval so seven agents do not
	// hit the API in the same second.
	if !sleep(ctx, time.Duration(rand.Int64N(int64(min(2*time.Second, p.cfg.Interval.D()))))) {
		return
	}
	// Each service keeps its own schedule and backoff: NSM denied or
	// CloudWatch throttled must not slow Direct Connect down.
	type job struct {
		on       bool
		run      func()
		st       *status
		interval time.Duration
		next     time.Time
	}
	jobs := []*job{
		{on: true, run: func() { p.pollDXRound(ctx, rs) }, st: &rs.dxStatus, interval: p.cfg.Interval.D()},
		{on: p.cfg.NSMEnabled(), run: func() { p.pollNSMRound(ctx, rs) }, st: &rs.nsmStatus, interval: p.cfg.Interval.D()},
		{on: p.cfg.CloudWatchEnabled(), run: func() { p.pollCWRound(ctx, rs, false) }, st: &rs.cwStatus, interval: p.cfg.MetricsInterval.D()},
	}
	for {
		var next time.Time
		for _, j := range jobs {
			if !j.on {
				continue
			}
			if !time.Now().Before(j.next) {
				j.run()
				p.afterRound(ctx)
				p.mu.Lock()
				fails := j.st.fails
				p.mu.Unlock()
				j.next = time.Now().Add(backoff(j.interval, fails))
			}
			if next.IsZero() || j.next.Before(next) {
				next = j.next
			}
		}
		if !sleep(ctx, time.Until(next)) {
			return
		}
	}
}

// backoff is the wait before the next poll: the interval, doubled for
// each consecutive failure up to 8 times it, with ±10% jitter.
func backoff(interval time.Duration, fails int) time.Duration {
	d := interval
	for i := 1; i < fails && d < 8*interval; i++ {
		d *= 2
	}
	d = min(d, 8*interval)
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Snapshot returns the current view, leaving out everything older than its
// staleness limit.
func (p *Poller) Snapshot() *Snapshot {
	now := p.now()
	s := &Snapshot{Taken: now, Requests: p.counts.snapshot()}
	p.mu.Lock()
	defer p.mu.Unlock()
	type agg struct {
		up    bool
		last  time.Time
		never bool
	}
	sources := map[string]*agg{}
	addSource := func(name string, st *status, k regionKey) {
		if !st.tried {
			return
		}
		a := sources[name]
		if a == nil {
			a = &agg{up: true}
			sources[name] = a
		}
		a.up = a.up && st.up
		if st.lastSuccess.IsZero() {
			a.never = true
		} else if a.last.IsZero() || st.lastSuccess.Before(a.last) {
			a.last = st.lastSuccess
		}
		s.Regions = append(s.Regions, RegionStatus{Account: k.account, Service: name, Region: k.region,
			Up: st.up, LastSuccess: st.lastSuccess, LastError: st.lastErr, Outcome: st.lastOutcome})
	}
	keys := make([]regionKey, 0, len(p.regions))
	for k := range p.regions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].account != keys[j].account {
			return keys[i].account < keys[j].account
		}
		return keys[i].region < keys[j].region
	})
	stale := p.cfg.StaleAfter.D()
	for _, k := range keys {
		rs := p.regions[k]
		addSource(ServiceDX, &rs.dxStatus, k)
		addSource(ServiceNSM, &rs.nsmStatus, k)
		addSource(ServiceCloudWatch, &rs.cwStatus, k)
		if !rs.dxTime.IsZero() && now.Sub(rs.dxTime) <= stale {
			s.Connections = append(s.Connections, rs.conns...)
			for _, v := range rs.vifs {
				v.PollFailed = !rs.dxStatus.up
				s.VIFs = append(s.VIFs, v)
			}
		}
		if !rs.nsmTime.IsZero() && now.Sub(rs.nsmTime) <= stale {
			s.Probes = append(s.Probes, rs.probes...)
		}
		for _, d := range rs.points {
			if now.Sub(d.Time) <= p.cfg.MetricsStaleAfter.D() {
				s.Metrics = append(s.Metrics, d)
			}
		}
	}
	if p.discStatus.tried {
		addSource(ServiceDX, &p.discStatus, regionKey{region: "global"})
	}
	for name, a := range sources {
		src := Source{Name: name, Up: a.up}
		if !a.never {
			src.LastSuccess = a.last
		}
		s.Sources = append(s.Sources, src)
	}
	sortSnapshot(s)
	sort.Slice(s.Metrics, func(i, j int) bool {
		a, b := s.Metrics[i], s.Metrics[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Resource != b.Resource {
			return a.Resource < b.Resource
		}
		if a.Direction != b.Direction {
			return a.Direction < b.Direction
		}
		return a.Lane < b.Lane
	})
	return s
}
