//go:build linux

// Package icmpsock is the socket layer of the ICMP prober: it opens one ICMP
// socket per (family, source, interface, TOS), raw when privileged and an
// unprivileged ping socket otherwise, turns on kernel receive timestamps and
// drop counting, and reads replies in batches with recvmmsg.
//
// It knows nothing about probes: it moves bytes and timestamps.
package icmpsock

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Key identifies a socket. Targets that share a key share the socket.
type Key struct {
	V6        bool
	Source    netip.Addr // zero: any
	Interface string
	TOS       uint8
}

func (k Key) String() string {
	fam := "ip4"
	if k.V6 {
		fam = "ip6"
	}
	src := "any"
	if k.Source.IsValid() {
		src = k.Source.String()
	}
	s := fmt.Sprintf("%s src=%s tos=%d", fam, src, k.TOS)
	if k.Interface != "" {
		s += " dev=" + k.Interface
	}
	return s
}

// Mode says how the socket was opened.
type Mode int

const (
	Raw      Mode = iota // SOCK_RAW: needs root or CAP_NET_RAW
	Datagram             // SOCK_DGRAM IPPROTO_ICMP: needs net.ipv4.ping_group_range
)

func (m Mode) String() string {
	if m == Raw {
		return "raw"
	}
	return "datagram"
}

// ErrPermission is returned when neither socket kind may be opened.
var ErrPermission = errors.New("no permission to open ICMP sockets: run as root, grant CAP_NET_RAW " +
	"(setcap cap_net_raw+ep /path/to/probed, or AmbientCapabilities=CAP_NET_RAW in systemd, or docker run --cap-add NET_RAW), " +
	"or allow unprivileged ping sockets for the agent's group: sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"")

// Socket is an open ICMP socket.
type Socket struct {
	Key  Key
	Mode Mode
	// ID is the echo identifier replies carry: chosen by us on raw
	// sockets, assigned by the kernel (the local "port") on ping sockets.
	ID uint16

	conn net.PacketConn
	rc   syscall.RawConn
	fd   int

	// Receive batch state, reused for every read.
	hdrs   []unix.Mmsghdr
	iovs   []unix.Iovec
	bufs   [][]byte
	oobs   [][]byte
	names  []unix.RawSockaddrInet6
	pkts   []Packet
	nread  int
	rerr   error
	readFn func(fd uintptr) bool

	drops uint32 // last SO_RXQ_OVFL counter seen
}

// Packet is one received ICMP message.
type Packet struct {
	// Data is the ICMP message (IPv4 header already stripped). It is only
	// valid during the handler call.
	Data []byte
	From netip.Addr
	// KernelTime is the kernel's receive timestamp (CLOCK_REALTIME, ns);
	// 0 if the kernel gave none.
	KernelTime int64
}

const (
	batch      = 64
	maxPacket  = 9216 + 60
	oobSize    = 128
	rcvBufSize = 8 << 20
)

// Open opens a socket for k, raw if permitted, else a ping socket. id is the
// identifier to use on a raw socket.
func Open(k Key, id uint16) (*Socket, error) {
	s, err := open(k, Raw, id)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		return nil, err
	}
	s, err2 := open(k, Datagram, 0)
	if err2 == nil {
		return s, nil
	}
	if errors.Is(err2, unix.EPERM) || errors.Is(err2, unix.EACCES) {
		return nil, ErrPermission
	}
	return nil, fmt.Errorf("opening raw socket: %v; opening ping socket: %w", err, err2)
}

func open(k Key, mode Mode, id uint16) (*Socket, error) {
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if k.V6 {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	typ := unix.SOCK_RAW
	if mode == Datagram {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := setOptions(fd, k, mode, id); err != nil {
		return nil, err
	}
	var sa unix.Sockaddr
	if k.V6 {
		a := &unix.SockaddrInet6{}
		if k.Source.IsValid() {
			a.Addr = k.Source.As16()
		}
		sa = a
	} else {
		a := &unix.SockaddrInet4{}
		if k.Source.IsValid() {
			a.Addr = k.Source.As4()
		}
		sa = a
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("binding ICMP socket to %s: %w", k, err)
	}
	s := &Socket{Key: k, Mode: mode, ID: id}
	if mode == Datagram {
		// The kernel picked the identifier at bind time.
		got, err := unix.Getsockname(fd)
		if err != nil {
			return nil, os.NewSyscallError("getsockname", err)
		}
		switch a := got.(type) {
		case *unix.SockaddrInet4:
			s.ID = uint16(a.Port)
		case *unix.SockaddrInet6:
			s.ID = uint16(a.Port)
		}
	}
	ok = true // fd now belongs to f
	f := os.NewFile(uintptr(fd), "icmp "+k.String())
	conn, err := net.FilePacketConn(f)
	f.Close() // FilePacketConn dup'ed the descriptor
	if err != nil {
		return nil, fmt.Errorf("wrapping ICMP socket: %w", err)
	}
	sc, ok2 := conn.(syscall.Conn)
	if !ok2 {
		conn.Close()
		return nil, fmt.Errorf("ICMP socket %T has no raw access", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.conn, s.rc = conn, rc
	_ = rc.Control(func(d uintptr) { s.fd = int(d) })
	s.initBatch()
	return s, nil
}

func setOptions(fd int, k Key, mode Mode, id uint16) error {
	set := func(level, opt, v int, what string) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("setting %s on ICMP socket: %w", what, err)
		}
		return nil
	}
	// Kernel receive timestamps: RTT must not include Go scheduling.
	if err := set(unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS"); err != nil {
		return err
	}
	// The kernel's count of packets dropped for a full receive buffer.
	if err := set(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1, "SO_RXQ_OVFL"); err != nil {
		return err
	}
	// Large buffers so a burst of replies never overflows. FORCE needs
	// CAP_NET_ADMIN; fall back to the sysctl-capped size.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBufSize) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBufSize)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, rcvBufSize/2) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, rcvBufSize/2)
	}
	if k.Interface != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, k.Interface); err != nil {
			return fmt.Errorf("binding ICMP socket to interface %q: %w", k.Interface, err)
		}
	}
	if k.V6 {
		if err := set(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, int(k.TOS), "IPV6_TCLASS"); err != nil {
			return err
		}
		if mode == Datagram {
			if err := set(unix.IPPROTO_IPV6, unix.IPV6_RECVERR, 1, "IPV6_RECVERR"); err != nil {
				return err
			}
		}
	} else {
		if err := set(unix.IPPROTO_IP, unix.IP_TOS, int(k.TOS), "IP_TOS"); err != nil {
			return err
		}
		if mode == Datagram {
			if err := set(unix.IPPROTO_IP, unix.IP_RECVERR, 1, "IP_RECVERR"); err != nil {
				return err
			}
		}
	}
	if mode == Raw {
		// The kernel's type filter runs before a packet is cloned for the
		// socket (the BPF filter below runs after): every ICMP packet on
		// the host, our own echo requests included, would otherwise cost
		// a clone.
		if err := setTypeFilter(fd, k.V6); err != nil {
			return fmt.Errorf("setting the ICMP type filter: %w", err)
		}
		// Let only echo replies and errors reach user space: on loopback
		// a raw socket also sees our own echo requests.
		prog, err := filter(k.V6)
		if err != nil {
			return err
		}
		if err := attachFilter(fd, prog); err != nil {
			return fmt.Errorf("attaching ICMP filter: %w", err)
		}
	}
	return nil
}

// filter accepts echo replies and the ICMP errors a probe can cause. The
// identifier is checked in user space, so replies to other pingers on the
// host are counted as foreign instead of vanishing.
func filter(v6 bool) ([]bpf.RawInstruction, error) {
	var prog []bpf.Instruction
	if v6 {
		// Raw ICMPv6 sockets deliver the ICMPv6 message without IP header.
		prog = []bpf.Instruction{
			bpf.LoadAbsolute{Off: 0, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 129, SkipTrue: 4}, // echo reply
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 1, SkipTrue: 3},   // destination unreachable
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 2, SkipTrue: 2},   // packet too big
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 3, SkipTrue: 1},   // time exceeded
			bpf.RetConstant{Val: 0},
			bpf.RetConstant{Val: 0x40000},
		}
	} else {
		prog = []bpf.Instruction{
			bpf.LoadMemShift{Off: 0}, // X = IPv4 header length
			bpf.LoadIndirect{Off: 0, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 4},  // echo reply
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 3, SkipTrue: 3},  // destination unreachable
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 11, SkipTrue: 2}, // time exceeded
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: 12, SkipTrue: 1}, // parameter problem
			bpf.RetConstant{Val: 0},
			bpf.RetConstant{Val: 0x40000},
		}
	}
	return bpf.Assemble(prog)
}

// setTypeFilter passes only echo replies and the errors a probe can cause
// (ICMP_FILTER / ICMP6_FILTER: a set bit blocks that type).
func setTypeFilter(fd int, v6 bool) error {
	if v6 {
		var f [8]uint32
		for i := range f {
			f[i] = ^uint32(0)
		}
		for _, t := range []uint{1, 2, 3, 4, 129} {
			f[t/32] &^= 1 << (t % 32)
		}
		b := unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 32)
		return unix.SetsockoptString(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, string(b))
	}
	mask := ^uint32(0)
	for _, t := range []uint{0, 3, 11, 12} {
		mask &^= 1 << t
	}
	return unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, int(mask))
}

func attachFilter(fd int, prog []bpf.RawInstruction) error {
	p := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &p)
}

func (s *Socket) initBatch() {
	s.hdrs = make([]unix.Mmsghdr, batch)
	s.iovs = make([]unix.Iovec, batch)
	s.bufs = make([][]byte, batch)
	s.oobs = make([][]byte, batch)
	s.names = make([]unix.RawSockaddrInet6, batch)
	s.pkts = make([]Packet, batch)
	for i := range s.hdrs {
		s.bufs[i] = make([]byte, maxPacket)
		s.oobs[i] = make([]byte, oobSize)
		s.iovs[i].Base = &s.bufs[i][0]
		s.iovs[i].SetLen(maxPacket)
	}
	s.readFn = s.recvmmsg
}

func (s *Socket) resetHdrs() {
	for i := range s.hdrs {
		h := &s.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		h.Namelen = uint32(unsafe.Sizeof(s.names[i]))
		h.Iov = &s.iovs[i]
		h.Iovlen = 1
		h.Control = &s.oobs[i][0]
		h.SetControllen(oobSize)
		h.Flags = 0
		s.hdrs[i].Len = 0
	}
}

func (s *Socket) recvmmsg(fd uintptr) bool {
	s.resetHdrs()
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[0])), uintptr(len(s.hdrs)), unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN:
		if s.Mode == Datagram {
			// ICMP errors for ping sockets wait on the error queue.
			return s.readErrQueue(fd)
		}
		return false
	case errno == unix.EINTR:
		return false
	case errno != 0:
		if s.Mode == Datagram {
			s.readErrQueue(fd)
			return s.nread > 0
		}
		s.rerr = errno
		return true
	}
	s.nread = int(n)
	return true
}

// ReadBatch blocks until packets arrive and calls h for each. It returns how
// many messages were read (full means more may be waiting) and the kernel's
// cumulative receive-buffer drop count.
func (s *Socket) ReadBatch(h func(*Packet)) (n int, drops uint32, err error) {
	s.nread, s.rerr = 0, nil
	if err := s.rc.Read(s.readFn); err != nil {
		return 0, s.drops, err
	}
	if s.rerr != nil {
		return 0, s.drops, s.rerr
	}
	for i := 0; i < s.nread; i++ {
		p := &s.pkts[i]
		if !s.decode(i, p) {
			continue
		}
		h(p)
	}
	return s.nread, s.drops, nil
}

// BatchSize is the most messages one ReadBatch returns.
const BatchSize = batch

// decode fills p from message i; false if the message is unusable.
func (s *Socket) decode(i int, p *Packet) bool {
	m := &s.hdrs[i]
	data := s.bufs[i][:m.Len]
	p.KernelTime = 0
	p.From = netip.Addr{}
	errQueue := m.Hdr.Flags&unix.MSG_ERRQUEUE != 0
	oob := s.oobs[i][:m.Hdr.Controllen]
	var ee *unix.SockExtendedErr
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			break
		}
		body := oob[unix.CmsgLen(0):h.Len]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(body) >= 16:
			ts := (*unix.Timespec)(unsafe.Pointer(&body[0]))
			p.KernelTime = ts.Nano()
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(body) >= 4:
			s.drops = *(*uint32)(unsafe.Pointer(&body[0]))
		case (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_RECVERR) || (h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_RECVERR):
			if len(body) >= int(unsafe.Sizeof(unix.SockExtendedErr{})) {
				ee = (*unix.SockExtendedErr)(unsafe.Pointer(&body[0]))
				// The offender (the router that sent the error) follows.
				off := int(unsafe.Sizeof(unix.SockExtendedErr{}))
				if len(body) >= off+8 {
					p.From = sockaddrAddr(body[off:])
				}
			}
		}
		oob = oob[unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0)):]
	}
	if errQueue {
		// A ping socket's error: rebuild the ICMP error message so the
		// prober handles both socket kinds alike. data is our request.
		if ee == nil || (ee.Origin != unix.SO_EE_ORIGIN_ICMP && ee.Origin != unix.SO_EE_ORIGIN_ICMP6) {
			return false
		}
		dst := sockaddrAddr((*[unsafe.Sizeof(unix.RawSockaddrInet6{})]byte)(unsafe.Pointer(&s.names[i]))[:m.Hdr.Namelen])
		p.Data = synthesizeError(s.bufs[i], len(data), ee, dst, s.Key.V6)
		return p.Data != nil
	}
	if !p.From.IsValid() {
		p.From = sockaddrAddr((*[unsafe.Sizeof(unix.RawSockaddrInet6{})]byte)(unsafe.Pointer(&s.names[i]))[:m.Hdr.Namelen])
	}
	if s.Mode == Raw && !s.Key.V6 {
		// Raw IPv4 sockets deliver the IP header.
		if len(data) < 20 {
			return false
		}
		ihl := int(data[0]&0x0f) * 4
		if ihl < 20 || len(data) < ihl+8 {
			return false
		}
		data = data[ihl:]
	}
	if len(data) < 8 {
		return false
	}
	p.Data = data
	return true
}

func sockaddrAddr(b []byte) netip.Addr {
	if len(b) < 8 {
		return netip.Addr{}
	}
	switch *(*uint16)(unsafe.Pointer(&b[0])) {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(b[4:8]))
	case unix.AF_INET6:
		if len(b) >= 24 {
			return netip.AddrFrom16([16]byte(b[8:24]))
		}
	}
	return netip.Addr{}
}

// readErrQueue reads one message from a ping socket's error queue into
// batch slot 0.
func (s *Socket) readErrQueue(fd uintptr) bool {
	s.resetHdrs()
	// Keep room in front of the quoted request for the ICMP error header
	// synthesizeError writes.
	s.iovs[0].Base = &s.bufs[0][errHeadroom]
	s.iovs[0].SetLen(maxPacket - errHeadroom)
	h := &s.hdrs[0].Hdr
	n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(h)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	s.iovs[0].Base = &s.bufs[0][0]
	s.iovs[0].SetLen(maxPacket)
	if errno != 0 {
		return false
	}
	s.hdrs[0].Len = uint32(n)
	h.Flags |= unix.MSG_ERRQUEUE
	s.nread = 1
	return true
}

// errHeadroom is the space kept before a quoted request: an ICMP error
// header (8) plus an IPv4 (20) or IPv6 (40) header.
const errHeadroom = 48

// synthesizeError builds "ICMP error + quoted IP header + our request" in
// buf from the extended error the kernel gave, so the prober parses errors
// from ping sockets and raw sockets with the same code.
func synthesizeError(buf []byte, n int, ee *unix.SockExtendedErr, dst netip.Addr, v6 bool) []byte {
	req := buf[errHeadroom : errHeadroom+n]
	if v6 {
		out := buf[:8+40+n]
		copy(out[48:], req)
		for i := 0; i < 48; i++ {
			out[i] = 0
		}
		out[0], out[1] = ee.Type, ee.Code
		if ee.Type == 2 { // packet too big carries the MTU
			out[4], out[5], out[6], out[7] = byte(ee.Info>>24), byte(ee.Info>>16), byte(ee.Info>>8), byte(ee.Info)
		}
		out[8] = 0x60
		out[8+6] = unix.IPPROTO_ICMPV6
		if dst.Is6() {
			a := dst.As16()
			copy(out[8+24:8+40], a[:])
		}
		return out
	}
	out := buf[errHeadroom-28 : errHeadroom+n]
	for i := 0; i < 28; i++ {
		out[i] = 0
	}
	out[0], out[1] = ee.Type, ee.Code
	if ee.Type == 3 && ee.Code == 4 {
		out[6], out[7] = byte(ee.Info>>8), byte(ee.Info)
	}
	out[8] = 0x45
	out[8+9] = unix.IPPROTO_ICMP
	if dst.Is4() {
		a := dst.As4()
		copy(out[8+16:8+20], a[:])
	}
	return out
}

// SendTo sends b to sa and returns the time taken just before the system
// call: its wall reading is the clock the kernel's receive stamps use, its
// monotonic reading survives clock steps.
func (s *Socket) SendTo(b []byte, sa unix.Sockaddr) (time.Time, error) {
	now := time.Now()
	err := unix.Sendto(s.fd, b, 0, sa)
	return now, err
}

// Close closes the socket; a blocked ReadBatch returns an error.
func (s *Socket) Close() error { return s.conn.Close() }

// Info is what a socket is: its key, how it was opened and its identifier.
type Info struct {
	Key  Key
	Mode Mode
	ID   uint16
}

// Info describes the socket.
func (s *Socket) Info() Info { return Info{Key: s.Key, Mode: s.Mode, ID: s.ID} }

// Pending reports whether a packet waits in the receive queue (SIOCINQ).
// ok is false where the kernel cannot tell (ping sockets).
func (s *Socket) Pending() (pending, ok bool) {
	n, err := unix.IoctlGetInt(s.fd, unix.SIOCINQ)
	if err != nil {
		return false, false
	}
	return n > 0, true
}
