// Package rawsock holds what the path features' raw sockets (probe/trace,
// probe/pmtu) share: the receive loop with kernel receive timestamps, and
// the kernel's software transmit timestamps of send sockets.
//
// Both ends of a round trip are the kernel's: the receive time is when the
// packet reached the socket layer (SO_TIMESTAMPNS), not when a goroutine got
// round to reading it, and the send time is when the packet was handed to
// the device driver (SO_TIMESTAMPING, SOF_TIMESTAMPING_TX_SOFTWARE), not
// when a goroutine was about to make the system call. On a loaded agent the
// difference is the scheduler's delay: milliseconds.
package rawsock

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SetRxTimestamps asks the kernel to stamp every packet the socket receives
// (SO_TIMESTAMPNS); ReadLoop hands the stamp on.
func SetRxTimestamps(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
}

// oobSize holds the control messages ReadLoop and DrainTxTimestamps expect:
// a timestamp (3 timespecs for SO_TIMESTAMPING) and an extended error with
// its offender address.
const oobSize = 256

// ReadLoop reads packets from f until it is closed, handing each (with the
// sender's address and the receive time) to handle. The receive time is
// the kernel's (SetRxTimestamps), or the time the packet was read when the
// kernel gave none. The buffer is reused: handle must not keep b.
func ReadLoop(f *os.File, handle func(b []byte, from netip.Addr, at time.Time)) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 65536)
	oob := make([]byte, oobSize)
	for {
		var n, oobn int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err != nil {
			return // closed
		}
		if rerr != nil {
			continue
		}
		at, ok := rxTime(oob[:oobn])
		if !ok {
			at = time.Now()
		}
		var a netip.Addr
		switch sa := from.(type) {
		case *unix.SockaddrInet4:
			a = netip.AddrFrom4(sa.Addr)
		case *unix.SockaddrInet6:
			a = netip.AddrFrom16(sa.Addr)
		}
		handle(buf[:n], a, at)
	}
}

// rxTime finds the SCM_TIMESTAMPNS control message.
func rxTime(oob []byte) (time.Time, bool) {
	var at time.Time
	found := false
	eachCmsg(oob, func(level, typ int32, body []byte) {
		if level == unix.SOL_SOCKET && typ == unix.SCM_TIMESTAMPNS && len(body) >= int(unsafe.Sizeof(unix.Timespec{})) {
			at = timespec(body)
			found = true
		}
	})
	return at, found
}

func timespec(b []byte) time.Time {
	sec := int64(binary.NativeEndian.Uint64(b[0:]))
	nsec := int64(binary.NativeEndian.Uint64(b[8:]))
	return time.Unix(sec, nsec)
}

// eachCmsg calls f for every control message in oob.
func eachCmsg(oob []byte, f func(level, typ int32, body []byte)) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return
		}
		f(h.Level, h.Type, oob[unix.CmsgLen(0):h.Len])
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(oob) {
			return
		}
		oob = oob[next:]
	}
}

// SetTxTimestamps asks the kernel for a software transmit timestamp of
// every packet sent on fd: the time the packet was handed to the device
// driver, queued on the socket's error queue with a copy of the packet
// (link-layer header included, so the caller can tell which probe it was).
// fd must not be in the Go runtime's poller: a socket whose only event is
// its error queue makes the poller report the descriptor as unpollable.
// Read the stamps with DrainTxTimestamps.
func SetTxTimestamps(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPING,
		unix.SOF_TIMESTAMPING_TX_SOFTWARE|unix.SOF_TIMESTAMPING_SOFTWARE)
}

// TxBuffers is the scratch space of DrainTxTimestamps; one per socket (or
// guarded by the caller's lock).
type TxBuffers struct {
	buf, oob []byte
}

// DrainTxTimestamps reads, without blocking, every transmit timestamp
// waiting in fd's error queue and hands each to handle with the packet as
// sent (starting at the link-layer header, if the device has one; see
// NetworkHeader). It returns how many it read.
func DrainTxTimestamps(fd int, tb *TxBuffers, handle func(pkt []byte, at time.Time)) int {
	if tb.buf == nil {
		tb.buf, tb.oob = make([]byte, 2048), make([]byte, oobSize)
	}
	count := 0
	for {
		n, oobn, flags, _, err := unix.Recvmsg(fd, tb.buf, tb.oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return count
		}
		count++
		var at time.Time
		isStamp := false
		eachCmsg(tb.oob[:oobn], func(level, typ int32, body []byte) {
			switch {
			case level == unix.SOL_SOCKET && typ == unix.SCM_TIMESTAMPING && len(body) >= 3*16:
				// ts[0] is the software stamp; [1] is deprecated
				// and [2] the hardware one.
				at = timespec(body)
			case (level == unix.SOL_IP && typ == unix.IP_RECVERR) || (level == unix.SOL_IPV6 && typ == unix.IPV6_RECVERR):
				if len(body) >= int(unsafe.Sizeof(unix.SockExtendedErr{})) {
					ee := (*unix.SockExtendedErr)(unsafe.Pointer(&body[0]))
					isStamp = ee.Errno == uint32(unix.ENOMSG) && ee.Origin == unix.SO_EE_ORIGIN_TIMESTAMPING
				}
			}
		})
		if !isStamp || at.IsZero() || flags&unix.MSG_TRUNC != 0 {
			continue
		}
		handle(tb.buf[:n], at)
	}
}

// NetworkHeaders returns where the IP header of a packet looped back with a
// transmit timestamp may start: at once (TUN and other devices without a
// link layer), after an Ethernet header, or after an Ethernet header with
// one VLAN tag. The caller tries each and keeps the one that parses as one
// of its probes.
func NetworkHeaders(pkt []byte) [][]byte {
	out := [][]byte{pkt}
	if len(pkt) >= 14 {
		switch binary.BigEndian.Uint16(pkt[12:]) {
		case 0x0800, 0x86dd:
			out = append(out, pkt[14:])
		case 0x8100:
			if len(pkt) >= 18 {
				out = append(out, pkt[18:])
			}
		}
	}
	return out
}
