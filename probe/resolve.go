package probe

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
)

// Resolution: one lookup per distinct (name, family), shared by every job
// that uses the name; lookups run concurrently with a timeout each, repeat
// every resolve interval so DNS changes are followed, and a failed one is
// retried sooner, backing off.
const (
	lookupTimeout   = 5 * time.Second
	lookupsInFlight = 8
	retryMin        = time.Second
	retryMax        = 30 * time.Second
)

type nameKey struct{ host, network string }

// name is one resolved name and the jobs that use it.
type name struct {
	key      nameKey
	targets  map[*target]struct{}
	addr     netip.Addr // the last address resolved; invalid until one is
	failing  bool
	due      int64 // mono ns of the next lookup
	inflight bool
	backoff  time.Duration
}

type resolver struct {
	e   *Engine
	r   Resolver
	sem chan struct{}

	mu       sync.Mutex
	interval time.Duration
	names    map[nameKey]*name
}

func newResolver(e *Engine, r Resolver) *resolver {
	return &resolver{e: e, r: r, sem: make(chan struct{}, lookupsInFlight), interval: config.DefaultResolveInterval,
		names: map[nameKey]*name{}}
}

func (r *resolver) setInterval(d time.Duration) {
	if d <= 0 {
		return
	}
	r.mu.Lock()
	r.interval = d
	r.mu.Unlock()
}

func keyOf(s *config.ProbeSpec) nameKey {
	network := "ip"
	if s.Family == "ip4" || s.Family == "ip6" {
		network = s.Family
	}
	return nameKey{host: s.Target, network: network}
}

// add starts resolving t's name; a name already known gives t its address
// at once.
func (r *resolver) add(t *target) {
	k := keyOf(t.spec)
	r.mu.Lock()
	n := r.names[k]
	if n == nil {
		n = &name{key: k, targets: map[*target]struct{}{}, due: r.e.monoNow()}
		r.names[k] = n
	}
	n.targets[t] = struct{}{}
	addr, failing := n.addr, n.failing
	r.mu.Unlock()
	switch {
	case addr.IsValid():
		r.e.setWant(t, addr)
	case failing:
		r.e.unresolved(t)
	}
}

// retain forgets the jobs keep rejects, and names no job uses any more.
func (r *resolver) retain(keep func(*target) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, n := range r.names {
		for t := range n.targets {
			if !keep(t) {
				delete(n.targets, t)
			}
		}
		if len(n.targets) == 0 {
			delete(r.names, k)
		}
	}
}

// startDue starts the lookups that are due and returns when the next one
// falls due (0: none).
func (r *resolver) startDue(ctx context.Context, now int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next int64
	for _, n := range r.names {
		if n.inflight {
			continue
		}
		if n.due > now {
			if next == 0 || n.due < next {
				next = n.due
			}
			continue
		}
		n.inflight = true
		go r.lookup(ctx, n)
	}
	return next
}

func (r *resolver) lookup(ctx context.Context, n *name) {
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	ips, err := r.r.LookupNetIP(lctx, n.key.network, n.key.host)
	cancel()
	<-r.sem
	if ctx.Err() != nil {
		return
	}
	var ip netip.Addr
	if err == nil && len(ips) > 0 {
		ip = pickAddr(ips)
	}
	r.mu.Lock()
	n.inflight = false
	wasFailing, old := n.failing, n.addr
	now := r.e.monoNow()
	if ip.IsValid() {
		n.addr, n.failing, n.backoff = ip, false, 0
		n.due = now + int64(r.interval)
	} else {
		n.failing = true
		n.backoff = min(max(2*n.backoff, retryMin), retryMax, r.interval)
		n.due = now + int64(n.backoff)
	}
	targets := make([]*target, 0, len(n.targets))
	for t := range n.targets {
		targets = append(targets, t)
	}
	r.mu.Unlock()
	r.e.kick(r.e.maint)

	log := r.e.log.With(zap.String("name", n.key.host), zap.String("network", n.key.network), zap.Int("jobs", len(targets)))
	switch {
	case ip.IsValid():
		if wasFailing {
			log.Info("name resolves again", zap.Stringer("address", ip))
		} else if old.IsValid() && old != ip {
			log.Info("target address changed", zap.Stringer("from", old), zap.Stringer("to", ip))
		}
		for _, t := range targets {
			r.e.setWant(t, ip)
		}
	default:
		if err == nil {
			err = errNoAddress
		}
		if !wasFailing {
			if old.IsValid() {
				log.Warn("cannot resolve name; still probing its last address, retrying", zap.Stringer("address", old), zap.Error(err))
			} else {
				log.Warn("cannot resolve name; retrying", zap.Error(err))
			}
		}
		for _, t := range targets {
			r.e.unresolved(t)
		}
	}
}

// pickAddr takes the resolver's first answer (RFC 6724 order), stably.
func pickAddr(ips []netip.Addr) netip.Addr { return ips[0].Unmap() }

type resolveError string

func (e resolveError) Error() string { return string(e) }

const errNoAddress = resolveError("no address of the requested family")
