package pmtu

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// oob4 sets the source address and interface (IP_PKTINFO) and TOS of an
// IPv4 probe.
func oob4(tg Target, ifindex int) []byte {
	var b cmsgs
	if tg.Src.IsValid() || ifindex != 0 {
		pi := unix.Inet4Pktinfo{Ifindex: int32(ifindex)}
		if tg.Src.IsValid() {
			pi.Spec_dst = tg.Src.Unmap().As4()
		}
		b.put(unix.IPPROTO_IP, unix.IP_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&pi)), unix.SizeofInet4Pktinfo))
	}
	if tg.TOS != 0 {
		b.put(unix.IPPROTO_IP, unix.IP_TOS, nativeInt(int(tg.TOS)))
	}
	return b
}

// oob6 sets the source address and interface (IPV6_PKTINFO) and traffic
// class of an IPv6 probe.
func oob6(tg Target, ifindex int) []byte {
	var b cmsgs
	if tg.Src.IsValid() || ifindex != 0 {
		pi := unix.Inet6Pktinfo{Ifindex: uint32(ifindex)}
		if tg.Src.IsValid() {
			pi.Addr = tg.Src.As16()
		}
		b.put(unix.IPPROTO_IPV6, unix.IPV6_PKTINFO, unsafe.Slice((*byte)(unsafe.Pointer(&pi)), unix.SizeofInet6Pktinfo))
	}
	if tg.TOS != 0 {
		b.put(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, nativeInt(int(tg.TOS)))
	}
	return b
}

type cmsgs []byte

func (c *cmsgs) put(level, typ int, data []byte) {
	off := len(*c)
	*c = append(*c, make([]byte, unix.CmsgSpace(len(data)))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&(*c)[off]))
	h.Level = int32(level)
	h.Type = int32(typ)
	h.SetLen(unix.CmsgLen(len(data)))
	copy((*c)[off+unix.CmsgLen(0):], data)
}

func nativeInt(v int) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, uint32(int32(v)))
	return b
}
