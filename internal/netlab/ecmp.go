package netlab

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
)

// Flow is what the lab's ECMP routers hash to choose a member path: the
// 5-tuple of a packet. For ICMP and ICMPv6 echo requests and replies the
// identifier takes the place of both ports, and the sequence number and
// checksum are not hashed: a Paris traceroute keeps identifier and checksum
// constant and a router that hashed the checksum would still see one flow.
// ICMP errors (Time Exceeded, Destination Unreachable, Packet Too Big,
// ...) are hashed as the packet they quote, as Linux's multipath hash
// does, so an error about a flow follows that flow. Other protocols, and
// IPv4 fragments after the first, hash with both ports 0.
type Flow struct {
	Src, Dst         netip.Addr
	Proto            uint8  // IP protocol: 1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6
	SrcPort, DstPort uint16 // TCP/UDP ports; ICMP echo: the identifier, twice
}

// EchoFlow is the flow of an ICMP (IPv4) or ICMPv6 (IPv6) echo with
// identifier id.
func EchoFlow(src, dst netip.Addr, id uint16) Flow {
	f := Flow{Src: src, Dst: dst, Proto: protoICMP, SrcPort: id, DstPort: id}
	if dst.Is6() {
		f.Proto = protoICMPv6
	}
	return f
}

// UDPFlow is the flow of a UDP datagram.
func UDPFlow(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) Flow {
	return Flow{Src: src, Dst: dst, Proto: protoUDP, SrcPort: sport, DstPort: dport}
}

// TCPFlow is the flow of a TCP segment.
func TCPFlow(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) Flow {
	return Flow{Src: src, Dst: dst, Proto: protoTCP, SrcPort: sport, DstPort: dport}
}

// Hash is the lab's ECMP hash of the flow. It is symmetric: a flow and
// its reverse (addresses and ports swapped: the replies) hash alike, so a
// path and its return path with the same number of members carry a flow
// and its replies over members of the same index.
func (f Flow) Hash() uint64 {
	a, b := f.Src.As16(), f.Dst.As16()
	pa, pb := f.SrcPort, f.DstPort
	a0, a1 := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	b0, b1 := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	if a0 > b0 || a0 == b0 && (a1 > b1 || a1 == b1 && pa > pb) {
		a0, a1, b0, b1, pa, pb = b0, b1, a0, a1, pb, pa
	}
	h := mix64(a0 ^ 0x9e3779b97f4a7c15)
	h = mix64(h ^ a1)
	h = mix64(h ^ b0)
	h = mix64(h ^ b1)
	return mix64(h ^ (uint64(f.Proto)<<32 | uint64(pa)<<16 | uint64(pb)))
}

// Member is the member path (0..members-1) the flow takes on a path of
// that many members.
func (f Flow) Member(members int) int { return memberIndex(f.Hash(), members) }

func memberIndex(h uint64, n int) int { return int((h >> 32) * uint64(n) >> 32) }

// mix64 is MurmurHash3's 64-bit finaliser: every input bit affects every
// output bit, so the member index spreads flows uniformly.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// PacketFlow is the flow the lab hashes for the IP packet b; ok is false
// when b is not an IPv4 or IPv6 packet.
func PacketFlow(b []byte) (f Flow, ok bool) {
	h, ok := parseIP(b)
	if !ok {
		return Flow{}, false
	}
	return packetFlow(b, &h, true), true
}

// packetFlow reads the flow of a parsed packet; inner allows one level of
// ICMP error quoting.
func packetFlow(b []byte, h *ipHeader, inner bool) Flow {
	f := Flow{Src: h.src, Dst: h.dst}
	var l4 []byte
	if h.v6 {
		f.Proto = b[6]
		l4 = b[ipv6HeaderLen:]
	} else {
		f.Proto = b[9]
		if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
			return f // a later fragment carries no ports
		}
		l4 = b[h.hdrLen:]
	}
	switch f.Proto {
	case protoTCP, protoUDP:
		if len(l4) >= 4 {
			f.SrcPort = binary.BigEndian.Uint16(l4)
			f.DstPort = binary.BigEndian.Uint16(l4[2:])
		}
	case protoICMP, protoICMPv6:
		if len(l4) < icmpHeaderLen || (f.Proto == protoICMPv6) != h.v6 {
			return f
		}
		switch typ := l4[0]; {
		case !h.v6 && (typ == 8 || typ == 0), h.v6 && (typ == 128 || typ == 129):
			id := binary.BigEndian.Uint16(l4[4:])
			f.SrcPort, f.DstPort = id, id
		case inner && (!h.v6 && (typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12) || h.v6 && typ >= 1 && typ <= 4):
			q := l4[icmpHeaderLen:]
			if qh, ok := parseIP(q); ok && qh.v6 == h.v6 {
				return packetFlow(q, &qh, false)
			}
		}
	}
	return f
}

// memberRT is one member path at run time: its counters, and its own
// order of delivery (members are separate links: a packet on a fast
// member may overtake one on a slow member).
type memberRT struct {
	packets, delivered, lost, down, ttlExpired, mtuErrors, mtuDropped atomic.Uint64
	// lastDue is touched only by the input goroutine of the From site.
	lastDue int64
}

// MemberStats counts what one member path did with the packets hashed
// onto it (those the path itself did not drop). The path's LinkStats
// include them.
type MemberStats struct {
	Packets    uint64 // hashed onto the member
	Delivered  uint64 // queued for the destination
	Lost       uint64 // dropped by the member's random loss
	Down       uint64 // dropped because the member was down
	MTUErrors  uint64 // answered with Fragmentation Needed / Packet Too Big
	MTUDropped uint64 // dropped by an MTU black hole
	TTLExpired uint64 // answered with Time Exceeded (from the member's hops)
}

// ensureMembers allocates the member state of a link before parameters
// with members are stored; it is never replaced, so counters of member i
// survive changes of the parameters.
func (lk *link) ensureMembers(p *PathParams) {
	if len(p.Members) > 0 && lk.members.Load() == nil {
		lk.members.CompareAndSwap(nil, new([MaxMembers]memberRT))
	}
}

// familyHops counts the hops of one address family.
func familyHops(hops []netip.Addr, v6 bool) int {
	n := 0
	for _, a := range hops {
		if a.Is6() == v6 {
			n++
		}
	}
	return n
}

// familyHop is the k-th (1-based) hop of one address family.
func familyHop(hops []netip.Addr, v6 bool, k int) netip.Addr {
	for _, a := range hops {
		if a.Is6() == v6 {
			if k--; k == 0 {
				return a
			}
		}
	}
	return netip.Addr{}
}
