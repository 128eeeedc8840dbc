package netlab

import (
	"encoding/binary"
	"net/netip"

	"github.com/probed/probed/internal/inet"
)

// ipHeader is what the emulator reads from a packet: enough to route it,
// age it and answer it.
type ipHeader struct {
	v6       bool
	src, dst netip.Addr
	ttl      int // TTL or hop limit
	df       bool
	hdrLen   int
}

// parseIP reads the IPv4 or IPv6 header at the start of b.
func parseIP(b []byte) (h ipHeader, ok bool) {
	if len(b) < 1 {
		return h, false
	}
	switch b[0] >> 4 {
	case 4:
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return h, false
		}
		h.hdrLen = ihl
		h.ttl = int(b[8])
		h.df = b[6]&0x40 != 0
		h.src = netip.AddrFrom4([4]byte(b[12:16]))
		h.dst = netip.AddrFrom4([4]byte(b[16:20]))
		return h, true
	case 6:
		if len(b) < 40 {
			return h, false
		}
		h.v6 = true
		h.hdrLen = 40
		h.ttl = int(b[7])
		h.src = netip.AddrFrom16([16]byte(b[8:24]))
		h.dst = netip.AddrFrom16([16]byte(b[24:40]))
		return h, true
	}
	return h, false
}

// fixIPv4Checksum recomputes the header checksum after a header change.
func fixIPv4Checksum(b []byte, hdrLen int) {
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:], inet.Checksum(b[:hdrLen]))
}

// setTTL writes a TTL / hop limit (fixing the IPv4 checksum).
func setTTL(b []byte, h *ipHeader, ttl int) {
	if h.v6 {
		b[7] = byte(ttl)
		return
	}
	b[8] = byte(ttl)
	fixIPv4Checksum(b, h.hdrLen)
}

// setDSCP rewrites the DSCP bits and keeps ECN. The IPv4 header checksum is
// fixed; transport checksums do not cover the field.
func setDSCP(b []byte, h *ipHeader, dscp uint8) {
	if h.v6 {
		tc := (b[0]&0x0f)<<4 | b[1]>>4
		tc = dscp<<2 | tc&0x03
		b[0] = 0x60 | tc>>4
		b[1] = tc<<4 | b[1]&0x0f
		return
	}
	b[1] = dscp<<2 | b[1]&0x03
	fixIPv4Checksum(b, h.hdrLen)
}

// ICMP types the emulator sends.
const (
	icmp4DestUnreach   = 3
	icmp4FragNeeded    = 4 // code of icmp4DestUnreach
	icmp4TimeExceeded  = 11
	icmp6PacketTooBig  = 2
	icmp6TimeExceeded  = 3
	maxICMP4Quote      = 576 - 20 - 8  // RFC 1812: the error fits in 576 bytes
	maxICMP6Quote      = 1280 - 40 - 8 // RFC 4443: the error fits in the minimum MTU
	icmpErrorTTL       = 64
	protoICMP          = 1
	protoICMPv6        = 58
	protoTCP           = 6
	protoUDP           = 17
	ipv4HeaderLen      = 20
	ipv6HeaderLen      = 40
	icmpHeaderLen      = 8
	ipv4FlagsDontFrag  = 0x40
	ipv4TOSNetControl  = 0xc0 // precedence 6, as Linux sends ICMP errors
	ipv6TrafficClassNC = 0xc0
)

// icmpError builds an ICMP (IPv4) or ICMPv6 error from `from` to the
// original packet's source, quoting the original as the RFCs ask. rest is
// the 4 bytes after the checksum (unused, or the next-hop MTU).
func icmpError(h *ipHeader, orig []byte, from netip.Addr, typ, code uint8, rest uint32, ttl int) []byte {
	if h.v6 {
		q := orig
		if len(q) > maxICMP6Quote {
			q = q[:maxICMP6Quote]
		}
		b := make([]byte, ipv6HeaderLen+icmpHeaderLen+len(q))
		b[0] = 0x60 | ipv6TrafficClassNC>>4
		b[1] = (ipv6TrafficClassNC & 0x0f) << 4
		binary.BigEndian.PutUint16(b[4:], uint16(icmpHeaderLen+len(q)))
		b[6] = protoICMPv6
		b[7] = byte(ttl)
		s, d := from.As16(), h.src.As16()
		copy(b[8:], s[:])
		copy(b[24:], d[:])
		m := b[ipv6HeaderLen:]
		m[0], m[1] = typ, code
		binary.BigEndian.PutUint32(m[4:], rest)
		copy(m[icmpHeaderLen:], q)
		// Pseudo-header: addresses, upper-layer length, next header.
		var sum uint32
		for i := 8; i < 40; i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		sum += uint32(len(m)) + protoICMPv6
		binary.BigEndian.PutUint16(m[2:], ^inet.Fold(inet.Sum(sum, m)))
		return b
	}
	q := orig
	if len(q) > maxICMP4Quote {
		q = q[:maxICMP4Quote]
	}
	b := make([]byte, ipv4HeaderLen+icmpHeaderLen+len(q))
	b[0] = 0x45
	b[1] = ipv4TOSNetControl
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = byte(ttl)
	b[9] = protoICMP
	s, d := from.As4(), h.src.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	fixIPv4Checksum(b, ipv4HeaderLen)
	m := b[ipv4HeaderLen:]
	m[0], m[1] = typ, code
	binary.BigEndian.PutUint32(m[4:], rest)
	copy(m[icmpHeaderLen:], q)
	binary.BigEndian.PutUint16(m[2:], inet.Checksum(m))
	return b
}
