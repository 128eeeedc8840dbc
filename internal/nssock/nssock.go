// Package nssock opens the probe engine's sockets inside a network
// namespace, so in-process tests can run an agent in a lab site: every
// socket is opened (and every interface looked up) by a thread that has
// entered the namespace; a socket, once open, works from any thread.
package nssock

import (
	"context"
	"time"

	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/icmpsock"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/stamp"
	"github.com/probed/probed/probe/trace"
)

// Namespace runs f on a thread inside a network namespace
// (testutil.NetNS, netlab.Site).
type Namespace interface {
	Do(f func() error) error
}

// Sockets is probe.KernelSockets inside ns.
type Sockets struct {
	NS     Namespace
	kernel probe.KernelSockets
}

var _ probe.Sockets = Sockets{}

// In returns the engine's sockets opened inside ns.
func In(ns Namespace) Sockets { return Sockets{NS: ns} }

func do[T any](ns Namespace, f func() (T, error)) (T, error) {
	var v T
	err := ns.Do(func() (err error) {
		v, err = f()
		return err
	})
	return v, err
}

// ICMP implements probe.Sockets.
func (s Sockets) ICMP(k icmpsock.Key, id uint16) (probe.ICMPSocket, error) {
	return do(s.NS, func() (probe.ICMPSocket, error) { return s.kernel.ICMP(k, id) })
}

// Connect implements probe.Sockets.
func (s Sockets) Connect(ctx context.Context, c probe.TCPConnect) (time.Duration, error) {
	return do(s.NS, func() (time.Duration, error) { return s.kernel.Connect(ctx, c) })
}

// Session implements probe.Sockets.
func (s Sockets) Session(ctx context.Context, cfg stamp.SenderConfig) (probe.Session, error) {
	return do(s.NS, func() (probe.Session, error) { return s.kernel.Session(ctx, cfg) })
}

// Tracer implements probe.Sockets: traces run inside ns too (the TCP
// method opens its sockets on first use, interfaces are looked up per trace).
func (s Sockets) Tracer(pps int) (probe.Tracer, error) {
	t, err := do(s.NS, func() (probe.Tracer, error) { return s.kernel.Tracer(pps) })
	if err != nil {
		return nil, err
	}
	return tracer{t, s.NS}, nil
}

type tracer struct {
	probe.Tracer
	ns Namespace
}

func (t tracer) Trace(ctx context.Context, tg trace.Target) (*trace.Path, error) {
	return do(t.ns, func() (*trace.Path, error) { return t.Tracer.Trace(ctx, tg) })
}

// MTU implements probe.Sockets: searches run inside ns (interfaces are
// looked up per search).
func (s Sockets) MTU() (probe.MTUProber, error) {
	p, err := do(s.NS, func() (probe.MTUProber, error) { return s.kernel.MTU() })
	if err != nil {
		return nil, err
	}
	return prober{p, s.NS}, nil
}

type prober struct {
	probe.MTUProber
	ns Namespace
}

func (p prober) Search(ctx context.Context, tg pmtu.Target) (pmtu.Result, error) {
	return do(p.ns, func() (pmtu.Result, error) { return p.MTUProber.Search(ctx, tg) })
}

// InterfaceIndex implements probe.Sockets.
func (s Sockets) InterfaceIndex(name string) (int, error) {
	return do(s.NS, func() (int, error) { return s.kernel.InterfaceIndex(name) })
}
