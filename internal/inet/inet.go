// Package inet holds the little Internet arithmetic the probers share: the
// RFC 1071 checksum, and how the echo identifier space is split between
// echo probes and the path features.
package inet

// Echo identifiers: the echo prober's sockets use [0, PathIDs); trace and
// MTU probes use [PathIDs, 0xffff], which is also the dynamic port range
// trace flows take their UDP/TCP source port from. Every raw ICMP socket
// receives every echo reply of the host, so each part of the agent tells
// its own replies from the other parts' by this split.
const PathIDs = 0xc000

// FlowID maps a hash into [PathIDs, 0xffff]: a path feature identifier, or
// a source port in the dynamic range (ordinary-looking client traffic).
func FlowID(h uint32) uint16 { return uint16(PathIDs + h%(0x10000-PathIDs)) }

// Sum adds b to a running one's complement sum (RFC 1071).
func Sum(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// Fold folds a running sum to 16 bits (not complemented).
func Fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// Checksum is the Internet checksum of b.
func Checksum(b []byte) uint16 { return ^Fold(Sum(0, b)) }
