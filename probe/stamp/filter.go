package stamp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The reflector's sockets drop datagrams from sources the allow-list does
// not name in the kernel, with a classic BPF socket filter on the source
// address: a flood from an unlisted source then never takes space in the
// receive buffer (where it would push out packets of listed sessions) nor
// a read in the reflector. It needs no privilege. The user-space check
// stays, for the moment a reload swaps the list and for lists too long for
// a filter.

// skfNetOff is SKF_NET_OFF: loads relative to the network header.
const skfNetOff = -0x100000

// maxFilterInsns is BPF_MAXINSNS.
const maxFilterInsns = 4096

// filterAccept keeps the whole datagram.
const filterAccept = 0xffffffff

// allowFilter compiles the allow-list into a socket filter for an IPv4
// (v6 false) or IPv6 socket. ok is false when the list is too long for a
// filter (the socket then gets none).
func allowFilter(a *AllowList, v6 bool) (prog []bpf.RawInstruction, ok bool) {
	var ins []bpf.Instruction
	if a != nil {
		if v6 {
			ins = allowFilter6(a)
		} else {
			ins = allowFilter4(a)
		}
	}
	ins = append(ins, bpf.RetConstant{Val: 0})
	if len(ins) > maxFilterInsns {
		return nil, false
	}
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, false
	}
	return raw, true
}

func netLoad(off int) bpf.Instruction {
	return bpf.LoadAbsolute{Off: uint32(int32(skfNetOff + off)), Size: 4}
}

// allowFilter4 accepts an IPv4 source address (header octets 12..15) that
// is one of the list's addresses or in one of its prefixes.
func allowFilter4(a *AllowList) []bpf.Instruction {
	var ins []bpf.Instruction
	src := netLoad(12)
	ins = append(ins, src)
	for ad := range a.addrs {
		if !ad.Is4() {
			continue
		}
		b := ad.As4()
		ins = append(ins,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[:]), SkipFalse: 1},
			bpf.RetConstant{Val: filterAccept})
	}
	for _, p := range a.prefixes {
		if !p.Addr().Is4() {
			continue
		}
		b := p.Addr().As4()
		mask := binary.BigEndian.Uint32(net.CIDRMask(p.Bits(), 32))
		ins = append(ins, src,
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[:]) & mask, SkipFalse: 1},
			bpf.RetConstant{Val: filterAccept})
	}
	return ins
}

// allowFilter6 accepts an IPv6 source address (header octets 8..23) that
// is one of the list's addresses or in one of its prefixes.
func allowFilter6(a *AllowList) []bpf.Instruction {
	var ins []bpf.Instruction
	match := func(addr netip.Addr, bits int) {
		b := addr.As16()
		mask := net.CIDRMask(bits, 128)
		var entry []bpf.Instruction
		for w := 0; w < 4; w++ {
			m := binary.BigEndian.Uint32(mask[4*w:])
			if m == 0 {
				break
			}
			entry = append(entry, netLoad(8+4*w))
			if m != 0xffffffff {
				entry = append(entry, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: m})
			}
			entry = append(entry, bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[4*w:]) & m})
		}
		// A mismatch skips to the next entry: past the rest of this
		// one and its accept.
		for i, in := range entry {
			if j, ok := in.(bpf.JumpIf); ok {
				j.SkipFalse = uint8(len(entry) - i) // the rest, then the accept
				entry[i] = j
			}
		}
		ins = append(ins, entry...)
		ins = append(ins, bpf.RetConstant{Val: filterAccept})
	}
	for ad := range a.addrs {
		if ad.Is6() {
			match(ad, 128)
		}
	}
	for _, p := range a.prefixes {
		if p.Addr().Is6() && !p.Addr().Is4In6() {
			match(p.Addr(), p.Bits())
		}
	}
	return ins
}

// attachFilter puts prog on the socket, or removes the socket's filter
// when prog is nil.
func attachFilter(c *net.UDPConn, prog []bpf.RawInstruction) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if prog == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
			if serr == unix.ENOENT {
				serr = nil // had none
			}
			return
		}
		f := make([]unix.SockFilter, len(prog))
		for i, r := range prog {
			f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
		}
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]})
	})
	if err != nil {
		return err
	}
	return serr
}

// socketDrops reads the kernel's drop counter of a socket (SO_MEMINFO
// SK_MEMINFO_DROPS): datagrams dropped because the receive buffer was full
// and datagrams the socket filter refused.
func socketDrops(c *net.UDPConn) (uint64, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var mi [unix.SK_MEMINFO_VARS]uint32
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(mi))
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
	}); err != nil || errno != 0 {
		return 0, false
	}
	return uint64(mi[unix.SK_MEMINFO_DROPS]), true
}
