package stamp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Mode is the STAMP test mode, fixed per session by configuration (STAMP has
// no control protocol to negotiate it).
type Mode uint8

const (
	// Unauthenticated is the 44-octet base packet of RFC 8762 section 4.2.1/4.3.1.
	Unauthenticated Mode = iota
	// Authenticated is the 112-octet base packet with a truncated
	// HMAC-SHA-256 over its first 96 octets (RFC 8762 sections 4.2.2, 4.3.2, 4.4).
	Authenticated
)

func (m Mode) String() string {
	if m == Authenticated {
		return "authenticated"
	}
	return "unauthenticated"
}

// Base packet lengths; TLVs (RFC 8972) follow the base packet.
const (
	BaseLen     = 44
	AuthBaseLen = 112
	HMACLen     = 16
	hmacCovered = 96 // octets of the base packet the base HMAC covers
)

// BaseLen returns the length of the base packet in mode m (identical for
// sender and reflector packets).
func (m Mode) BaseLen() int {
	if m == Authenticated {
		return AuthBaseLen
	}
	return BaseLen
}

// Field offsets, straight from the figures of RFC 8762 with the SSID of RFC
// 8972 section 3 in what RFC 8762 called MBZ.
type layout struct {
	seq, ts, ee, ssid                   int
	rxTS, senderSeq, senderTS, senderEE int
	senderTTL                           int
}

var (
	// Figures 2/4 of RFC 8762 (unauthenticated), as updated by RFC 8972 figures 1/2.
	unauthLayout = layout{seq: 0, ts: 4, ee: 12, ssid: 14,
		rxTS: 16, senderSeq: 24, senderTS: 28, senderEE: 36, senderTTL: 40}
	// Figures 3/5 of RFC 8762 (authenticated), as updated by RFC 8972 figures 3/4.
	authLayout = layout{seq: 0, ts: 16, ee: 24, ssid: 26,
		rxTS: 32, senderSeq: 48, senderTS: 64, senderEE: 72, senderTTL: 80}
)

func (m Mode) layout() *layout {
	if m == Authenticated {
		return &authLayout
	}
	return &unauthLayout
}

// SenderPacket is the base Session-Sender test packet.
type SenderPacket struct {
	Seq           uint32
	Timestamp     NTPTime
	ErrorEstimate ErrorEstimate
	SSID          uint16
}

// ReflectorPacket is the base Session-Reflector test packet.
type ReflectorPacket struct {
	Seq              uint32  // the reflector's own counter when stateful
	Timestamp        NTPTime // T3: transmit time at the reflector
	ErrorEstimate    ErrorEstimate
	SSID             uint16
	ReceiveTimestamp NTPTime // T2: receive time at the reflector
	SenderSeq        uint32
	SenderTimestamp  NTPTime // T1, copied from the sender's packet
	SenderEE         ErrorEstimate
	SenderTTL        uint8 // TTL / hop limit of the sender's packet as received
}

// Errors returned by the parsers.
var (
	ErrShort     = errors.New("packet shorter than the STAMP base packet")
	ErrBadHMAC   = errors.New("HMAC does not match")
	ErrNoKey     = errors.New("authenticated mode needs a key")
	ErrMalformed = errors.New("malformed TLV")
)

// AppendSender appends the base sender packet to b (MBZ fields zero). In
// authenticated mode the HMAC field is left zero: call Key.SignBase once the
// packet is complete.
func (p *SenderPacket) AppendSender(b []byte, m Mode) []byte {
	l := m.layout()
	off := len(b)
	b = append(b, make([]byte, m.BaseLen())...)
	w := b[off:]
	binary.BigEndian.PutUint32(w[l.seq:], p.Seq)
	binary.BigEndian.PutUint64(w[l.ts:], uint64(p.Timestamp))
	binary.BigEndian.PutUint16(w[l.ee:], uint16(p.ErrorEstimate))
	binary.BigEndian.PutUint16(w[l.ssid:], p.SSID)
	return b
}

// ParseSender decodes the base sender packet; the rest of b (from
// m.BaseLen()) holds the TLVs.
func ParseSender(b []byte, m Mode) (SenderPacket, error) {
	if len(b) < m.BaseLen() {
		return SenderPacket{}, ErrShort
	}
	l := m.layout()
	return SenderPacket{
		Seq:           binary.BigEndian.Uint32(b[l.seq:]),
		Timestamp:     NTPTime(binary.BigEndian.Uint64(b[l.ts:])),
		ErrorEstimate: ErrorEstimate(binary.BigEndian.Uint16(b[l.ee:])),
		SSID:          binary.BigEndian.Uint16(b[l.ssid:]),
	}, nil
}

// PutReflector writes the base reflector packet over the first m.BaseLen()
// octets of b, zeroing every MBZ field (and the HMAC field in authenticated
// mode). TLVs after the base packet are left alone.
func (p *ReflectorPacket) PutReflector(b []byte, m Mode) {
	l := m.layout()
	w := b[:m.BaseLen()]
	clear(w)
	binary.BigEndian.PutUint32(w[l.seq:], p.Seq)
	binary.BigEndian.PutUint64(w[l.ts:], uint64(p.Timestamp))
	binary.BigEndian.PutUint16(w[l.ee:], uint16(p.ErrorEstimate))
	binary.BigEndian.PutUint16(w[l.ssid:], p.SSID)
	binary.BigEndian.PutUint64(w[l.rxTS:], uint64(p.ReceiveTimestamp))
	binary.BigEndian.PutUint32(w[l.senderSeq:], p.SenderSeq)
	binary.BigEndian.PutUint64(w[l.senderTS:], uint64(p.SenderTimestamp))
	binary.BigEndian.PutUint16(w[l.senderEE:], uint16(p.SenderEE))
	w[l.senderTTL] = p.SenderTTL
}

// AppendReflector appends the base reflector packet to b.
func (p *ReflectorPacket) AppendReflector(b []byte, m Mode) []byte {
	off := len(b)
	b = append(b, make([]byte, m.BaseLen())...)
	p.PutReflector(b[off:], m)
	return b
}

// ParseReflector decodes the base reflector packet.
func ParseReflector(b []byte, m Mode) (ReflectorPacket, error) {
	if len(b) < m.BaseLen() {
		return ReflectorPacket{}, ErrShort
	}
	l := m.layout()
	return ReflectorPacket{
		Seq:              binary.BigEndian.Uint32(b[l.seq:]),
		Timestamp:        NTPTime(binary.BigEndian.Uint64(b[l.ts:])),
		ErrorEstimate:    ErrorEstimate(binary.BigEndian.Uint16(b[l.ee:])),
		SSID:             binary.BigEndian.Uint16(b[l.ssid:]),
		ReceiveTimestamp: NTPTime(binary.BigEndian.Uint64(b[l.rxTS:])),
		SenderSeq:        binary.BigEndian.Uint32(b[l.senderSeq:]),
		SenderTimestamp:  NTPTime(binary.BigEndian.Uint64(b[l.senderTS:])),
		SenderEE:         ErrorEstimate(binary.BigEndian.Uint16(b[l.senderEE:])),
		SenderTTL:        b[l.senderTTL],
	}, nil
}

// Key is an HMAC-SHA-256 key for authenticated mode. RFC 8762 section 4.4
// truncates the digest to 128 bits.
type Key struct {
	key []byte
	h   hash.Hash // reused: a Key is used by one goroutine at a time (see Clone)
	sum [sha256.Size]byte
}

// MinKeyLen is the shortest key accepted: 128 bits, the strength of the
// truncated HMAC.
const MinKeyLen = 16

// NewKey makes a key; it must be at least MinKeyLen octets.
func NewKey(k []byte) (*Key, error) {
	if len(k) < MinKeyLen {
		return nil, fmt.Errorf("HMAC key is %d octets, need at least %d", len(k), MinKeyLen)
	}
	kk := append([]byte(nil), k...)
	return &Key{key: kk, h: hmac.New(sha256.New, kk)}, nil
}

// Clone returns a key with its own hash state, for another goroutine.
func (k *Key) Clone() *Key {
	if k == nil {
		return nil
	}
	c, _ := NewKey(k.key)
	return c
}

// mac computes the truncated HMAC over the concatenation of parts into out.
func (k *Key) mac(out []byte, parts ...[]byte) {
	k.h.Reset()
	for _, p := range parts {
		k.h.Write(p)
	}
	copy(out[:HMACLen], k.h.Sum(k.sum[:0]))
}

// SignBase fills the HMAC field (octets 96..111) of an authenticated base
// packet, computed over its first 96 octets.
func (k *Key) SignBase(b []byte) {
	k.mac(b[hmacCovered:AuthBaseLen], b[:hmacCovered])
}

// VerifyBase checks the base packet's HMAC in constant time.
func (k *Key) VerifyBase(b []byte) bool {
	if len(b) < AuthBaseLen {
		return false
	}
	var want [HMACLen]byte
	k.mac(want[:], b[:hmacCovered])
	return hmac.Equal(want[:], b[hmacCovered:AuthBaseLen])
}

func hmacEqual(a, b []byte) bool { return hmac.Equal(a, b) }
