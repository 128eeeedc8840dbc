package netlab

import (
	"encoding/binary"
	"net/netip"

	"github.com/probed/probed/internal/inet"
)

// Packet builders for tests: complete IPv4 / IPv6 packets with valid
// checksums, as a raw socket (IP_HDRINCL / a TUN device) carries them.

// ipPacket wraps l4 (whose checksum field at csum, if >= 0, is filled with
// the transport checksum over the pseudo-header) in an IP header.
func ipPacket(src, dst netip.Addr, proto uint8, ttl int, l4 []byte, csum int) []byte {
	var p []byte
	if dst.Is4() {
		p = make([]byte, 20+len(l4))
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		p[8] = byte(ttl)
		p[9] = proto
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		fixIPv4Checksum(p, 20)
		copy(p[20:], l4)
	} else {
		p = make([]byte, 40+len(l4))
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(l4)))
		p[6] = proto
		p[7] = byte(ttl)
		s, d := src.As16(), dst.As16()
		copy(p[8:], s[:])
		copy(p[24:], d[:])
		copy(p[40:], l4)
	}
	if csum < 0 {
		return p
	}
	hl := 20
	if dst.Is6() {
		hl = 40
	}
	m := p[hl:]
	var sum uint32
	if proto != protoICMP {
		sum = pseudoSum(src, dst, proto, len(m))
	}
	binary.BigEndian.PutUint16(m[csum:], ^inet.Fold(inet.Sum(sum, m)))
	return p
}

func pseudoSum(src, dst netip.Addr, proto uint8, n int) uint32 {
	var sum uint32
	for _, b := range [][]byte{src.AsSlice(), dst.AsSlice()} {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	return sum + uint32(proto) + uint32(n)
}

// udpPacket is a UDP datagram with size payload bytes.
func udpPacket(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, ttl, size int) []byte {
	l4 := make([]byte, 8+size)
	binary.BigEndian.PutUint16(l4, sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	for i := 8; i < len(l4); i++ {
		l4[i] = byte(i)
	}
	p := ipPacket(src, dst, protoUDP, ttl, l4, 6)
	if dst.Is4() {
		p[6] = 0x40 // DF, as Linux sends UDP
		fixIPv4Checksum(p, 20)
	}
	return p
}

// echoPacket is an ICMP / ICMPv6 echo request with identifier id, sequence
// seq and size payload bytes.
func echoPacket(src, dst netip.Addr, id, seq uint16, ttl, size int) []byte {
	l4 := make([]byte, 8+size)
	proto := uint8(protoICMP)
	l4[0] = 8
	if dst.Is6() {
		proto, l4[0] = protoICMPv6, 128
	}
	binary.BigEndian.PutUint16(l4[4:], id)
	binary.BigEndian.PutUint16(l4[6:], seq)
	for i := 8; i < len(l4); i++ {
		l4[i] = byte(seq) + byte(i)
	}
	return ipPacket(src, dst, proto, ttl, l4, 2)
}

// synPacket is a TCP SYN from sport to dport with sequence number seq.
func synPacket(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, seq uint32, ttl int) []byte {
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4, sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	binary.BigEndian.PutUint32(l4[4:], seq)
	l4[12] = 5 << 4
	l4[13] = 0x02
	binary.BigEndian.PutUint16(l4[14:], 65535)
	return ipPacket(src, dst, protoTCP, ttl, l4, 16)
}

func udp6(src, dst netip.Addr, sport, dport uint16, ttl, size int) []byte {
	return udpPacket(src, sport, dst, dport, ttl, size)
}
func echo4(src, dst netip.Addr, id, seq uint16, ttl, size int) []byte {
	return echoPacket(src, dst, id, seq, ttl, size)
}
func echo6(src, dst netip.Addr, id, seq uint16, ttl, size int) []byte {
	return echoPacket(src, dst, id, seq, ttl, size)
}
