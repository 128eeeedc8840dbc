package stamp

import (
	"encoding/binary"
)

// TLV types registered by RFC 8972 section 5.2 (IANA "STAMP TLV Types").
const (
	TLVExtraPadding      uint8 = 1
	TLVLocation          uint8 = 2
	TLVTimestampInfo     uint8 = 3
	TLVClassOfService    uint8 = 4
	TLVDirectMeasurement uint8 = 5
	TLVAccessReport      uint8 = 6
	TLVFollowUpTelemetry uint8 = 7
	TLVHMAC              uint8 = 8
)

// STAMP TLV Flags (RFC 8972 section 4, figure 5): U = unrecognised by the
// reflector, M = malformed, I = integrity check failed. The other five bits
// are reserved: zero on transmit, ignored on receipt.
//
// A Session-Sender sends every TLV with U=1, M=0, I=0. A Session-Reflector
// clears U on each TLV it understood (so a TLV that comes back with U set
// was not processed: unknown to the reflector, or echoed by an RFC
// 8762-only one), sets M on a malformed TLV and stops processing there, and
// in authenticated mode sets I on every TLV when the HMAC TLV is missing,
// misplaced or wrong (section 4.8), processing none of them.
const (
	FlagU uint8 = 0x80
	FlagM uint8 = 0x40
	FlagI uint8 = 0x20

	flagsDefined = FlagU | FlagM | FlagI
)

// TLVHeaderLen is the Flags, Type and Length octets before a TLV's value.
const TLVHeaderLen = 4

// Value lengths fixed by RFC 8972.
const (
	cosLen  = 4  // section 4.4
	dmLen   = 12 // section 4.5
	hmacLen = 16 // section 4.8
)

// TLV is one decoded TLV. Off is its offset in the TLV area, for in-place
// rewriting.
type TLV struct {
	Flags uint8
	Type  uint8
	Value []byte
	Off   int
}

// TLVReader walks the TLV area after a base packet without allocating.
type TLVReader struct {
	b   []byte
	off int
	err error
}

// NewTLVReader reads the TLVs in b (the packet after its base part).
func NewTLVReader(b []byte) TLVReader { return TLVReader{b: b} }

// Next returns the next TLV; ok is false at the end or on a malformed TLV
// (see Err).
func (r *TLVReader) Next() (t TLV, ok bool) {
	if r.err != nil || r.off >= len(r.b) {
		return TLV{}, false
	}
	rest := r.b[r.off:]
	if len(rest) < TLVHeaderLen {
		r.err = ErrMalformed
		return TLV{}, false
	}
	n := int(binary.BigEndian.Uint16(rest[2:]))
	if TLVHeaderLen+n > len(rest) {
		r.err = ErrMalformed
		return TLV{Flags: rest[0], Type: rest[1], Off: r.off}, false
	}
	t = TLV{Flags: rest[0], Type: rest[1], Value: rest[TLVHeaderLen : TLVHeaderLen+n], Off: r.off}
	r.off += TLVHeaderLen + n
	return t, true
}

// Err is ErrMalformed when the walk stopped at a TLV that overran the packet.
func (r *TLVReader) Err() error { return r.err }

// Offset is where the walk stopped (the malformed TLV, or the end).
func (r *TLVReader) Offset() int { return r.off }

func appendTLVHeader(b []byte, flags, typ uint8, n int) []byte {
	return append(b, flags, typ, byte(n>>8), byte(n))
}

// CoS is the Class of Service TLV value (RFC 8972 section 4.4):
//
//	|   DSCP1   |   DSCP2   |ECN| RP|          Reserved             |
//
// DSCP1 is what the sender asks the reflector to mark the reflected packet
// with; DSCP2 and ECN are what the reflector received; RP is set by the
// reflector when it could not use DSCP1.
type CoS struct {
	DSCP1, DSCP2 uint8 // 6 bits each
	ECN          uint8 // 2 bits
	RP           uint8 // 2 bits
}

// AppendCoS appends a sender's Class of Service TLV (U set).
func AppendCoS(b []byte, c CoS) []byte {
	b = appendTLVHeader(b, FlagU, TLVClassOfService, cosLen)
	return append(b, c.encode()...)
}

func (c CoS) encode() []byte {
	var v [cosLen]byte
	c.put(v[:])
	return v[:]
}

func (c CoS) put(v []byte) {
	v[0] = (c.DSCP1&0x3f)<<2 | (c.DSCP2&0x3f)>>4
	v[1] = (c.DSCP2&0x0f)<<4 | (c.ECN&3)<<2 | c.RP&3
	v[2], v[3] = 0, 0
}

// ParseCoS decodes a Class of Service TLV value.
func ParseCoS(v []byte) (CoS, bool) {
	if len(v) != cosLen {
		return CoS{}, false
	}
	return CoS{
		DSCP1: v[0] >> 2,
		DSCP2: (v[0]&3)<<4 | v[1]>>4,
		ECN:   (v[1] >> 2) & 3,
		RP:    v[1] & 3,
	}, true
}

// DirectMeasurement is the Direct Measurement TLV value (RFC 8972 section
// 4.5): the sender's transmit counter and the reflector's receive and
// transmit counters for the session.
type DirectMeasurement struct {
	SenderTx, ReflectorRx, ReflectorTx uint32
}

// AppendDirectMeasurement appends a sender's Direct Measurement TLV (U set;
// the sender fills SenderTx and leaves the reflector's counters zero).
func AppendDirectMeasurement(b []byte, d DirectMeasurement) []byte {
	b = appendTLVHeader(b, FlagU, TLVDirectMeasurement, dmLen)
	b = binary.BigEndian.AppendUint32(b, d.SenderTx)
	b = binary.BigEndian.AppendUint32(b, d.ReflectorRx)
	return binary.BigEndian.AppendUint32(b, d.ReflectorTx)
}

// ParseDirectMeasurement decodes a Direct Measurement TLV value.
func ParseDirectMeasurement(v []byte) (DirectMeasurement, bool) {
	if len(v) != dmLen {
		return DirectMeasurement{}, false
	}
	return DirectMeasurement{
		SenderTx:    binary.BigEndian.Uint32(v[0:]),
		ReflectorRx: binary.BigEndian.Uint32(v[4:]),
		ReflectorTx: binary.BigEndian.Uint32(v[8:]),
	}, true
}

// AppendExtraPadding appends a sender's Extra Padding TLV (RFC 8972 section
// 4.1, U set) whose whole length, header included, is n octets (n >= 4).
func AppendExtraPadding(b []byte, n int) []byte {
	if n < TLVHeaderLen {
		return b
	}
	b = appendTLVHeader(b, FlagU, TLVExtraPadding, n-TLVHeaderLen)
	return append(b, make([]byte, n-TLVHeaderLen)...)
}

// AppendHMACTLV appends a sender's HMAC TLV (RFC 8972 section 4.8, U set),
// which must be the last TLV (only Extra Padding may follow it). pkt is the
// whole packet so far (base packet followed by the TLVs); base is the
// length of its base packet. The HMAC covers the base packet's Sequence
// Number and every TLV before the HMAC TLV.
func (k *Key) AppendHMACTLV(pkt []byte, base int) []byte {
	end := len(pkt)
	pkt = appendTLVHeader(pkt, FlagU, TLVHMAC, hmacLen)
	pkt = append(pkt, make([]byte, hmacLen)...)
	k.mac(pkt[end+TLVHeaderLen:], pkt[0:4], pkt[base:end])
	return pkt
}

// VerifyTLVs checks the integrity of the TLVs of an authenticated packet
// (RFC 8972 section 4.8): there must be exactly one HMAC TLV, of the right
// length, followed by nothing but Extra Padding TLVs, and its HMAC must
// match. hmacOff is the HMAC TLV's offset in the TLV area (-1 when there is
// none); ok is false for every kind of failure, which the RFC treats alike.
// A packet without TLVs has nothing to verify.
func (k *Key) VerifyTLVs(pkt []byte, base int) (hmacOff int, ok bool) {
	hmacOff = -1
	if len(pkt) <= base {
		return -1, true
	}
	rd := NewTLVReader(pkt[base:])
	for {
		t, more := rd.Next()
		if !more {
			break
		}
		switch {
		case hmacOff >= 0 && t.Type != TLVExtraPadding:
			return hmacOff, false // a TLV after the HMAC TLV
		case t.Type == TLVHMAC:
			if len(t.Value) != hmacLen {
				return -1, false
			}
			hmacOff = t.Off
		}
	}
	if rd.Err() != nil || hmacOff < 0 {
		return hmacOff, false
	}
	return hmacOff, k.VerifyHMACTLV(pkt, base, hmacOff)
}

// SignHMACTLV recomputes the HMAC TLV at TLV-area offset off over the
// packet as it is now (the TLVs before it may have been rewritten).
func (k *Key) SignHMACTLV(pkt []byte, base, off int) {
	start := base + off
	if start+TLVHeaderLen+hmacLen > len(pkt) {
		return
	}
	k.mac(pkt[start+TLVHeaderLen:], pkt[0:4], pkt[base:start])
}

// VerifyHMACTLV checks an HMAC TLV found at TLV-area offset off (its header)
// in pkt, whose base packet is base octets long.
func (k *Key) VerifyHMACTLV(pkt []byte, base, off int) bool {
	start := base + off
	if start+TLVHeaderLen+hmacLen > len(pkt) {
		return false
	}
	var want [HMACLen]byte
	k.mac(want[:], pkt[0:4], pkt[base:start])
	return hmacEqual(want[:], pkt[start+TLVHeaderLen:start+TLVHeaderLen+hmacLen])
}
