package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpProber measures the TCP three-way handshake to host:port, one
// connection per probe (Sockets.Connect says how the RTT is taken).
type tcpProber struct {
	e  *Engine
	wg sync.WaitGroup
}

// bind implements job: a connect needs only the address; its socket is
// made (and bound to the interface, source and flow's port) per probe.
func (p *tcpProber) bind(t *target, ip netip.Addr) (*binding, error) {
	if t.flows != nil && t.flows.rec != nil {
		t.flows.rec.SetFlows(t.spec, t.flows.tcpPorts())
	}
	return &binding{ip: ip}, nil
}

func (p *tcpProber) unbind(*target, *binding) {}

func (p *tcpProber) stop(t *target) {
	if t.flows != nil {
		t.flows.stop()
	}
}

// portAttempts is how many source ports a TCP flow tries when another
// socket holds the one it has (EADDRINUSE): each attempt's port is
// derived like the first, so the replacement is the same every time.
const portAttempts = 4

func (p *tcpProber) unsent(t *target, r Reason) { t.rec.Unsent(r) }

func (p *tcpProber) fire(t *target, b *binding) {
	spec := t.spec
	c := TCPConnect{Dst: netip.AddrPortFrom(b.ip, spec.Port), Interface: spec.Interface, TOS: spec.TOS, Timeout: spec.Timeout}
	if spec.Source != "" {
		c.Src, _ = netip.ParseAddr(spec.Source) // validated by config
	}
	flow := 0
	if fs := t.flows; fs != nil {
		flow = fs.next(fs.n)
		c.LocalPort = fs.port(flow)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		if t.flows != nil {
			// Uncontended unless the job replaces one whose last
			// connection on this flow's port is still under way.
			l := t.flows.conns[flow]
			l.Lock()
			defer l.Unlock()
		}
		sent := time.Now()
		rtt, err := p.e.socks.Connect(p.e.life, c)
		for attempt := 1; err != nil && c.LocalPort != 0 && attempt < portAttempts && portTaken(err); attempt++ {
			// Another socket holds the flow's port: the flow moves to
			// its next port (and, maybe, to another member path).
			c.LocalPort = t.flows.movePort(p.e, t, flow, c.LocalPort, attempt, err)
			sent = time.Now()
			rtt, err = p.e.socks.Connect(p.e.life, c)
		}
		if t.flows != nil {
			t.flows.done[flow].Store(p.e.monoNow())
		}
		if p.e.life.Err() != nil {
			return // shutting down: no verdict rather than a false loss
		}
		if err == nil {
			t.rec.Sent()
			t.rec.Succeeded(Probe{Sent: sent, Flow: flow}, rtt)
			return
		}
		r := classifyDialError(err)
		if r == ReasonBind {
			// No SYN left: the interface or source address is missing.
			t.rec.Unsent(r)
			return
		}
		t.rec.Sent()
		t.rec.Failed(Probe{Sent: sent, Flow: flow}, r)
	}()
}

// portTaken reports a connect that failed because its source port is
// held by another socket (bind), or the connection's 4-tuple by another
// connection (connect).
func portTaken(err error) bool {
	var se *os.SyscallError
	if !errors.As(err, &se) {
		return false
	}
	return (se.Syscall == "bind" && errors.Is(err, unix.EADDRINUSE)) || (se.Syscall == "connect" && errors.Is(err, unix.EADDRNOTAVAIL))
}

func (p *tcpProber) wait() { p.wg.Wait() }

func classifyDialError(err error) Reason {
	var be *bindError
	if errors.As(err, &be) {
		return ReasonBind
	}
	var se *os.SyscallError
	if errors.As(err, &se) && se.Syscall == "bind" {
		return ReasonBind
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.ECONNREFUSED:
			return ReasonRefused
		case unix.EHOSTUNREACH:
			return ReasonHostUnreachable
		case unix.ENETUNREACH:
			return ReasonNetUnreachable
		case unix.EACCES, unix.EPERM:
			return ReasonAdminProhibited
		case unix.ETIMEDOUT:
			return ReasonTimeout
		case unix.EADDRNOTAVAIL, unix.ENODEV:
			return ReasonBind
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return ReasonTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout
	}
	return ReasonConnectError
}
