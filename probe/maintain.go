package probe

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/icmpsock"
)

// ifaceCheck is how often interfaces that jobs bind to are looked up again:
// a device deleted and re-created under the same name (a flap, VLAN
// re-provisioning) has a new index, and sockets bound to the old one are
// opened again.
const ifaceCheck = 2 * time.Second

// maintain keeps every job bound: it runs the resolver, binds jobs to their
// (new) addresses, retries failed binds with backoff, re-opens broken ICMP
// sockets and follows re-created interfaces.
func (e *Engine) maintain(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	var nextIface int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.maint:
		}
		now := e.monoNow()
		if now >= nextIface {
			e.checkInterfaces()
			nextIface = now + int64(ifaceCheck)
		}
		next := nextIface
		for _, d := range []int64{e.names.startDue(ctx, now), e.bindDue(now), e.icmp.reopenDue(now)} {
			if d != 0 && d < next {
				next = d
			}
		}
		timer.Reset(max(time.Duration(next-e.monoNow()), tick))
	}
}

// setWant points t at ip, the name's address; the maintenance loop binds it.
func (e *Engine) setWant(t *target, ip netip.Addr) {
	e.mu.Lock()
	if t.live && t.want != ip {
		t.want, t.retryAt, t.backoff = ip, 0, 0
	}
	e.mu.Unlock()
	if t.rec != nil && !t.literal.IsValid() {
		t.rec.Resolved(true)
	}
	e.kick(e.maint)
}

// unresolved records a failed lookup of t's name: a job that was never
// bound reports its slots as unsent for ReasonResolve; one that is keeps
// probing the last address. Both are told to the recorder.
func (e *Engine) unresolved(t *target) {
	e.mu.Lock()
	bound := t.want.IsValid()
	if t.live && !bound {
		t.reason = ReasonResolve
	}
	e.mu.Unlock()
	if t.rec != nil {
		t.rec.Resolved(false)
	}
}

// bindDue binds the jobs whose address changed or whose failed bind is due
// for a retry, and returns when the next retry falls due (0: none).
func (e *Engine) bindDue(now int64) int64 {
	e.mu.Lock()
	var todo []*target
	var next int64
	for _, t := range e.targets {
		if t.binding || !t.want.IsValid() {
			continue
		}
		if b := t.bound.Load(); b != nil && b.ip == t.want {
			continue
		}
		if t.retryAt > now {
			if next == 0 || t.retryAt < next {
				next = t.retryAt
			}
			continue
		}
		t.binding = true
		todo = append(todo, t)
	}
	e.mu.Unlock()
	for _, t := range todo {
		_ = e.bind(t) // a failure is logged and retried there
	}
	return next
}

// bindNow binds t to ip at once (a literal address, from Update).
func (e *Engine) bindNow(t *target, ip netip.Addr) error {
	e.mu.Lock()
	if !t.live || t.binding {
		e.mu.Unlock()
		return nil
	}
	t.want, t.binding = ip, true
	e.mu.Unlock()
	return e.bind(t)
}

// bind binds t to its wanted address (t.binding is set by the caller). A
// failure leaves t unbound — its slots are reported as unsent with
// ReasonBind — and is retried with backoff.
func (e *Engine) bind(t *target) error {
	e.mu.Lock()
	ip := t.want
	e.mu.Unlock()
	b, err := t.job.bind(t, ip)

	e.mu.Lock()
	t.binding = false
	if !t.live || t.want != ip {
		// Stopped or re-pointed meanwhile: this binding is not wanted.
		e.mu.Unlock()
		if b != nil {
			t.job.unbind(t, b)
		}
		e.kick(e.maint)
		return nil
	}
	hadErr := t.bindErr
	var old *binding
	if b != nil {
		old = t.bound.Swap(b)
		t.reason = NumReasons
	}
	if err != nil && b == nil {
		old = t.bound.Swap(nil)
		t.reason = ReasonBind
		t.backoff = min(max(2*t.backoff, retryMin), retryMax)
		t.retryAt = e.monoNow() + int64(t.backoff)
	} else {
		t.backoff, t.retryAt = 0, 0
	}
	t.bindErr = err
	e.mu.Unlock()
	if old != nil && old != b {
		t.job.unbind(t, old)
	}
	e.bindLog.note(t, ip, hadErr, err)
	return err
}

// bindLog logs bind failures once per distinct error, however many jobs
// share it (fifty targets behind one missing interface are one message),
// and says when the last job with that error is bound again.
type bindLog struct {
	log *zap.Logger
	mu  sync.Mutex
	n   map[string]int // error text -> jobs failing with it
}

func (l *bindLog) note(t *target, ip netip.Addr, was, now error) {
	if (was == nil) == (now == nil) && (was == nil || was.Error() == now.Error()) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	fields := []zap.Field{zap.Stringer("kind", t.spec.Kind), zap.String("target_site", t.spec.TargetSite),
		zap.String("target", t.spec.Target), zap.Stringer("address", ip), zap.String("source", t.spec.Source),
		zap.String("interface", t.spec.Interface)}
	if was != nil && !errors.Is(was, icmpsock.ErrPermission) {
		if l.n[was.Error()]--; l.n[was.Error()] <= 0 {
			delete(l.n, was.Error())
			if now == nil {
				l.log.Info("jobs' sockets are bound again", append(fields, zap.String("after", was.Error()))...)
			}
		}
	}
	// A missing ICMP privilege is the caller's to report: fatal at the
	// first load (cmd/probed says what to grant, once).
	if now != nil && !errors.Is(now, icmpsock.ErrPermission) {
		if l.n[now.Error()]++; l.n[now.Error()] == 1 {
			msg := "cannot open or bind a job's socket; retrying (one message for every job with this error)"
			if errors.Is(now, unix.EPERM) || errors.Is(now, unix.EACCES) {
				msg = "no privilege for this job's sockets (root or CAP_NET_RAW; or turn trace and mtu off for unprivileged agents); retrying"
			}
			l.log.Warn(msg, append(fields, zap.Error(now))...)
		}
	}
}

// checkInterfaces re-binds jobs whose interface was deleted and re-created
// (or vanished) since they were bound.
func (e *Engine) checkInterfaces() {
	idx := map[string]int{}
	index := func(name string) int {
		i, ok := idx[name]
		if !ok {
			i, _ = e.socks.InterfaceIndex(name) // 0: gone
			idx[name] = i
		}
		return i
	}
	e.icmp.checkInterfaces(index)
	e.mu.Lock()
	var stale []*target
	for _, t := range e.targets {
		if t.spec.Kind != config.KindSTAMP || t.spec.Interface == "" {
			continue
		}
		if b := t.bound.Load(); b != nil && b.ifindex != index(t.spec.Interface) {
			stale = append(stale, t)
		}
	}
	e.mu.Unlock()
	for _, t := range stale {
		e.mu.Lock()
		b := t.bound.Load()
		if t.live && !t.binding && b != nil && t.bound.CompareAndSwap(b, nil) {
			t.reason, t.retryAt = ReasonBind, 0
		} else {
			b = nil
		}
		e.mu.Unlock()
		if b != nil {
			e.log.Info("interface re-created; re-opening the job's socket", zap.Stringer("kind", t.spec.Kind),
				zap.String("target", t.spec.Target), zap.String("interface", t.spec.Interface))
			t.job.unbind(t, b)
		}
	}
	if len(stale) > 0 {
		e.kick(e.maint)
	}
}
