package stamp

// An independent STAMP peer for the interop tests, written from the RFC
// text alone: RFC 8762 sections 4.2 and 4.3 (figures 2-5, the stateful
// and stateless reflector) with the SSID of RFC 8972 section 3 (figures
// 1-4), and RFC 8972 section 4 (TLV flags U/M/I), 4.1 (Extra Padding), 4.4
// (Class of Service), 4.5 (Direct Measurement) and 4.8 (HMAC TLV). It uses
// none of this package's code - no codec, no Key, no TLV reader, no socket
// options - only encoding/binary, crypto/hmac and the socket API, so a
// misreading of the RFC in the package is not repeated here.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/internal/testutil"
)

// Octet offsets, RFC 8762 figures 2-5 with RFC 8972 figures 1-4.
const (
	rfcBase     = 44  // unauthenticated test packet
	rfcAuthBase = 112 // authenticated test packet
	rfcMACFrom  = 96  // the base HMAC covers octets 0..95, sits in 96..111

	rfcU, rfcM, rfcI = 0x80, 0x40, 0x20 // RFC 8972 figure 5

	rfcPad, rfcCoS, rfcDM, rfcTypeHMAC = 1, 4, 5, 8 // RFC 8972 section 5.2
)

// rfcOff are the offsets of the fields a peer reads and writes.
type rfcOff struct{ seq, ts, ee, ssid, rxTS, sSeq, sTS, sEE, sTTL int }

func rfcOffsets(auth bool) rfcOff {
	if auth {
		// Figures 3 and 5: 12 MBZ octets after the sequence number,
		// timestamps and sequence numbers each on their own 16-octet row.
		return rfcOff{seq: 0, ts: 16, ee: 24, ssid: 26, rxTS: 32, sSeq: 48, sTS: 64, sEE: 72, sTTL: 80}
	}
	return rfcOff{seq: 0, ts: 4, ee: 12, ssid: 14, rxTS: 16, sSeq: 24, sTS: 28, sEE: 36, sTTL: 40}
}

func rfcBaseLen(auth bool) int {
	if auth {
		return rfcAuthBase
	}
	return rfcBase
}

// rfcMAC is HMAC-SHA-256 truncated to 128 bits (RFC 8762 section 4.4).
func rfcMAC(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)[:16]
}

// rfcNTP is the 64-bit NTP timestamp of t (RFC 8762 section 4.2.1, Z=0).
func rfcNTP(t time.Time) uint64 {
	return uint64(t.Unix()+2208988800)<<32 | uint64(t.Nanosecond())*(1<<32)/1e9
}

// rfcTLV is one TLV of a packet; off is its offset in the packet.
type rfcTLV struct {
	off        int
	flags, typ byte
	val        []byte
}

// rfcTLVs splits the TLVs after the base packet. bad is the offset of a
// TLV that runs past the packet's end (RFC 8972: malformed), -1 if none.
func rfcTLVs(pkt []byte, base int) (tlvs []rfcTLV, bad int) {
	off := base
	for off < len(pkt) {
		if len(pkt)-off < 4 {
			return tlvs, off
		}
		n := int(binary.BigEndian.Uint16(pkt[off+2:]))
		if off+4+n > len(pkt) {
			return tlvs, off
		}
		tlvs = append(tlvs, rfcTLV{off: off, flags: pkt[off], typ: pkt[off+1], val: pkt[off+4 : off+4+n]})
		off += 4 + n
	}
	return tlvs, -1
}

// rfcTLVBytes encodes one TLV: Flags, Type, 16-bit Length, Value.
func rfcTLVBytes(flags, typ byte, val []byte) []byte {
	b := []byte{flags, typ, byte(len(val) >> 8), byte(len(val))}
	return append(b, val...)
}

// rfcHMACTLV is the HMAC TLV for pkt as built so far: the HMAC covers the
// packet's Sequence Number and every TLV before the HMAC TLV (RFC 8972
// section 4.8). A sender sends it with U set.
func rfcHMACTLV(key, pkt []byte, base int) []byte {
	return rfcTLVBytes(rfcU, rfcTypeHMAC, rfcMAC(key, pkt[0:4], pkt[base:]))
}

// rfcCheckTLVs verifies the TLV area of an authenticated packet as RFC
// 8972 section 4.8 says: exactly one HMAC TLV, followed only by Extra
// Padding, whose HMAC matches. It returns the HMAC TLV's offset (-1).
func rfcCheckTLVs(key, pkt []byte, base int) (int, bool) {
	tlvs, bad := rfcTLVs(pkt, base)
	at := -1
	for _, t := range tlvs {
		if at >= 0 && t.typ != rfcPad {
			return at, false
		}
		if t.typ == rfcTypeHMAC {
			if len(t.val) != 16 {
				return -1, false
			}
			at = t.off
		}
	}
	if bad >= 0 || at < 0 {
		return at, false
	}
	return at, hmac.Equal(pkt[at+4:at+20], rfcMAC(key, pkt[0:4], pkt[base:at]))
}

// rfcSenderPacket builds a Session-Sender test packet (figure 1 or 3)
// followed by the TLVs; an authenticated one gets its base HMAC.
func rfcSenderPacket(auth bool, key []byte, seq uint32, ssid uint16, tlvs ...[]byte) []byte {
	o := rfcOffsets(auth)
	p := make([]byte, rfcBaseLen(auth))
	binary.BigEndian.PutUint32(p[o.seq:], seq)
	binary.BigEndian.PutUint64(p[o.ts:], rfcNTP(time.Now()))
	binary.BigEndian.PutUint16(p[o.ee:], 0x0001) // S=0, Z=0, multiplier 1
	binary.BigEndian.PutUint16(p[o.ssid:], ssid)
	for _, t := range tlvs {
		p = append(p, t...)
	}
	if auth {
		copy(p[rfcMACFrom:rfcAuthBase], rfcMAC(key, p[:rfcMACFrom]))
	}
	return p
}

// rfcListen opens a UDP socket in ns that reports the TOS of what it
// receives (IP_RECVTOS) and can send with any TOS.
func rfcListen(t *testing.T, ns *testutil.NetNS, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1) })
			return serr
		}}
		pc, err := lc.ListenPacket(t.Context(), "udp4", addr)
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rfcRecv reads one datagram and the TOS it arrived with.
func rfcRecv(c *net.UDPConn, buf []byte) (pkt []byte, src netip.AddrPort, tos byte, err error) {
	oob := make([]byte, 64)
	n, oobn, _, src, err := c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return nil, src, 0, err
	}
	cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
	for _, cm := range cms {
		if cm.Header.Level == unix.IPPROTO_IP && cm.Header.Type == unix.IP_TOS && len(cm.Data) > 0 {
			tos = cm.Data[0]
		}
	}
	return buf[:n], src, tos, nil
}

// rfcSetTOS sets the TOS of what c sends next.
func rfcSetTOS(c *net.UDPConn, tos byte) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(tos)) })
}

// rfcReflector is an independent Session-Reflector.
type rfcReflector struct {
	auth bool
	key  []byte
	// stateless: the reply's Sequence Number is the sender's (RFC 8762
	// section 4.3); otherwise the reflector numbers its replies per session.
	stateless bool
	// tlvs: process RFC 8972 TLVs; false is an RFC 8762-only reflector
	// that returns whatever follows the base packet untouched.
	tlvs bool
	// dmStateless: a stateless reflector that still counts packets in the
	// Direct Measurement TLV (otherwise a stateless one does not
	// understand it and sets U).
	dmStateless bool
	// mangle changes the reply's TLVs before it is signed; spoil changes
	// the reply after it was signed. Tests use them to misbehave.
	mangle, spoil func(reply []byte, base int)

	mu       sync.Mutex
	seq, rx  map[string]uint32 // per session: sender address and SSID
	received [][]byte          // the first TLV areas received, for checks
	replies  int
}

func (r *rfcReflector) serve(c *net.UDPConn) {
	buf := make([]byte, 9000)
	for {
		pkt, src, tos, err := rfcRecv(c, buf)
		if err != nil {
			return
		}
		reply, replyTOS := r.reflect(pkt, src, tos)
		if reply == nil {
			continue
		}
		rfcSetTOS(c, replyTOS)
		c.WriteToUDPAddrPort(reply, src)
	}
}

// reflect builds the reply to pkt, or nil to drop it.
func (r *rfcReflector) reflect(pkt []byte, src netip.AddrPort, tos byte) ([]byte, byte) {
	t2 := time.Now()
	base := rfcBaseLen(r.auth)
	if len(pkt) < base {
		return nil, 0
	}
	if r.auth && !hmac.Equal(pkt[rfcMACFrom:rfcAuthBase], rfcMAC(r.key, pkt[:rfcMACFrom])) {
		return nil, 0 // RFC 8762 section 4.4: discard
	}
	o := rfcOffsets(r.auth)
	ssid := binary.BigEndian.Uint16(pkt[o.ssid:])
	r.mu.Lock()
	if r.seq == nil {
		r.seq, r.rx = map[string]uint32{}, map[string]uint32{}
	}
	key := src.String() + "/" + strconv.Itoa(int(ssid))
	seq := binary.BigEndian.Uint32(pkt[o.seq:]) // stateless: the sender's
	if !r.stateless {
		seq = r.seq[key]
		r.seq[key]++
	}
	r.rx[key]++
	rx := r.rx[key]
	if len(r.received) < 4 && len(pkt) > base {
		r.received = append(r.received, append([]byte(nil), pkt[base:]...))
	}
	r.replies++
	r.mu.Unlock()

	out := make([]byte, len(pkt)) // symmetric size (RFC 8972 section 4)
	copy(out[base:], pkt[base:])
	replyTOS := tos // answer in the class asked in, unless CoS says otherwise
	hmacAt := -1
	if r.tlvs && len(pkt) > base {
		ok := true
		if r.auth {
			hmacAt, ok = rfcCheckTLVs(r.key, pkt, base)
		}
		tlvs, bad := rfcTLVs(out, base)
		if !ok {
			// Section 4.8: stop processing, I on every TLV.
			for _, t := range tlvs {
				out[t.off] |= rfcI
			}
		} else {
		process:
			for _, t := range tlvs {
				f := &out[t.off]
				switch t.typ {
				case rfcPad:
					*f = 0
				case rfcCoS:
					if len(t.val) != 4 {
						*f = rfcM
						break process
					}
					// DSCP2 and ECN as received, RP 0; reply with DSCP1.
					dscp1 := t.val[0] >> 2
					t.val[0] = t.val[0]&^3 | (tos>>2)>>4
					t.val[1] = (tos>>2)<<4 | (tos&3)<<2
					replyTOS = dscp1 << 2
					*f = 0
				case rfcDM:
					if r.stateless && !r.dmStateless {
						*f = rfcU
						continue
					}
					if len(t.val) != 12 {
						*f = rfcM
						break process
					}
					binary.BigEndian.PutUint32(t.val[4:], rx)
					binary.BigEndian.PutUint32(t.val[8:], rx)
					*f = 0
				case rfcTypeHMAC:
					if r.auth {
						*f = 0
					} else {
						*f = rfcU
					}
				default:
					*f = rfcU
				}
			}
			if bad >= 0 {
				out[bad] = rfcM
			}
		}
	}
	if r.mangle != nil {
		r.mangle(out, base)
	}
	binary.BigEndian.PutUint32(out[o.seq:], seq)
	binary.BigEndian.PutUint16(out[o.ee:], 0x0001)
	binary.BigEndian.PutUint16(out[o.ssid:], ssid)
	binary.BigEndian.PutUint64(out[o.rxTS:], rfcNTP(t2))
	copy(out[o.sSeq:o.sSeq+4], pkt[o.seq:o.seq+4])
	copy(out[o.sTS:o.sTS+8], pkt[o.ts:o.ts+8])
	copy(out[o.sEE:o.sEE+2], pkt[o.ee:o.ee+2])
	out[o.sTTL] = 255
	binary.BigEndian.PutUint64(out[o.ts:], rfcNTP(time.Now()))
	if r.auth {
		if hmacAt >= 0 && hmacAt+20 <= len(out) {
			copy(out[hmacAt+4:hmacAt+20], rfcMAC(r.key, out[0:4], out[base:hmacAt]))
		}
		copy(out[rfcMACFrom:rfcAuthBase], rfcMAC(r.key, out[:rfcMACFrom]))
	}
	if r.spoil != nil {
		r.spoil(out, base)
	}
	return out, replyTOS
}

// startRFCReflector serves an independent reflector in ns on addr.
func startRFCReflector(t *testing.T, ns *testutil.NetNS, addr string, r *rfcReflector) *rfcReflector {
	t.Helper()
	c := rfcListen(t, ns, addr)
	done := make(chan struct{})
	go func() { defer close(done); r.serve(c) }()
	t.Cleanup(func() { c.Close(); <-done })
	return r
}
