package probe

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/probe/icmpsock"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/stamp"
	"github.com/probed/probed/probe/trace"
)

// Sockets opens everything the jobs send with. KernelSockets is the real
// one; tests swap in their own to run every kind of job without root.
type Sockets interface {
	// ICMP opens the socket for k; id is the echo identifier to use on a
	// raw socket (a ping socket gets its own from the kernel).
	ICMP(k icmpsock.Key, id uint16) (ICMPSocket, error)
	// Connect makes one TCP connection and returns the handshake RTT.
	Connect(ctx context.Context, c TCPConnect) (time.Duration, error)
	// Session opens a STAMP session and starts receiving its replies
	// until ctx ends or the session is closed.
	Session(ctx context.Context, cfg stamp.SenderConfig) (Session, error)
	// Tracer and MTU open the sockets every trace and MTU job shares.
	Tracer(pps int) (Tracer, error)
	MTU() (MTUProber, error)
	// InterfaceIndex is the current index of the named interface: a
	// device deleted and re-created under the same name gets a new one.
	InterfaceIndex(name string) (int, error)
}

// ICMPSocket is an open ICMP socket (*icmpsock.Socket).
type ICMPSocket interface {
	Info() icmpsock.Info
	// SendTo sends b and returns the time taken just before the system call.
	SendTo(b []byte, sa unix.Sockaddr) (time.Time, error)
	// ReadBatch blocks until packets arrive and calls h for each.
	ReadBatch(h func(*icmpsock.Packet)) (n int, drops uint32, err error)
	// Pending says whether a packet waits in the receive queue; ok is
	// false where the kernel cannot tell.
	Pending() (pending, ok bool)
	Close() error
}

// TCPConnect is one TCP connection attempt.
type TCPConnect struct {
	Dst       netip.AddrPort
	Src       netip.Addr // zero: the kernel's choice
	Interface string
	TOS       uint8
	Timeout   time.Duration
	// LocalPort is the source port (a flow's identity, flows.go); 0: the
	// kernel's choice. The socket is bound with SO_REUSEADDR, so the
	// same port may serve flows to several targets.
	LocalPort uint16
}

// Session is an open STAMP session (*stamp.Sender).
type Session interface {
	// Send sends one test packet.
	Send()
	// Close stops the session and closes its socket.
	Close() error
}

// Tracer runs Paris traces (*trace.Tracer).
type Tracer interface {
	Trace(ctx context.Context, tg trace.Target) (*trace.Path, error)
	SetPPS(pps int)
	Close() error
}

// MTUProber runs path MTU searches (*pmtu.Prober).
type MTUProber interface {
	Search(ctx context.Context, tg pmtu.Target) (pmtu.Result, error)
	Close() error
}

// Resolver resolves names (*net.Resolver).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

var defaultResolver Resolver = net.DefaultResolver

// KernelSockets opens real sockets in the network namespace of the calling
// thread.
type KernelSockets struct{}

// ICMP implements Sockets.
func (KernelSockets) ICMP(k icmpsock.Key, id uint16) (ICMPSocket, error) {
	s, err := icmpsock.Open(k, id)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Connect implements Sockets: a connect with SO_LINGER 0 afterwards, so
// neither side keeps a TIME_WAIT entry for a probe that runs every second.
// The RTT is the kernel's own measurement of the handshake (TCP_INFO
// tcpi_rtt right after connect: the SYN → SYN-ACK sample, in µs), so Go
// scheduling does not inflate it; when the SYN was retransmitted the kernel
// takes no sample (Karn) and the user-space connect time is used instead.
func (KernelSockets) Connect(ctx context.Context, c TCPConnect) (time.Duration, error) {
	ip := c.Dst.Addr()
	d := net.Dialer{
		Timeout: c.Timeout,
		Control: func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if c.Interface != "" {
					if err := unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, c.Interface); err != nil {
						serr = &bindError{err}
						return
					}
				}
				if c.TOS != 0 {
					if ip.Is4() {
						serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(c.TOS))
					} else {
						serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(c.TOS))
					}
				}
				if serr == nil && c.LocalPort != 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
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
	if c.Src.IsValid() || c.LocalPort != 0 {
		la := &net.TCPAddr{Port: int(c.LocalPort)}
		if c.Src.IsValid() {
			la.IP = c.Src.AsSlice()
		}
		d.LocalAddr = la
	}
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", c.Dst.String())
	elapsed := time.Since(start)
	if err != nil {
		return 0, err
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
	return rtt, nil
}

// bindError marks a failure to bind a socket to its interface.
type bindError struct{ err error }

func (b *bindError) Error() string { return "binding to the interface: " + b.err.Error() }
func (b *bindError) Unwrap() error { return b.err }

// Session implements Sockets.
func (KernelSockets) Session(ctx context.Context, cfg stamp.SenderConfig) (Session, error) {
	s, err := stamp.NewSender(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Tracer implements Sockets.
func (KernelSockets) Tracer(pps int) (Tracer, error) {
	t, err := trace.New(pps)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// MTU implements Sockets.
func (KernelSockets) MTU() (MTUProber, error) {
	p, err := pmtu.New()
	if err != nil {
		return nil, err
	}
	return p, nil
}

// InterfaceIndex implements Sockets.
func (KernelSockets) InterfaceIndex(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, err
	}
	return ifi.Index, nil
}
