package stamp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rxMeta is what the kernel tells about one received datagram.
type rxMeta struct {
	ts      time.Time // SO_TIMESTAMPNS; zero when the kernel gave none
	tos     uint8     // IPv4 TOS / IPv6 traffic class
	hasTOS  bool
	ttl     uint8 // IPv4 TTL / IPv6 hop limit
	hasTTL  bool
	dst     netip.Addr // the address the datagram was sent to (PKTINFO)
	ifindex int
}

// oobSize holds every control message we ask for (timestamp, TOS, TTL, pktinfo).
const oobSize = 256

// sockOpts are the options set on every STAMP socket before bind.
type sockOpts struct {
	v6        bool
	tos       int // -1: leave the default
	iface     string
	reuseAddr bool
	rcvbuf    int // receive buffer to ask for; 0: the default
}

// control returns a net.ListenConfig/net.Dialer Control function that sets
// the options: kernel receive timestamps, the received TOS/TTL and
// destination address as control messages, TTL 255 on send (RFC 8762 asks
// senders and reflectors for 255 so the far end can count hops), TOS, and
// the interface binding.
func (o sockOpts) control(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		s := int(fd)
		set := func(level, opt, val int, what string) {
			if serr == nil {
				if err := unix.SetsockoptInt(s, level, opt, val); err != nil {
					serr = fmt.Errorf("setsockopt %s: %w", what, err)
				}
			}
		}
		set(unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS")
		if o.reuseAddr {
			set(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR")
		}
		if o.rcvbuf > 0 {
			// SO_RCVBUFFORCE passes net.core.rmem_max with CAP_NET_ADMIN;
			// without it SO_RCVBUF gets as much as rmem_max allows.
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.rcvbuf) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, o.rcvbuf)
			}
		}
		if o.v6 {
			set(unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, 1, "IPV6_RECVTCLASS")
			set(unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1, "IPV6_RECVHOPLIMIT")
			set(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO")
			set(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, 255, "IPV6_UNICAST_HOPS")
			if o.tos >= 0 {
				set(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, o.tos, "IPV6_TCLASS")
			}
		} else {
			set(unix.IPPROTO_IP, unix.IP_RECVTOS, 1, "IP_RECVTOS")
			set(unix.IPPROTO_IP, unix.IP_RECVTTL, 1, "IP_RECVTTL")
			set(unix.IPPROTO_IP, unix.IP_PKTINFO, 1, "IP_PKTINFO")
			set(unix.IPPROTO_IP, unix.IP_TTL, 255, "IP_TTL")
			if o.tos >= 0 {
				set(unix.IPPROTO_IP, unix.IP_TOS, o.tos, "IP_TOS")
			}
		}
		if o.iface != "" && serr == nil {
			if err := unix.SetsockoptString(s, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, o.iface); err != nil {
				serr = fmt.Errorf("bind to interface %s: %w", o.iface, err)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// listenUDP opens a UDP socket with the STAMP options. network is "udp4" or
// "udp6" (Go sets IPV6_V6ONLY on "udp6", so IPv4 needs its own socket).
func listenUDP(ctx context.Context, network, addr string, o sockOpts) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: o.control}
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// parseOOB decodes the control messages of one datagram without allocating.
func parseOOB(oob []byte, m *rxMeta) {
	*m = rxMeta{}
	hdr := unix.CmsgLen(0)
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return
		}
		data := oob[hdr:l]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= int(unsafe.Sizeof(unix.Timespec{})):
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			m.ts = time.Unix(int64(ts.Sec), int64(ts.Nsec))
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(data) >= 1:
			m.tos, m.hasTOS = data[0], true
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL && len(data) >= 4:
			m.ttl, m.hasTTL = uint8(*(*int32)(unsafe.Pointer(&data[0]))), true
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			m.dst, m.ifindex = netip.AddrFrom4(pi.Addr), int(pi.Ifindex)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_TCLASS && len(data) >= 4:
			m.tos, m.hasTOS = uint8(*(*int32)(unsafe.Pointer(&data[0]))), true
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT && len(data) >= 4:
			m.ttl, m.hasTTL = uint8(*(*int32)(unsafe.Pointer(&data[0]))), true
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			m.dst, m.ifindex = netip.AddrFrom16(pi.Addr), int(pi.Ifindex)
		}
		sp := unix.CmsgSpace(l - hdr)
		if sp > len(oob) {
			return
		}
		oob = oob[sp:]
	}
}

// putCmsg writes one control message with an int-sized or raw payload at
// the start of b and returns its aligned length.
func putCmsg(b []byte, level, typ int, data []byte) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = int32(level)
	h.Type = int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return unix.CmsgSpace(len(data))
}

// buildTxOOB writes the control messages of a reply into b: the source
// address (so a reflector bound to a wildcard answers from the address it
// was asked on) and the TOS / traffic class. It returns the length used.
func buildTxOOB(b []byte, v6 bool, src netip.Addr, tos uint8) int {
	clear(b)
	n := 0
	var tosv [4]byte
	*(*int32)(unsafe.Pointer(&tosv[0])) = int32(tos)
	if v6 {
		if src.IsValid() && src.Is6() && !src.Is4In6() {
			var pi unix.Inet6Pktinfo
			pi.Addr = src.As16()
			n += putCmsg(b[n:], unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, (*[unix.SizeofInet6Pktinfo]byte)(unsafe.Pointer(&pi))[:])
		}
		n += putCmsg(b[n:], unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tosv[:])
		return n
	}
	if src.IsValid() && src.Is4() {
		var pi unix.Inet4Pktinfo
		pi.Spec_dst = src.As4()
		n += putCmsg(b[n:], unix.IPPROTO_IP, unix.IP_PKTINFO, (*[unix.SizeofInet4Pktinfo]byte)(unsafe.Pointer(&pi))[:])
	}
	n += putCmsg(b[n:], unix.IPPROTO_IP, unix.IP_TOS, tosv[:])
	return n
}
