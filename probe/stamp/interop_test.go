package stamp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
)

// Interop with the independent peer of rfcpeer_test.go, in both
// directions, unauthenticated and authenticated: the TLV flags U, M and I
// and the HMAC TLV of RFC 8972 section 4.

// TestIndependentSenderToReflector: packets built by the independent peer
// to a probed reflector; the replies are checked byte by byte.
func TestIndependentSenderToReflector(t *testing.T) {
	ns := testutil.NewNetNS(t)
	key, _ := NewKey(testKey)
	startReflector(t, ns, "udp4", "127.0.0.1:862", ReflectorConfig{Allow: allow(t, "127.0.0.1")})
	auth := startReflector(t, ns, "udp4", "127.0.0.1:863", ReflectorConfig{Mode: Authenticated, Key: key, Allow: allow(t, "127.0.0.1")})
	c := rfcListen(t, ns, "127.0.0.1:0")
	const (
		af11 = 0x28 // the class the packets are sent in: DSCP 10
		ef   = 46   // the class the CoS TLV asks for
	)
	rfcSetTOS(c, af11)
	cosReq := rfcTLVBytes(rfcU, rfcCoS, []byte{ef << 2, 0, 0, 0})
	dmReq := rfcTLVBytes(rfcU, rfcDM, make([]byte, 12))
	pad := rfcTLVBytes(rfcU, rfcPad, make([]byte, 8))
	unknown := rfcTLVBytes(rfcU, 200, []byte{1, 2})
	var ssid uint16 = 0x5000
	exchange := func(t *testing.T, authMode bool, tlvs func(p []byte) []byte) (req, reply []byte, tos byte) {
		t.Helper()
		ssid++ // a new session each time: counters start over
		req = rfcSenderPacket(authMode, testKey, 0, ssid)
		if tlvs != nil {
			req = tlvs(req)
		}
		if authMode {
			copy(req[rfcMACFrom:rfcAuthBase], rfcMAC(testKey, req[:rfcMACFrom]))
		}
		dst := netip.MustParseAddrPort("127.0.0.1:862")
		if authMode {
			dst = netip.MustParseAddrPort("127.0.0.1:863")
		}
		if _, err := c.WriteToUDPAddrPort(req, dst); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4096)
		reply, _, tos, err := rfcRecv(c, buf)
		if err != nil {
			t.Fatalf("no reply: %v", err)
		}
		if len(reply) != len(req) {
			t.Fatalf("reply of %d octets to %d", len(reply), len(req))
		}
		if authMode && !bytes.Equal(reply[rfcMACFrom:rfcAuthBase], rfcMAC(testKey, reply[:rfcMACFrom])) {
			t.Fatal("reply's base HMAC does not verify")
		}
		return req, reply, tos
	}
	flags := func(reply []byte, base int) string {
		tlvs, bad := rfcTLVs(reply, base)
		var s []string
		for _, tl := range tlvs {
			s = append(s, fmt.Sprintf("%d:%s", tl.typ, flagString(tl.flags)))
		}
		if bad >= 0 {
			s = append(s, fmt.Sprintf("bad:%s", flagString(reply[bad])))
		}
		return fmt.Sprint(s)
	}
	cos := func(reply []byte, base int) (dscp1, dscp2 byte) {
		tlvs, _ := rfcTLVs(reply, base)
		for _, tl := range tlvs {
			if tl.typ == rfcCoS && len(tl.val) == 4 {
				return tl.val[0] >> 2, (tl.val[0]&3)<<4 | tl.val[1]>>4
			}
		}
		return 0, 0
	}
	dmRx := func(reply []byte, base int) uint32 {
		tlvs, _ := rfcTLVs(reply, base)
		for _, tl := range tlvs {
			if tl.typ == rfcDM && len(tl.val) == 12 {
				return binary.BigEndian.Uint32(tl.val[4:])
			}
		}
		return 0
	}
	withTLVs := func(tlvs ...[]byte) func([]byte) []byte {
		return func(p []byte) []byte {
			for _, tl := range tlvs {
				p = append(p, tl...)
			}
			return p
		}
	}
	signed := func(tlvs ...[]byte) func([]byte) []byte {
		return func(p []byte) []byte {
			p = withTLVs(tlvs...)(p)
			return append(p, rfcHMACTLV(testKey, p, rfcAuthBase)...)
		}
	}

	t.Run("unauthenticated/understood", func(t *testing.T) {
		// U cleared on every TLV processed, set on the unknown one and on
		// the HMAC TLV (no key in unauthenticated mode); CoS obeyed:
		// DSCP2 = what arrived (AF11), the reply in EF; DM counted.
		hmacTLV := rfcTLVBytes(rfcU, rfcTypeHMAC, make([]byte, 16))
		_, reply, tos := exchange(t, false, withTLVs(cosReq, dmReq, pad, unknown, hmacTLV))
		if got, want := flags(reply, rfcBase), "[4:- 5:- 1:- 200:U 8:U]"; got != want {
			t.Errorf("flags %s, want %s", got, want)
		}
		if d1, d2 := cos(reply, rfcBase); d1 != ef || d2 != af11>>2 || tos != ef<<2 || dmRx(reply, rfcBase) != 1 {
			t.Errorf("CoS DSCP1 %d DSCP2 %d, reply TOS %#x, DM rx %d; want 46, 10, 0xb8, 1", d1, d2, tos, dmRx(reply, rfcBase))
		}
	})
	t.Run("unauthenticated/malformed", func(t *testing.T) {
		// A CoS TLV of the wrong length gets M and ends processing: the
		// DM TLV after it comes back as sent (U set, no counters).
		_, reply, tos := exchange(t, false, withTLVs(rfcTLVBytes(rfcU, rfcCoS, []byte{ef << 2, 0, 0}), dmReq))
		if got, want := flags(reply, rfcBase), "[4:M 5:U]"; got != want || dmRx(reply, rfcBase) != 0 || tos != af11 {
			t.Errorf("flags %s (want %s), DM rx %d, TOS %#x", got, want, dmRx(reply, rfcBase), tos)
		}
		// A TLV running past the end of the packet: M.
		_, reply, _ = exchange(t, false, withTLVs(pad, []byte{rfcU, rfcCoS, 0, 40, 1, 2}))
		if got, want := flags(reply, rfcBase), "[1:- bad:M]"; got != want {
			t.Errorf("overrunning TLV: flags %s, want %s", got, want)
		}
		// Reserved flag bits are zeroed on the way back.
		_, reply, _ = exchange(t, false, withTLVs(rfcTLVBytes(rfcU|0x1f, rfcPad, make([]byte, 4)), rfcTLVBytes(rfcU|0x03, 99, nil)))
		if got, want := flags(reply, rfcBase), "[1:- 99:U]"; got != want {
			t.Errorf("reserved bits: flags %s, want %s", got, want)
		}
	})
	t.Run("authenticated/understood", func(t *testing.T) {
		// Extra Padding may follow the HMAC TLV (RFC 8972 section 4.8).
		_, reply, tos := exchange(t, true, func(p []byte) []byte {
			p = signed(cosReq, dmReq, unknown)(p)
			return append(p, pad...)
		})
		if got, want := flags(reply, rfcAuthBase), "[4:- 5:- 200:U 8:- 1:-]"; got != want {
			t.Errorf("flags %s, want %s", got, want)
		}
		if d1, d2 := cos(reply, rfcAuthBase); d1 != ef || d2 != af11>>2 || tos != ef<<2 || dmRx(reply, rfcAuthBase) != 1 {
			t.Errorf("CoS DSCP1 %d DSCP2 %d, reply TOS %#x, DM rx %d", d1, d2, tos, dmRx(reply, rfcAuthBase))
		}
		// The reply's HMAC TLV covers the reply's own Sequence Number
		// and its TLVs as rewritten.
		if _, ok := rfcCheckTLVs(testKey, reply, rfcAuthBase); !ok {
			t.Error("the reply's HMAC TLV does not verify")
		}
	})
	for _, tc := range []struct {
		name  string
		build func([]byte) []byte
		want  string
	}{
		{"bad HMAC", func(p []byte) []byte {
			p = signed(cosReq, dmReq)(p)
			p[rfcAuthBase+5] ^= 1 // CoS changed after signing
			return p
		}, "[4:UI 5:UI 8:UI]"},
		{"no HMAC TLV", withTLVs(cosReq, dmReq), "[4:UI 5:UI]"},
		{"TLV after the HMAC TLV", func(p []byte) []byte {
			return append(signed(cosReq)(p), dmReq...)
		}, "[4:UI 8:UI 5:UI]"},
		{"HMAC TLV too short", withTLVs(cosReq, rfcTLVBytes(rfcU, rfcTypeHMAC, make([]byte, 8))), "[4:UI 8:UI]"},
	} {
		t.Run("authenticated/"+tc.name, func(t *testing.T) {
			// Section 4.8: no TLV processed (no CoS obeyed, no counters),
			// I on every TLV (U stays as the sender set it: nothing was
			// processed); the reply is still sent, its HMAC TLV (if any)
			// re-signed so the I flags are authenticated.
			before := auth.Stats().IntegrityFailed
			req, reply, tos := exchange(t, true, tc.build)
			if got := flags(reply, rfcAuthBase); got != tc.want {
				t.Errorf("flags %s, want %s", got, tc.want)
			}
			if _, d2 := cos(reply, rfcAuthBase); d2 != 0 || tos != af11 || dmRx(reply, rfcAuthBase) != 0 {
				t.Errorf("CoS obeyed or counters filled: DSCP2 %d, reply TOS %#x (sent in %#x), DM rx %d", d2, tos, af11, dmRx(reply, rfcAuthBase))
			}
			if at, _ := rfcCheckTLVs(testKey, req, rfcAuthBase); at >= 0 && at+20 <= len(reply) {
				if want := rfcMAC(testKey, reply[0:4], reply[rfcAuthBase:at]); !bytes.Equal(reply[at+4:at+20], want) {
					t.Error("the reply's HMAC TLV is not re-signed over the flagged TLVs")
				}
			}
			if got := auth.Stats().IntegrityFailed - before; got != 1 {
				t.Errorf("IntegrityFailed went up by %d", got)
			}
		})
	}
	t.Run("authenticated/malformed", func(t *testing.T) {
		// Authentic, but the CoS TLV is malformed: M on it, processing
		// ends (DM untouched), the HMAC TLV still re-signed.
		_, reply, _ := exchange(t, true, signed(rfcTLVBytes(rfcU, rfcCoS, []byte{1, 2, 3, 4, 5, 6}), dmReq))
		if got, want := flags(reply, rfcAuthBase), "[4:M 5:U 8:U]"; got != want || dmRx(reply, rfcAuthBase) != 0 {
			t.Errorf("flags %s (want %s), DM rx %d", got, want, dmRx(reply, rfcAuthBase))
		}
		if _, ok := rfcCheckTLVs(testKey, reply, rfcAuthBase); !ok {
			t.Error("the reply's HMAC TLV does not verify")
		}
	})
	t.Run("authenticated/unauthenticated packet", func(t *testing.T) {
		// 44 octets are shorter than the authenticated base packet:
		// malformed, no answer. 112 octets without a valid HMAC:
		// auth_failed, no answer.
		before := auth.Stats()
		for _, p := range [][]byte{rfcSenderPacket(false, nil, 0, 1), rfcSenderPacket(false, nil, 0, 1, make([]byte, 68))} {
			c.WriteToUDPAddrPort(p, netip.MustParseAddrPort("127.0.0.1:863"))
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, _, _, err := rfcRecv(c, make([]byte, 2048)); err == nil {
			t.Error("an unauthenticated packet was answered")
		}
		after := auth.Stats()
		if after.Malformed-before.Malformed != 1 || after.AuthFailed-before.AuthFailed != 1 {
			t.Errorf("malformed +%d, auth_failed +%d; want 1 and 1", after.Malformed-before.Malformed, after.AuthFailed-before.AuthFailed)
		}
	})
}

func flagString(f byte) string {
	s := ""
	for _, x := range []struct {
		bit byte
		c   string
	}{{rfcU, "U"}, {rfcM, "M"}, {rfcI, "I"}} {
		if f&x.bit != 0 {
			s += x.c
		}
	}
	if f&^(rfcU|rfcM|rfcI) != 0 {
		s += fmt.Sprintf("+%#x", f&^(rfcU|rfcM|rfcI))
	}
	if s == "" {
		return "-"
	}
	return s
}

// TestSenderToIndependentReflector: a probed sender against the independent
// reflector, well-behaved and misbehaving.
func TestSenderToIndependentReflector(t *testing.T) {
	ns := testutil.NewNetNS(t)
	key, _ := NewKey(testKey)
	setM := func(reply []byte, base int) {
		if tlvs, _ := rfcTLVs(reply, base); len(tlvs) > 0 {
			reply[tlvs[0].off] = rfcM
		}
	}
	setI := func(reply []byte, base int) {
		tlvs, _ := rfcTLVs(reply, base)
		for _, tl := range tlvs {
			reply[tl.off] |= rfcI
		}
	}
	spoilHMACTLV := func(reply []byte, base int) {
		tlvs, _ := rfcTLVs(reply, base)
		for _, tl := range tlvs {
			if tl.typ == rfcTypeHMAC {
				tl.val[0] ^= 1
			}
		}
		copy(reply[rfcMACFrom:rfcAuthBase], rfcMAC(testKey, reply[:rfcMACFrom]))
	}
	dropHMACTLV := func(reply []byte, base int) { // the HMAC TLV turned into padding
		tlvs, _ := rfcTLVs(reply, base)
		for _, tl := range tlvs {
			if tl.typ == rfcTypeHMAC {
				reply[tl.off+1] = rfcPad
			}
		}
	}
	spoilBase := func(reply []byte, base int) { reply[rfcMACFrom] ^= 1 }
	for i, tc := range []struct {
		name string
		refl *rfcReflector
		// expectations, as fractions of the replies
		replies, dscp, stateless bool
		errs                     string
	}{
		{name: "rfc8972", refl: &rfcReflector{tlvs: true}, replies: true, dscp: true},
		{name: "rfc8972/authenticated", refl: &rfcReflector{auth: true, tlvs: true}, replies: true, dscp: true},
		// An RFC 8762-only reflector echoes the TLVs with our U=1: none
		// was processed, none is read.
		{name: "rfc8762 only", refl: &rfcReflector{}, replies: true},
		{name: "rfc8762 only/authenticated", refl: &rfcReflector{auth: true}, replies: true, errs: "integrity"},
		// M on the first TLV (CoS) ends TLV processing: the DM TLV after
		// it must not be read, so this stateless reflector - which still
		// counts in DM - stays stateless.
		{name: "M ends processing", refl: &rfcReflector{tlvs: true, stateless: true, dmStateless: true, mangle: setM}, replies: true, stateless: true},
		{name: "stateless with DM counters", refl: &rfcReflector{tlvs: true, stateless: true, dmStateless: true}, replies: true, dscp: true},
		{name: "stateless", refl: &rfcReflector{tlvs: true, stateless: true}, replies: true, dscp: true, stateless: true},
		// The reflector could not verify our TLVs (I on every TLV): the
		// reply counts, its TLVs are ignored.
		{name: "I on every TLV", refl: &rfcReflector{auth: true, tlvs: true, mangle: setI}, replies: true, errs: "integrity"},
		{name: "bad reply HMAC TLV", refl: &rfcReflector{auth: true, tlvs: true, spoil: spoilHMACTLV}, replies: true, errs: "integrity"},
		{name: "reply without HMAC TLV", refl: &rfcReflector{auth: true, tlvs: true, mangle: dropHMACTLV}, replies: true, errs: "integrity"},
		{name: "bad base HMAC", refl: &rfcReflector{auth: true, tlvs: true, spoil: spoilBase}, errs: "auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.refl.key = testKey
			port := uint16(1900 + i)
			r := startRFCReflector(t, ns, fmt.Sprintf("127.0.0.1:%d", port), tc.refl)
			mode, k := Unauthenticated, (*Key)(nil)
			if tc.refl.auth {
				mode, k = Authenticated, key
			}
			rec := runSender(t, ns, SenderConfig{Target: "127.0.0.1", Port: port, TOS: 0xb8, Interval: 5 * time.Millisecond,
				Timeout: 100 * time.Millisecond, Size: 200, Mode: mode, Key: k}, 60)
			rec.mu.Lock()
			defer rec.mu.Unlock()
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Logf("sent %d, reflector answered %d, replies %d (%d stateless), forward DSCP on %d, lost %d/%d/%d, errors %v",
				rec.sent, r.replies, rec.replies, rec.statelessReplies, rec.hasFwdDSCP, rec.fwd, rec.rev, rec.unknown, rec.errs)
			if rec.sent < 40 {
				t.Fatalf("only %d packets sent", rec.sent)
			}
			// RFC 8972 section 4: the sender sets U on every TLV, M and
			// I to 0 (and the reserved bits).
			for _, area := range r.received {
				var got []string
				tlvs, bad := rfcTLVs(area, 0)
				for _, tl := range tlvs {
					got = append(got, fmt.Sprintf("%d:%s", tl.typ, flagString(tl.flags)))
				}
				want := "[4:U 5:U 1:U]"
				if tc.refl.auth {
					want = "[4:U 5:U 1:U 8:U]"
				}
				if fmt.Sprint(got) != want || bad >= 0 {
					t.Errorf("the sender sent TLVs %v, want %s", got, want)
				}
			}
			switch {
			case tc.replies && rec.replies < r.replies-2:
				t.Errorf("%d replies of %d answered", rec.replies, r.replies)
			case !tc.replies && rec.replies != 0:
				t.Errorf("%d replies taken from a reflector whose base HMAC is wrong", rec.replies)
			}
			if tc.replies && rec.fwd+rec.rev+rec.unknown > 2 {
				t.Errorf("loss %d/%d/%d on loopback", rec.fwd, rec.rev, rec.unknown)
			}
			if got := rec.hasFwdDSCP > 0; got != tc.dscp || tc.dscp && rec.hasFwdDSCP != rec.replies {
				t.Errorf("forward DSCP on %d of %d replies, want on all: %v", rec.hasFwdDSCP, rec.replies, tc.dscp)
			}
			if tc.dscp && (rec.fwdRemarked != 0 || rec.last.ReflectorDSCP != 46) {
				t.Errorf("DSCP verdict %+v", rec.last)
			}
			if got := rec.statelessReplies > 0; got != tc.stateless || tc.stateless && rec.statelessReplies != rec.replies {
				t.Errorf("%d of %d replies taken as stateless, want all: %v", rec.statelessReplies, rec.replies, tc.stateless)
			}
			for reason, n := range rec.errs {
				if reason != tc.errs || n < rec.replies {
					t.Errorf("errors %v, want %q on every reply", rec.errs, tc.errs)
					break
				}
			}
			if tc.errs != "" && rec.errs[tc.errs] == 0 {
				t.Errorf("no %q errors: %v", tc.errs, rec.errs)
			}
		})
	}
}
