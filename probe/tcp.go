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

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// tcpProber measures the TCP three-way handshake to host:port.
//
// The RTT is the kernel's own measurement of the handshake (TCP_INFO
// tcpi_rtt right after connect: the SYN → SYN-ACK sample, in µs), so Go
// scheduling does not inflate it; when the SYN was retransmitted the kernel
// takes no sample (Karn) and the user-space connect time is used instead.
//
// The connection is closed with SO_LINGER 0: the agent sends RST, so neither
// side keeps a TIME_WAIT entry for a probe that runs every second.
type tcpProber struct {
	log    *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newTCPProber(log *zap.Logger) *tcpProber {
	ctx, cancel := context.WithCancel(context.Background())
	return &tcpProber{log: log, ctx: ctx, cancel: cancel}
}

func (p *tcpProber) send(t *target, a *resolved) {
	t.rec.Sent()
	spec := t.spec
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		rtt, reason, ok := p.connect(a.ip, spec.Port, spec.Source, spec.Interface, spec.TOS, spec.Timeout)
		if p.ctx.Err() != nil {
			return // shutting down: no verdict rather than a false loss
		}
		if ok {
			t.rec.Succeeded(rtt)
		} else {
			t.rec.Failed(reason)
		}
	}()
}

func (p *tcpProber) connect(ip netip.Addr, port uint16, source, iface string, tos uint8, timeout time.Duration) (time.Duration, Reason, bool) {
	d := net.Dialer{
		Timeout: timeout,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if iface != "" {
					serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, iface)
				}
				if serr == nil && tos != 0 {
					if ip.Is4() {
						serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(tos))
					} else {
						serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(tos))
					}
				}
				// At most one SYN retransmission (the kernel's minimum):
				// a probe is not meant to ride out loss with retries. A
				// handshake that needed it reports its real, inflated time.
				if serr == nil {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1)
				}
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	if source != "" {
		if s, err := netip.ParseAddr(source); err == nil {
			d.LocalAddr = &net.TCPAddr{IP: s.AsSlice()}
		}
	}
	start := time.Now()
	conn, err := d.DialContext(p.ctx, "tcp", netip.AddrPortFrom(ip, port).String())
	elapsed := time.Since(start)
	if err != nil {
		return 0, classifyDialError(err), false
	}
	tc := conn.(*net.TCPConn)
	rtt := elapsed
	if raw, err := tc.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil && info.Rtt > 0 && info.Total_retrans == 0 {
				rtt = time.Duration(info.Rtt) * time.Microsecond
			}
		})
	}
	_ = tc.SetLinger(0)
	_ = tc.Close()
	return rtt, 0, true
}

func classifyDialError(err error) Reason {
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

func (p *tcpProber) expire(int64) int64 { return 0 } // each connect carries its own deadline

func (p *tcpProber) close() {
	p.cancel()
	p.wg.Wait()
}
