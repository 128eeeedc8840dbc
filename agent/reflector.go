package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter/stampmetrics"
	"github.com/probed/probed/probe/stamp"
)

// reflector runs the STAMP session-reflector while stamp.reflector.enabled.
// A listen address that cannot be bound (port 862 without
// CAP_NET_BIND_SERVICE, an address not on the host) is retried with
// backoff; meanwhile the agent is not ready and
// probed_stamp_reflector_listening says which address is missing.
type reflector struct {
	log       *zap.Logger
	listening *prometheus.GaugeVec
	svc       service

	current atomic.Pointer[stamp.Reflector] // for the collector; nil while none runs
	site    atomic.Pointer[string]

	mu      sync.Mutex
	bindErr map[string]error // listen address -> why it is not bound
}

func newReflector(log *zap.Logger, reg prometheus.Registerer) *reflector {
	r := &reflector{log: log, listening: prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "probed_stamp_reflector_listening",
		Help: "1 while the STAMP reflector listens on the address, 0 while it cannot bind it (it retries).",
	}, []string{"listen"})}
	site := ""
	r.site.Store(&site)
	reg.MustRegister(r.listening, stampmetrics.NewReflectorCollector(func() string { return *r.site.Load() }, func() stamp.ReflectorStats {
		if cur := r.current.Load(); cur != nil {
			return cur.Stats()
		}
		return stamp.ReflectorStats{}
	}))
	return r
}

// err is why the reflector does not listen on every address (nil if it does).
func (r *reflector) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, e := range r.bindErr {
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// setErr records why addr is not bound (nil: it is); addr "" clears all.
func (r *reflector) setErr(addr string, err error) (first bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if addr == "" {
		r.bindErr = nil
		return false
	}
	if r.bindErr == nil {
		r.bindErr = map[string]error{}
	}
	_, had := r.bindErr[addr]
	if err == nil {
		delete(r.bindErr, addr)
	} else {
		r.bindErr[addr] = err
	}
	return !had
}

func (r *reflector) stop() { r.svc.halt() }

// apply starts, restarts or stops the reflector to match cfg. A change of
// the mesh's addresses only updates the allow-list.
func (r *reflector) apply(ctx context.Context, cfg *config.Config, site string) error {
	r.site.Store(&site)
	rc := &cfg.STAMP.Reflector
	if !rc.Enabled {
		r.svc.halt()
		return nil
	}
	allow, err := stamp.NewAllowList(cfg.STAMPAllowedSources())
	if err != nil {
		return fmt.Errorf("STAMP reflector allow-list: %w", err)
	}
	mode, key := stamp.Unauthenticated, (*stamp.Key)(nil)
	if k := cfg.STAMP.Key(); k != nil {
		if key, err = stamp.NewKey(k); err != nil {
			return fmt.Errorf("STAMP key from %s: %w", cfg.STAMP.AuthKeyFile, err)
		}
		mode = stamp.Authenticated
	}
	sig := fmt.Sprintf("%v|%s|%x|%g|%d|%s", rc.Listen, mode, cfg.STAMP.Key(), rc.RateLimit, rc.Burst, rc.SessionTimeout.D())
	if cur := r.current.Load(); cur != nil && r.svc.sig == sig {
		cur.SetAllow(allow) // the mesh changed: new sources, same sockets
		return nil
	}
	return r.svc.apply(sig, func() (func(), error) {
		refl, err := stamp.NewReflector(stamp.ReflectorConfig{
			Mode: mode, Key: key, Allow: allow, RateLimit: rc.RateLimit, Burst: rc.Burst,
			SessionTimeout: rc.SessionTimeout.D(),
		})
		if err != nil {
			return nil, fmt.Errorf("STAMP reflector: %w", err)
		}
		rctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		r.current.Store(refl)
		r.listening.Reset()
		for _, addr := range rc.Listen {
			r.listening.WithLabelValues(addr).Set(0)
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.serve(rctx, refl, addr)
			}()
		}
		r.log.Info("STAMP reflector starting", zap.Strings("listen", rc.Listen), zap.Stringer("mode", mode),
			zap.Int("allowed_sources", allow.Len()), zap.Float64("rate_limit", rc.RateLimit))
		return func() {
			cancel()
			wg.Wait()
			r.current.Store(nil)
			r.listening.Reset()
			r.setErr("", nil)
		}, nil
	})
}

// serve binds addr (retrying with backoff) and answers on it until ctx ends.
func (r *reflector) serve(ctx context.Context, refl *stamp.Reflector, addr string) {
	network := "udp4"
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is6() {
		network = "udp6"
	}
	backoff := time.Second
	var c *net.UDPConn
	for {
		var err error
		c, err = stamp.Listen(ctx, network, addr)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		if r.setErr(addr, fmt.Errorf("listening on %s: %w", addr, err)) {
			r.log.Warn("STAMP reflector cannot listen; retrying (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
				zap.String("listen", addr), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	if !r.setErr(addr, nil) {
		r.log.Info("STAMP reflector listening", zap.String("listen", addr))
	}
	r.listening.WithLabelValues(addr).Set(1)
	if err := refl.Serve(ctx, c); err != nil && ctx.Err() == nil {
		r.log.Error("STAMP reflector stopped", zap.String("listen", addr), zap.Error(err))
	}
}
