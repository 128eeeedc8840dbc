package trace

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/probed/probed/internal/inet"
)

// verify returns the one's complement sum over pseudo-header and packet,
// which is 0xffff for a packet whose checksum is right.
func verify(pseudo uint32, b []byte) uint16 { return inet.Fold(inet.Sum(pseudo, b)) }

// Paris traceroute: across probe ids the bytes ECMP hashes on stay the same
// (ICMP type, code, checksum and identifier; UDP and TCP ports), the id is
// read back from the first 8 bytes (all an ICMP error must quote), and the
// checksum stays valid.
func TestProbesKeepTheFlow(t *testing.T) {
	for _, fam := range []struct {
		src, dst string
		v6       bool
	}{{"10.0.0.1", "10.77.7.1", false}, {"fd00::1", "fd77:7::1", true}} {
		src, dst := netip.MustParseAddr(fam.src), netip.MustParseAddr(fam.dst)
		for _, proto := range []uint8{protoICMP, protoUDP, protoTCP} {
			var first []byte
			for _, id := range []uint32{1, 2, 777, 0xfffe} {
				k := key{proto: proto, dst: dst, flow: 50000, port: 33434, id: id}
				b := buildL4(k, src, probeSize, fam.v6)
				var pseudo uint32
				switch {
				case proto == protoUDP:
					pseudo = pseudoSum(src, dst, protoUDP, len(b))
				case proto == protoTCP:
					pseudo = pseudoSum(src, dst, protoTCP, len(b))
				case fam.v6:
					pseudo = pseudoSum(src, dst, protoICMPv6, len(b))
				}
				if s := verify(pseudo, b); s != 0xffff {
					t.Errorf("%s proto %d id %d: checksum does not verify (sum %#x)", fam.dst, proto, id, s)
				}
				hashed := b[:4] // ports, or ICMP type/code/checksum
				if proto == protoICMP {
					hashed = append(append([]byte{}, b[:4]...), b[4:6]...) // + identifier
				}
				if first == nil {
					first = hashed
				} else if string(first) != string(hashed) {
					t.Errorf("%s proto %d id %d: flow bytes %x differ from %x", fam.dst, proto, id, hashed, first)
				}
				// Quote only 8 bytes, as a minimal ICMP error does.
				var ip []byte
				if fam.v6 {
					ip = make([]byte, 40)
					ip[0] = 6 << 4
					ip[6] = proto
					if proto == protoICMP {
						ip[6] = protoICMPv6
					}
					d := dst.As16()
					copy(ip[24:], d[:])
				} else {
					ip = buildIPv4(src, dst, proto, 1, 0, 0, nil)[:20]
				}
				got, ok := parseQuoted(append(ip, b[:8]...), fam.v6)
				want := k
				if proto != protoTCP {
					want.id &= 0xffff
				}
				if proto == protoICMP {
					want.port = 0
				}
				if !ok || got != want {
					t.Errorf("%s proto %d id %d: quoted key %+v ok=%v, want %+v", fam.dst, proto, id, got, ok, want)
				}
			}
		}
	}
}

func TestParseTCPReply(t *testing.T) {
	from := netip.MustParseAddr("10.77.7.1")
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], 443)   // their port
	binary.BigEndian.PutUint16(seg[2:], 50000) // our flow
	binary.BigEndian.PutUint32(seg[8:], 1235)  // ack = our seq + 1
	for _, flags := range []byte{0x12, 0x14} { // SYN-ACK, RST-ACK
		seg[13] = flags
		r, ok := parseTCP(seg, from)
		if want := (key{proto: protoTCP, dst: from, flow: 50000, port: 443, id: 1234}); !ok || r.k != want || r.kind != kindTCP {
			t.Errorf("flags %#x: %+v %v, want %+v", flags, r.k, ok, want)
		}
	}
	seg[13] = 0x10 // a bare ACK answers nothing of ours
	if _, ok := parseTCP(seg, from); ok {
		t.Error("bare ACK taken as a reply")
	}
}

// An echo reply is taken for a probe's only when it carries a probe's
// payload: the echo prober's replies on a flow a trace shares (same
// identifier, and by chance the same sequence number) are not.
func TestEchoReplyNeedsTheProbePayload(t *testing.T) {
	from := netip.MustParseAddr("10.77.7.1")
	k := key{proto: protoICMP, dst: from, flow: 1234, id: 77}
	b := buildL4(k, netip.MustParseAddr("10.0.0.1"), probeSize, false)
	b[0] = icmp4EchoReply
	if r, ok := parseICMP(b, from, false); !ok || r.k != k || r.kind != kindEchoReply {
		t.Fatalf("the echo of a probe: %+v %v", r, ok)
	}
	other := make([]byte, 8+56) // the echo prober's: token and serial after the header
	other[0] = icmp4EchoReply
	binary.BigEndian.PutUint16(other[4:], 1234)
	binary.BigEndian.PutUint16(other[6:], 77)
	copy(other[8:], "tokentok\x00\x00\x00\x00\x00\x00\x00\x01")
	if r, ok := parseICMP(other, from, false); ok {
		t.Fatalf("an echo prober's reply was taken for a probe's: %+v", r)
	}
	short := append([]byte(nil), b...)
	short[20] = 1
	if _, ok := parseICMP(short, from, false); ok {
		t.Fatal("a 32-byte echo with a non-zero payload was taken for a probe's")
	}
}
