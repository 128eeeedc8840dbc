package netlab

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tapSnap is how much of each outgoing packet the tap keeps: enough to
// tell packets apart.
const tapSnap = 128

// tap is a packet socket on a site's TUN device that sees every packet the
// site sends, with the kernel's timestamp of the moment it was handed to
// the device. The input thread stamps a packet with that time instead of
// its own read time, so its wakeup latency (tens of µs, much more on a
// loaded machine) is not added to the path's delay.
type tap struct {
	fd  int
	buf [tapSnap]byte
	oob [64]byte
}

// openTap opens the tap in the calling thread's namespace.
func openTap(ifname string) (*tap, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, fmt.Errorf("tap: packet socket: %w", err)
	}
	// Keep only outgoing packets, cut to tapSnap bytes, before anything
	// is queued: the packets the emulator writes into the device would
	// otherwise fill the socket for nothing.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: skfAdOff + skfAdPkttype},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.PACKET_OUTGOING},
		{Code: unix.BPF_RET | unix.BPF_K, K: tapSnap},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	steps := []func() error{
		func() error { return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog) },
		func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) },
		func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) },
		func() error {
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tap: %w", err)
		}
	}
	return &tap{fd: fd}, nil
}

// Classic BPF ancillary load of the packet type (linux/filter.h).
const (
	skfAdOff     = 0xfffff000 // SKF_AD_OFF, -0x1000
	skfAdPkttype = 4          // SKF_AD_PKTTYPE
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sentAt returns the kernel's timestamp (Unix ns) of pkt, read from the
// tap, whose queue holds the packets in the order the TUN device got them.
// Older entries without a match (a packet the device dropped) are skipped;
// ok is false when pkt is not found, and the caller uses its own clock.
func (t *tap) sentAt(pkt []byte) (ns int64, ok bool) {
	want := pkt[:min(len(pkt), tapSnap)]
	for range 64 {
		n, oobn, _, _, err := unix.Recvmsg(t.fd, t.buf[:], t.oob[:], 0)
		if err != nil {
			return 0, false // EAGAIN: nothing queued
		}
		if !bytes.Equal(t.buf[:n], want) {
			continue
		}
		msgs, err := unix.ParseSocketControlMessage(t.oob[:oobn])
		if err != nil {
			return 0, false
		}
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				sec := int64(binary.NativeEndian.Uint64(m.Data))
				nsec := int64(binary.NativeEndian.Uint64(m.Data[8:]))
				return sec*1e9 + nsec, true
			}
		}
		return 0, false
	}
	return 0, false
}

// stamp returns when pkt was sent, on the lab clock: the kernel's send
// time from the tap, or the current time when the tap has no match. One
// time.Now() gives both the monotonic reading (lab clock) and the wall
// reading the kernel's timestamp is compared with, so a pause between two
// clock reads cannot move the stamp.
func (t *tap) stamp(pkt []byte, c *clock) int64 {
	sent, ok := t.sentAt(pkt)
	now := time.Now()
	mono := int64(now.Sub(c.epoch))
	if !ok {
		return mono
	}
	age := now.UnixNano() - sent
	if age < 0 || age > int64(time.Second) {
		return mono // a clock step: trust our own reading
	}
	return mono - age
}

func (t *tap) close() { unix.Close(t.fd) }
