package stamp

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// hexPacket turns a packet written as hex words (spaces and newlines
// ignored, one 32-bit row per line as in the RFC figures) into bytes.
func hexPacket(t *testing.T, s string) []byte {
	t.Helper()
	s = strings.Join(strings.Fields(s), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The example packets below are written row by row from RFC 8762 figures
// 2-5 and RFC 8972 figures 1-4 (32 bits per row), not from the encoder.

// Unauthenticated Session-Sender packet: seq 0x01020304, timestamp
// 0xE9B1A2C3.80000000 (NTP, half a second), Error Estimate S=1 Z=0
// scale=1 mult=0x20, SSID 0xBEEF, 28 octets MBZ.
const senderUnauth = `
01020304
E9B1A2C3 80000000
8120 BEEF
00000000 00000000 00000000 00000000 00000000 00000000 00000000`

// Unauthenticated Session-Reflector packet (RFC 8762 figure 4 / RFC 8972 figure 2).
const reflectorUnauth = `
00000007
E9B1A2C3 80001000
8120 BEEF
E9B1A2C3 80000800
01020304
E9B1A2C3 80000000
8120 0000
FD 000000`

func TestParseSenderUnauthenticated(t *testing.T) {
	b := hexPacket(t, senderUnauth)
	if len(b) != BaseLen {
		t.Fatalf("hand-built packet is %d octets", len(b))
	}
	p, err := ParseSender(b, Unauthenticated)
	if err != nil {
		t.Fatal(err)
	}
	want := SenderPacket{Seq: 0x01020304, Timestamp: 0xE9B1A2C380000000, ErrorEstimate: 0x8120, SSID: 0xBEEF}
	if p != want {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	if !p.ErrorEstimate.Synced() || p.ErrorEstimate.PTP() || p.ErrorEstimate.Scale() != 1 || p.ErrorEstimate.Multiplier() != 0x20 {
		t.Errorf("error estimate decoded as %v", p.ErrorEstimate)
	}
	if got := want.AppendSender(nil, Unauthenticated); !bytes.Equal(got, b) {
		t.Errorf("encoder output differs:\n got %x\nwant %x", got, b)
	}
}

func TestParseReflectorUnauthenticated(t *testing.T) {
	b := hexPacket(t, reflectorUnauth)
	if len(b) != BaseLen {
		t.Fatalf("hand-built packet is %d octets", len(b))
	}
	p, err := ParseReflector(b, Unauthenticated)
	if err != nil {
		t.Fatal(err)
	}
	want := ReflectorPacket{Seq: 7, Timestamp: 0xE9B1A2C380001000, ErrorEstimate: 0x8120, SSID: 0xBEEF,
		ReceiveTimestamp: 0xE9B1A2C380000800, SenderSeq: 0x01020304, SenderTimestamp: 0xE9B1A2C380000000,
		SenderEE: 0x8120, SenderTTL: 0xFD}
	if p != want {
		t.Fatalf("got %+v\nwant %+v", p, want)
	}
	if got := want.AppendReflector(nil, Unauthenticated); !bytes.Equal(got, b) {
		t.Errorf("encoder output differs:\n got %x\nwant %x", got, b)
	}
}

// Authenticated Session-Sender packet (RFC 8762 figure 3 with the SSID of
// RFC 8972 figure 3): seq, 12 MBZ, timestamp, EE, SSID, 68 MBZ, HMAC.
func authSender(t *testing.T) []byte {
	return hexPacket(t, `
0000002A
00000000 00000000 00000000
E9B1A2C3 40000000
0001 1234
`+strings.Repeat("00", 68)+`
`+strings.Repeat("00", 16))
}

// Authenticated Session-Reflector packet (RFC 8762 figure 5 / RFC 8972 figure 4).
func authReflector(t *testing.T) []byte {
	return hexPacket(t, `
00000003
00000000 00000000 00000000
E9B1A2C3 50000000
8001 1234 00000000
E9B1A2C3 48000000
00000000 00000000
0000002A
00000000 00000000 00000000
E9B1A2C3 40000000
0001 0000 00000000
40
`+strings.Repeat("00", 15)+`
`+strings.Repeat("00", 16))
}

// rfcHMAC is HMAC-SHA-256 truncated to 128 bits over the first 96 octets
// (RFC 8762 section 4.4), computed here with the standard library only.
func rfcHMAC(key, pkt []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(pkt[:96])
	return m.Sum(nil)[:16]
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestAuthenticatedPackets(t *testing.T) {
	key, err := NewKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	s := authSender(t)
	if len(s) != AuthBaseLen {
		t.Fatalf("hand-built sender packet is %d octets", len(s))
	}
	copy(s[96:], rfcHMAC(testKey, s))
	sp, err := ParseSender(s, Authenticated)
	if err != nil {
		t.Fatal(err)
	}
	if want := (SenderPacket{Seq: 42, Timestamp: 0xE9B1A2C340000000, ErrorEstimate: 1, SSID: 0x1234}); sp != want {
		t.Fatalf("sender got %+v want %+v", sp, want)
	}
	if !key.VerifyBase(s) {
		t.Fatal("valid HMAC rejected")
	}
	enc := sp.AppendSender(nil, Authenticated)
	key.SignBase(enc)
	if !bytes.Equal(enc, s) {
		t.Errorf("encoder output differs:\n got %x\nwant %x", enc, s)
	}
	s[20] ^= 1 // corrupt the timestamp
	if key.VerifyBase(s) {
		t.Fatal("corrupted packet accepted")
	}

	r := authReflector(t)
	if len(r) != AuthBaseLen {
		t.Fatalf("hand-built reflector packet is %d octets", len(r))
	}
	copy(r[96:], rfcHMAC(testKey, r))
	rp, err := ParseReflector(r, Authenticated)
	if err != nil {
		t.Fatal(err)
	}
	want := ReflectorPacket{Seq: 3, Timestamp: 0xE9B1A2C350000000, ErrorEstimate: 0x8001, SSID: 0x1234,
		ReceiveTimestamp: 0xE9B1A2C348000000, SenderSeq: 42, SenderTimestamp: 0xE9B1A2C340000000,
		SenderEE: 1, SenderTTL: 0x40}
	if rp != want {
		t.Fatalf("reflector got %+v\nwant %+v", rp, want)
	}
	if !key.VerifyBase(r) {
		t.Fatal("valid reflector HMAC rejected")
	}
	enc = want.AppendReflector(nil, Authenticated)
	key.SignBase(enc)
	if !bytes.Equal(enc, r) {
		t.Errorf("encoder output differs:\n got %x\nwant %x", enc, r)
	}
}

func TestShortPackets(t *testing.T) {
	if _, err := ParseSender(make([]byte, 43), Unauthenticated); err != ErrShort {
		t.Errorf("43 octets: %v", err)
	}
	if _, err := ParseReflector(make([]byte, 111), Authenticated); err != ErrShort {
		t.Errorf("111 octets authenticated: %v", err)
	}
	if _, err := NewKey([]byte("short")); err == nil {
		t.Error("5-octet key accepted")
	}
}

// TLVs as in RFC 8972 section 4: Flags, Type, 16-bit Length of the value.
func TestTLVs(t *testing.T) {
	// Class of Service (type 4, length 4): DSCP1=46 (EF) DSCP2=10 (AF11)
	// ECN=2 RP=1: 101110 001010 10 01, then 16 reserved bits.
	// 1011 1000 | 1010 1001 = B8 A9.
	cos := hexPacket(t, "00 04 0004 B8A9 0000")
	// Direct Measurement (type 5, length 12): S_TxC=5 R_RxC=4 R_TxC=4.
	dm := hexPacket(t, "00 05 000C 00000005 00000004 00000004")
	// Extra Padding (type 1) with 4 octets of value, and an unknown type
	// 200 flagged U by a reflector.
	pad := hexPacket(t, "00 01 0004 00000000")
	unk := hexPacket(t, "80 C8 0000")
	area := bytes.Join([][]byte{cos, dm, pad, unk}, nil)

	rd := NewTLVReader(area)
	var got []TLV
	for {
		tl, ok := rd.Next()
		if !ok {
			break
		}
		got = append(got, tl)
	}
	if rd.Err() != nil || len(got) != 4 {
		t.Fatalf("read %d TLVs, err %v", len(got), rd.Err())
	}
	c, ok := ParseCoS(got[0].Value)
	if !ok || c != (CoS{DSCP1: 46, DSCP2: 10, ECN: 2, RP: 1}) {
		t.Errorf("CoS decoded as %+v", c)
	}
	// The TLVs above are as a reflector returns them (flags 0: processed);
	// a sender sends them with U set (RFC 8972 section 4: "A
	// Session-Sender MUST set the U flag to 1").
	withU := func(b []byte) []byte { b = bytes.Clone(b); b[0] = 0x80; return b }
	if enc := AppendCoS(nil, c); !bytes.Equal(enc, withU(cos)) {
		t.Errorf("CoS encoded as %x, want %x", enc, withU(cos))
	}
	d, ok := ParseDirectMeasurement(got[1].Value)
	if !ok || d != (DirectMeasurement{5, 4, 4}) {
		t.Errorf("DM decoded as %+v", d)
	}
	if enc := AppendDirectMeasurement(nil, d); !bytes.Equal(enc, withU(dm)) {
		t.Errorf("DM encoded as %x, want %x", enc, withU(dm))
	}
	if got[2].Type != TLVExtraPadding || len(got[2].Value) != 4 || got[2].Off != 24 {
		t.Errorf("padding TLV %+v", got[2])
	}
	if enc := AppendExtraPadding(nil, 8); !bytes.Equal(enc, withU(pad)) {
		t.Errorf("padding encoded as %x, want %x", enc, withU(pad))
	}
	if got[3].Flags != FlagU || got[3].Type != 200 || len(got[3].Value) != 0 {
		t.Errorf("unknown TLV %+v", got[3])
	}

	// A TLV whose length runs past the packet is malformed.
	bad := hexPacket(t, "00 04 0010 B8A9")
	rd = NewTLVReader(bad)
	if _, ok := rd.Next(); ok || rd.Err() != ErrMalformed {
		t.Errorf("overrunning TLV: err %v", rd.Err())
	}
}

// The HMAC TLV (RFC 8972 section 4.8) covers the base packet's Sequence
// Number and the TLVs before it.
func TestHMACTLV(t *testing.T) {
	key, _ := NewKey(testKey)
	pkt := authSender(t)
	pkt = append(pkt, hexPacket(t, "00 04 0004 B8000000")...)
	got := key.AppendHMACTLV(append([]byte(nil), pkt...), AuthBaseLen)

	m := hmac.New(sha256.New, testKey)
	m.Write(pkt[0:4])
	m.Write(pkt[AuthBaseLen:])
	want := append(append(append([]byte(nil), pkt...), hexPacket(t, "80 08 0010")...), m.Sum(nil)[:16]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("HMAC TLV:\n got %x\nwant %x", got, want)
	}
	if !key.VerifyHMACTLV(got, AuthBaseLen, 8) {
		t.Fatal("valid HMAC TLV rejected")
	}
	got[AuthBaseLen+5] ^= 0x04 // change DSCP1
	if key.VerifyHMACTLV(got, AuthBaseLen, 8) {
		t.Fatal("tampered TLV accepted")
	}
}

func TestNTP(t *testing.T) {
	// 1970-01-01 is 2208988800 s after the NTP epoch.
	if got := ToNTP(time.Unix(0, 0)); got != NTPTime(2208988800)<<32 {
		t.Errorf("unix epoch = %x", uint64(got))
	}
	// Half a second is 0x80000000 in the fraction.
	if got := ToNTP(time.Unix(1, 5e8)); got != (NTPTime(2208988801)<<32 | 0x80000000) {
		t.Errorf("1.5 s = %x", uint64(got))
	}
	now := time.Unix(1764120000, 123456789)
	if back := ToNTP(now).Time(); !back.Equal(now) {
		t.Errorf("round trip %v -> %v", now, back)
	}
	a, b := ToNTP(now), ToNTP(now.Add(1500*time.Microsecond))
	if d := b.Sub(a); d != 1500*time.Microsecond {
		t.Errorf("Sub = %v", d)
	}
	if d := a.Sub(b); d != -1500*time.Microsecond {
		t.Errorf("negative Sub = %v", d)
	}
}

func TestErrorEstimate(t *testing.T) {
	cases := []struct {
		synced bool
		err    time.Duration
		want   ErrorEstimate
	}{
		// 1 s = 1 * 2^-32 * 2^32: scale 32 multiplier 1... but the smallest
		// scale that fits is chosen: 255 * 2^(s-32) >= 1 s first at s=25
		// (multiplier ceil(2^7)=128).
		{true, time.Second, 0x8000 | 25<<8 | 128},
		{false, time.Second, 25<<8 | 128},
		// 1 ms: 2^32 * 1e-3 = 4294967.3; /2^15 = 131.07 -> 132 at scale 15.
		{true, time.Millisecond, 0x8000 | 15<<8 | 132},
		// Zero error still needs a non-zero multiplier.
		{true, 0, 0x8000 | 1},
	}
	for _, c := range cases {
		got := NewErrorEstimate(c.synced, c.err)
		if got != c.want {
			t.Errorf("NewErrorEstimate(%v, %v) = %#04x (%v), want %#04x", c.synced, c.err, uint16(got), got, uint16(c.want))
		}
		if got.Error() < c.err {
			t.Errorf("%v understates %v", got, c.err)
		}
	}
}

func TestKernelClockState(t *testing.T) {
	// STA_UNSYNC (0x40) clears S; TIME_ERROR (5) too.
	if ee := errorEstimateFromTimex(0, 0x40, 16000000); ee.Synced() {
		t.Errorf("STA_UNSYNC gave %v", ee)
	}
	if ee := errorEstimateFromTimex(5, 0, 1000); ee.Synced() {
		t.Errorf("TIME_ERROR gave %v", ee)
	}
	ee := errorEstimateFromTimex(0, 0x2001, 1500) // STA_PLL|STA_NANO, 1.5 ms
	if !ee.Synced() || ee.Error() < 1500*time.Microsecond || ee.Error() > 1600*time.Microsecond {
		t.Errorf("synced 1.5 ms gave %v", ee)
	}
	// The real kernel call works without privilege.
	_ = KernelClock{}.ErrorEstimate()
}
