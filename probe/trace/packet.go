package trace

import (
	"encoding/binary"
	"net/netip"

	"github.com/probed/probed/internal/inet"
)

// IP protocol numbers used on the wire.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// ICMP types this package reads.
const (
	icmp4EchoReply    = 0
	icmp4Unreachable  = 3
	icmp4Echo         = 8
	icmp4TimeExceeded = 11
	icmp6Unreachable  = 1
	icmp6TimeExceeded = 3
	icmp6Echo         = 128
	icmp6EchoReply    = 129
)

// key names one probe on the wire: what a reply (or the packet quoted in an
// ICMP error) carries back. flow and port stay constant for a target (Paris
// traceroute: ECMP hashes see one flow); id tells the probes apart.
type key struct {
	proto uint8 // protoICMP (also for ICMPv6), protoUDP or protoTCP
	dst   netip.Addr
	flow  uint16 // UDP/TCP source port or ICMP echo identifier
	port  uint16 // UDP/TCP destination port, 0 for ICMP
	id    uint32 // UDP checksum, ICMP sequence or TCP sequence number
}

// replyKind is what came back for a probe.
type replyKind uint8

const (
	kindTimeExceeded replyKind = iota + 1
	kindUnreachable            // ICMP destination unreachable (port unreachable from the target is the normal UDP end)
	kindEchoReply
	kindTCP // SYN-ACK or RST from the target
)

// pseudoSum is the sum of the IPv4/IPv6 pseudo-header that UDP, TCP and
// ICMPv6 checksums cover.
func pseudoSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	s := src.AsSlice()
	d := dst.AsSlice()
	sum := inet.Sum(0, s)
	sum = inet.Sum(sum, d)
	sum += uint32(proto)
	sum += uint32(length)
	return sum
}

// setChecksumTo fills the 16-bit word at comp in pkt so that the one's
// complement checksum over pkt (plus pseudo) comes out as want. pkt's own
// checksum field must already hold want. This is how Paris traceroute keeps
// the ICMP checksum constant while the sequence number changes, and makes the
// UDP checksum carry the probe id while the ports stay fixed.
func setChecksumTo(pkt []byte, comp int, pseudo uint32, want uint16) {
	pkt[comp], pkt[comp+1] = 0, 0
	// The receiver's sum over everything, checksum included, must be 0xffff.
	s := inet.Fold(inet.Sum(pseudo, pkt))
	// Need s +' x == 0xffff in one's complement, i.e. x = ^s.
	x := ^s
	binary.BigEndian.PutUint16(pkt[comp:], x)
}

// buildL4 writes the transport part of a probe: header plus a 2-byte
// compensation word and padding up to size bytes. It returns the bytes.
func buildL4(k key, src netip.Addr, size int, v6 bool) []byte {
	switch k.proto {
	case protoUDP:
		if size < 10 {
			size = 10
		}
		b := make([]byte, size)
		binary.BigEndian.PutUint16(b[0:], k.flow)
		binary.BigEndian.PutUint16(b[2:], k.port)
		binary.BigEndian.PutUint16(b[4:], uint16(size))
		binary.BigEndian.PutUint16(b[6:], uint16(k.id))
		setChecksumTo(b, 8, pseudoSum(src, k.dst, protoUDP, size), uint16(k.id))
		return b
	case protoTCP:
		b := make([]byte, 20)
		binary.BigEndian.PutUint16(b[0:], k.flow)
		binary.BigEndian.PutUint16(b[2:], k.port)
		binary.BigEndian.PutUint32(b[4:], k.id)
		b[12] = 5 << 4 // data offset: 5 words
		b[13] = 0x02   // SYN
		binary.BigEndian.PutUint16(b[14:], 1024)
		binary.BigEndian.PutUint16(b[16:], ^inet.Fold(inet.Sum(pseudoSum(src, k.dst, protoTCP, len(b)), b)))
		return b
	default: // ICMP echo
		if size < 10 {
			size = 10
		}
		b := make([]byte, size)
		var pseudo uint32
		if v6 {
			b[0] = icmp6Echo
			pseudo = pseudoSum(src, k.dst, protoICMPv6, size)
		} else {
			b[0] = icmp4Echo
		}
		want := flowChecksum(k.flow)
		binary.BigEndian.PutUint16(b[2:], want)
		binary.BigEndian.PutUint16(b[4:], k.flow)
		binary.BigEndian.PutUint16(b[6:], uint16(k.id))
		setChecksumTo(b, 8, pseudo, want)
		return b
	}
}

// flowChecksum is the constant ICMP checksum of a flow: derived from the
// identifier so two targets' flows differ, and never 0 or 0xffff.
func flowChecksum(flow uint16) uint16 {
	c := flow*40503 + 0x1234
	if c == 0 || c == 0xffff {
		c = 0x1234
	}
	return c
}

// buildIPv4 wraps l4 in an IPv4 header for an IP_HDRINCL socket. The kernel
// fills the header checksum; DF stays clear (discovery is not PMTU search).
func buildIPv4(src, dst netip.Addr, proto uint8, ttl int, tos uint8, ipid uint16, l4 []byte) []byte {
	b := make([]byte, 20+len(l4))
	b[0] = 0x45
	b[1] = tos
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], ipid)
	b[8] = byte(ttl)
	b[9] = proto
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], ^inet.Fold(inet.Sum(0, b[:20])))
	copy(b[20:], l4)
	return b
}

// reply is a parsed answer to one probe.
type reply struct {
	k    key
	from netip.Addr
	kind replyKind
}

// parseQuoted reads the probe quoted in an ICMP error: an IP header
// followed by at least 8 bytes of its transport header, which is all RFC 792
// promises.
func parseQuoted(q []byte, v6 bool) (key, bool) {
	var proto uint8
	var dst netip.Addr
	var l4 []byte
	if v6 {
		if len(q) < 48 || q[0]>>4 != 6 {
			return key{}, false
		}
		proto = q[6]
		dst = netip.AddrFrom16([16]byte(q[24:40]))
		l4 = q[40:]
	} else {
		if len(q) < 28 || q[0]>>4 != 4 {
			return key{}, false
		}
		ihl := int(q[0]&0x0f) * 4
		if ihl < 20 || len(q) < ihl+8 {
			return key{}, false
		}
		proto = q[9]
		dst = netip.AddrFrom4([4]byte(q[16:20]))
		l4 = q[ihl:]
	}
	switch proto {
	case protoUDP:
		return key{proto: protoUDP, dst: dst, flow: be16(l4[0:]), port: be16(l4[2:]), id: uint32(be16(l4[6:]))}, true
	case protoTCP:
		return key{proto: protoTCP, dst: dst, flow: be16(l4[0:]), port: be16(l4[2:]), id: binary.BigEndian.Uint32(l4[4:])}, true
	case protoICMP, protoICMPv6:
		if (!v6 && l4[0] != icmp4Echo) || (v6 && l4[0] != icmp6Echo) {
			return key{}, false
		}
		return key{proto: protoICMP, dst: dst, flow: be16(l4[4:]), id: uint32(be16(l4[6:]))}, true
	}
	return key{}, false
}

// parseICMP reads an ICMP or ICMPv6 message (without IP header) that came
// from `from`.
func parseICMP(m []byte, from netip.Addr, v6 bool) (reply, bool) {
	if len(m) < 8 {
		return reply{}, false
	}
	typ := m[0]
	switch {
	case (!v6 && typ == icmp4EchoReply) || (v6 && typ == icmp6EchoReply):
		if !zeroPadded(m) {
			// Not the echo of one of our probes (their payload is the
			// compensation word and zeros): another program's, or the
			// echo prober's reply on one of its flows, whose identifier
			// a trace of that flow shares (probe/flows.go).
			return reply{}, false
		}
		return reply{k: key{proto: protoICMP, dst: from, flow: be16(m[4:]), id: uint32(be16(m[6:]))}, from: from, kind: kindEchoReply}, true
	case (!v6 && typ == icmp4TimeExceeded) || (v6 && typ == icmp6TimeExceeded):
		if m[1] != 0 { // code 1 is fragment reassembly time exceeded: not ours
			return reply{}, false
		}
		k, ok := parseQuoted(m[8:], v6)
		return reply{k: k, from: from, kind: kindTimeExceeded}, ok
	case (!v6 && typ == icmp4Unreachable) || (v6 && typ == icmp6Unreachable):
		k, ok := parseQuoted(m[8:], v6)
		return reply{k: k, from: from, kind: kindUnreachable}, ok
	}
	return reply{}, false
}

// zeroPadded says whether an ICMP echo message carries a probe's payload:
// probeSize bytes, zero after the compensation word.
func zeroPadded(m []byte) bool {
	if len(m) != probeSize {
		return false
	}
	for _, b := range m[10:] {
		if b != 0 {
			return false
		}
	}
	return true
}

// parseTCP reads a TCP segment from the target: a SYN-ACK or RST answering
// our SYN acknowledges its sequence number plus one.
func parseTCP(t []byte, from netip.Addr) (reply, bool) {
	if len(t) < 20 {
		return reply{}, false
	}
	flags := t[13]
	const synAck, rst, ack = 0x12, 0x04, 0x10
	if flags&ack == 0 || (flags&synAck != synAck && flags&rst == 0) {
		return reply{}, false
	}
	k := key{proto: protoTCP, dst: from, flow: be16(t[2:]), port: be16(t[0:]), id: binary.BigEndian.Uint32(t[8:]) - 1}
	return reply{k: k, from: from, kind: kindTCP}, true
}

// parseIPv4 strips the IPv4 header a raw IPv4 socket delivers.
func parseIPv4(b []byte) (payload []byte, src netip.Addr, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return nil, netip.Addr{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return nil, netip.Addr{}, false
	}
	return b[ihl:], netip.AddrFrom4([4]byte(b[12:16])), true
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
