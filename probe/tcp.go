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
// made (and bound to the interface and source) per probe.
func (p *tcpProber) bind(t *target, ip netip.Addr) (*binding, error) {
	return &binding{ip: ip}, nil
}

func (p *tcpProber) unbind(*target, *binding) {}
func (p *tcpProber) stop(*target)             {}

func (p *tcpProber) unsent(t *target, r Reason) { t.rec.Unsent(r) }

func (p *tcpProber) fire(t *target, b *binding) {
	spec := t.spec
	c := TCPConnect{Dst: netip.AddrPortFrom(b.ip, spec.Port), Interface: spec.Interface, TOS: spec.TOS, Timeout: spec.Timeout}
	if spec.Source != "" {
		c.Src, _ = netip.ParseAddr(spec.Source) // validated by config
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		sent := time.Now()
		rtt, err := p.e.socks.Connect(p.e.life, c)
		if p.e.life.Err() != nil {
			return // shutting down: no verdict rather than a false loss
		}
		if err == nil {
			t.rec.Sent()
			t.rec.Succeeded(Probe{Sent: sent}, rtt)
			return
		}
		r := classifyDialError(err)
		if r == ReasonBind {
			// No SYN left: the interface or source address is missing.
			t.rec.Unsent(r)
			return
		}
		t.rec.Sent()
		t.rec.Failed(Probe{Sent: sent}, r)
	}()
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
