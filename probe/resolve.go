package probe

import (
	"context"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// retryResolve is how soon a failed resolution is tried again.
const retryResolve = 10 * time.Second

// resolveLoop re-resolves hostname targets every resolve interval (DNS
// changes are followed), and retries failures sooner. A target that does not
// resolve is reported and skipped; the others keep running.
func (e *Engine) resolveLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.resolveC:
		}
		failed := e.resolveAll(ctx)
		next := e.resolveI
		if failed && retryResolve < next {
			next = retryResolve
		}
		timer.Reset(next)
	}
}

func (e *Engine) resolveAll(ctx context.Context) (failed bool) {
	e.mu.Lock()
	var todo []*target
	for _, t := range e.targets {
		if !t.literal {
			todo = append(todo, t)
		}
	}
	e.mu.Unlock()
	for _, t := range todo {
		if !e.resolveOne(ctx, t) {
			failed = true
		}
	}
	return failed
}

func (e *Engine) resolveOne(ctx context.Context, t *target) bool {
	network := "ip"
	switch t.spec.Family {
	case "ip4":
		network = "ip4"
	case "ip6":
		network = "ip6"
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ips, err := net.DefaultResolver.LookupNetIP(rctx, network, t.spec.Target)
	cancel()
	if err != nil || len(ips) == 0 {
		if ctx.Err() != nil {
			return true
		}
		e.log.Warn("cannot resolve target; will retry", zap.String("target", t.spec.Target),
			zap.String("target_site", t.spec.TargetSite), zap.Error(err))
		t.rec.ResolveFailed()
		return false
	}
	ip := pickAddr(ips)
	if cur := t.addr.Load(); cur != nil && cur.ip == ip {
		return true
	}
	r, err := e.resolve(t, ip)
	if err != nil {
		e.log.Warn("cannot probe resolved address", zap.String("target", t.spec.Target), zap.Stringer("address", ip), zap.Error(err))
		t.rec.ResolveFailed()
		return false
	}
	if old := t.addr.Swap(r); old != nil {
		e.log.Info("target address changed", zap.String("target", t.spec.Target), zap.Stringer("from", old.ip), zap.Stringer("to", ip))
	} else {
		e.log.Debug("target resolved", zap.String("target", t.spec.Target), zap.Stringer("address", ip))
	}
	return true
}

// pickAddr takes the resolver's first answer (RFC 6724 order), stably.
func pickAddr(ips []netip.Addr) netip.Addr { return ips[0].Unmap() }
