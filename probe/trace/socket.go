package trace

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/probe/internal/rawsock"
)

// rawSocket opens a raw socket. Receive sockets are non-blocking and handed
// to the runtime poller (os.File), so Close unblocks a pending read.
func rawSocket(family, proto int, recv bool) (*os.File, int, error) {
	typ := unix.SOCK_RAW | unix.SOCK_CLOEXEC
	if recv {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, typ, proto)
	if err != nil {
		return nil, -1, fmt.Errorf("opening raw socket (family %d, protocol %d): %w", family, proto, err)
	}
	if !recv {
		// A send-only raw socket still gets a copy of every packet of
		// its protocol; drop them in the kernel rather than let the
		// buffer fill.
		if err := dropAll(fd); err != nil {
			unix.Close(fd)
			return nil, -1, err
		}
		return nil, fd, nil
	}
	// Root may go past net.core.rmem_max: a discovery burst must not
	// overflow the queue and turn answered hops into silent ones.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	// Hop RTTs end at the kernel's receive time, not when the reader
	// goroutine got to the packet.
	if err := rawsock.SetRxTimestamps(fd); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("enabling receive timestamps: %w", err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("raw-%d-%d", family, proto)), fd, nil
}

// dropAll attaches a one-instruction BPF program ("return 0") so the socket
// receives nothing.
func dropAll(fd int) error {
	prog := []unix.SockFilter{{Code: 0x06, K: 0}} // BPF_RET|BPF_K 0
	fp := unix.SockFprog{Len: 1, Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return fmt.Errorf("attaching drop filter to send socket: %w", err)
	}
	return nil
}

// sourceFor returns the address the kernel would send from to reach dst:
// connecting a UDP socket resolves the route without sending anything. The
// UDP, TCP and ICMPv6 checksums cover it, so it must be known up front.
func (t *Tracer) sourceFor(dst netip.Addr, ifindex int) (netip.Addr, error) {
	t.mu.Lock()
	defer t.mu.Unlock() // one lookup at a time: the socket is shared
	fd := t.route4
	var sa unix.Sockaddr
	if dst.Is4() {
		sa = &unix.SockaddrInet4{Port: 33434, Addr: dst.As4()}
	} else {
		fd = t.route6
		sa = &unix.SockaddrInet6{Port: 33434, Addr: dst.As16()}
	}
	if fd < 0 {
		return netip.Addr{}, fmt.Errorf("finding source address for %s: no socket for its address family", dst)
	}
	// Bound to the interface only for this lookup (0 unbinds).
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BINDTOIFINDEX, ifindex); err != nil {
		return netip.Addr{}, fmt.Errorf("finding source address for %s on interface %d: %w", dst, ifindex, err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		return netip.Addr{}, fmt.Errorf("finding route to %s: %w", dst, err)
	}
	local, err := unix.Getsockname(fd)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("finding source address for %s: %w", dst, err)
	}
	switch l := local.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(l.Addr), nil
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(l.Addr), nil
	}
	return netip.Addr{}, fmt.Errorf("finding source address for %s: unexpected socket address", dst)
}

// send6Oob builds the ancillary data of an IPv6 probe: hop limit, traffic
// class and the source address (the checksum was computed over it).
func send6Oob(src netip.Addr, ifindex, hopLimit int, tclass uint8) []byte {
	oob := make([]byte, unix.CmsgSpace(4)*2+unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	off := 0
	put := func(typ int32, data []byte) {
		h := (*unix.Cmsghdr)(unsafePointer(&oob[off]))
		h.Level = unix.SOL_IPV6
		h.Type = typ
		h.SetLen(unix.CmsgLen(len(data)))
		copy(oob[off+unix.CmsgLen(0):], data)
		off += unix.CmsgSpace(len(data))
	}
	put(unix.IPV6_HOPLIMIT, nativeInt(hopLimit))
	put(unix.IPV6_TCLASS, nativeInt(int(tclass)))
	var pi unix.Inet6Pktinfo
	pi.Addr = src.As16()
	pi.Ifindex = uint32(ifindex)
	put(unix.IPV6_PKTINFO, pktinfoBytes(&pi))
	return oob[:off]
}

// send4Oob names the outgoing interface of an IPv4 probe (IP_PKTINFO);
// the header, source included, is ours (IP_HDRINCL).
func send4Oob(ifindex int) []byte {
	if ifindex == 0 {
		return nil
	}
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	h := (*unix.Cmsghdr)(unsafePointer(&oob[0]))
	h.Level = unix.IPPROTO_IP
	h.Type = unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	pi := unix.Inet4Pktinfo{Ifindex: int32(ifindex)}
	copy(oob[unix.CmsgLen(0):], unsafe.Slice((*byte)(unsafe.Pointer(&pi)), unix.SizeofInet4Pktinfo))
	return oob
}

func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }

func nativeInt(v int) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(int32(v)))
	return b
}

func pktinfoBytes(pi *unix.Inet6Pktinfo) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(pi)), unix.SizeofInet6Pktinfo)
}
