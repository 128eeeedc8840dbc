package inet

import "testing"

// RFC 1071's example, and a packet whose checksum field is filled in sums
// to zero.
func TestChecksum(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Fold(Sum(0, b)); got != 0xddf2 {
		t.Fatalf("sum = %#x, want 0xddf2 (RFC 1071 4.1)", got)
	}
	pkt := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'o', 'd', 'd'}
	c := Checksum(pkt)
	pkt[2], pkt[3] = byte(c>>8), byte(c)
	if Checksum(pkt) != 0 {
		t.Fatalf("a checksummed packet does not verify")
	}
	for _, h := range []uint32{0, 1, 16383, 16384, 1 << 31} {
		if id := FlowID(h); id < PathIDs {
			t.Fatalf("FlowID(%d) = %#x below the path range", h, id)
		}
	}
}
