package stamp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ReflectorConfig configures a session-reflector.
type ReflectorConfig struct {
	Mode Mode
	Key  *Key // required in Authenticated mode
	// Allow lists the sources that get answers; nil answers nobody.
	Allow *AllowList
	// RateLimit is the packets per second answered per source address
	// (0 = unlimited), with bursts of up to Burst packets.
	RateLimit float64
	Burst     int
	// SessionTimeout drops the state of a session idle that long.
	SessionTimeout time.Duration
	// MaxSessions bounds the session table; the oldest idle session makes
	// room for a new one.
	MaxSessions int
	// Clock is the local clock state for the Error Estimate (KernelClock
	// when nil).
	Clock ClockState
}

// Defaults for ReflectorConfig fields left zero.
const (
	DefaultSessionTimeout = 5 * time.Minute
	DefaultMaxSessions    = 4096
	maxRateSources        = 65536
)

// ReflectorStats counts what a reflector did with the datagrams it read.
type ReflectorStats struct {
	Reflected, NotAllowed, RateLimited, Malformed, AuthFailed, SendErrors uint64
	// IntegrityFailed counts reflected packets (also in Reflected) whose
	// TLVs failed HMAC verification: answered with I on every TLV and none
	// of them processed.
	IntegrityFailed uint64
	// SocketDrops counts datagrams the kernel dropped on the reflector's
	// sockets before they were read: refused by the allow-list's socket
	// filter, or dropped because a receive buffer was full.
	SocketDrops uint64
	Sessions    int
}

// Reflector is a stateful STAMP session-reflector (RFC 8762 section 4.3):
// per session (sender address and port, plus SSID) it numbers its replies
// with its own sequence counter and keeps the receive/transmit counters of
// the Direct Measurement TLV, so the sender can tell forward from reverse
// loss. It never sends more octets than it received, answers only
// allow-listed sources and rate-limits each of them, so it cannot be used
// as an amplifier.
type Reflector struct {
	cfg   ReflectorConfig
	allow atomic.Pointer[AllowList]

	mu        sync.Mutex
	sessions  map[sessionKey]*reflSession
	limiter   *rateLimiter
	lastSweep time.Time

	reflected, notAllowed, rateLimited, malformed, authFailed, sendErrors atomic.Uint64
	integrity                                                             atomic.Uint64
	nSessions                                                             atomic.Int64

	// The sockets being served, for the allow-list filter and the drop
	// counters; closedDrops keeps the drops of sockets closed since.
	connMu      sync.Mutex
	conns       map[*net.UDPConn]struct{}
	closedDrops uint64
}

type sessionKey struct {
	src  netip.AddrPort
	ssid uint16
}

type reflSession struct {
	seq  uint32 // next reflector sequence number
	rx   uint32 // test packets received in the session
	tx   uint32 // test packets reflected in the session
	last time.Time
}

// NewReflector makes a reflector; serve it on one or more sockets with Serve.
func NewReflector(cfg ReflectorConfig) (*Reflector, error) {
	if cfg.Mode == Authenticated && cfg.Key == nil {
		return nil, ErrNoKey
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Clock == nil {
		cfg.Clock = KernelClock{}
	}
	r := &Reflector{
		cfg:      cfg,
		sessions: map[sessionKey]*reflSession{},
		limiter:  newRateLimiter(cfg.RateLimit, cfg.Burst, maxRateSources),
		conns:    map[*net.UDPConn]struct{}{},
	}
	r.allow.Store(cfg.Allow)
	return r, nil
}

// SetAllow replaces the allow-list (on reload); sessions are kept. The
// sockets' filters follow.
func (r *Reflector) SetAllow(a *AllowList) {
	r.allow.Store(a)
	r.connMu.Lock()
	defer r.connMu.Unlock()
	for c := range r.conns {
		r.filter(c, a)
	}
}

// filter puts the allow-list's socket filter on c (none when the list is
// too long for one: the user-space check then does all the work).
func (r *Reflector) filter(c *net.UDPConn, a *AllowList) {
	v6 := false
	if la, ok := c.LocalAddr().(*net.UDPAddr); ok {
		v6 = la.IP.To4() == nil
	}
	prog, ok := allowFilter(a, v6)
	if !ok {
		prog = nil
	}
	_ = attachFilter(c, prog) // without a filter the user-space check still holds
}

// Stats returns the counters so far.
func (r *Reflector) Stats() ReflectorStats {
	r.connMu.Lock()
	drops := r.closedDrops
	for c := range r.conns {
		if d, ok := socketDrops(c); ok {
			drops += d
		}
	}
	r.connMu.Unlock()
	return ReflectorStats{
		Reflected: r.reflected.Load(), NotAllowed: r.notAllowed.Load(), RateLimited: r.rateLimited.Load(),
		Malformed: r.malformed.Load(), AuthFailed: r.authFailed.Load(), SendErrors: r.sendErrors.Load(),
		IntegrityFailed: r.integrity.Load(), SocketDrops: drops, Sessions: int(r.nSessions.Load()),
	}
}

// track adds a socket being served and filters it; the returned func
// removes it (call it while the socket is still open: it keeps its drop
// count).
func (r *Reflector) track(c *net.UDPConn) (untrack func()) {
	r.connMu.Lock()
	r.conns[c] = struct{}{}
	r.filter(c, r.allow.Load())
	r.connMu.Unlock()
	return func() {
		r.connMu.Lock()
		defer r.connMu.Unlock()
		if _, ok := r.conns[c]; !ok {
			return
		}
		if d, ok := socketDrops(c); ok {
			r.closedDrops += d
		}
		delete(r.conns, c)
	}
}

// ReflectorRcvBuf is the receive buffer asked for reflector sockets (the
// kernel doubles it for its bookkeeping): room for bursts of listed
// sessions on a busy host. Without CAP_NET_ADMIN it is capped at
// net.core.rmem_max.
const ReflectorRcvBuf = 2 << 20

// Listen opens a reflector socket on addr ("0.0.0.0:862", "[::]:862",
// "10.79.1.1:862"); network is "udp4" or "udp6".
func Listen(ctx context.Context, network, addr string) (*net.UDPConn, error) {
	c, err := listenUDP(ctx, network, addr, sockOpts{v6: network == "udp6", tos: -1, rcvbuf: ReflectorRcvBuf})
	if err != nil {
		return nil, fmt.Errorf("listening for STAMP on %s %s: %w", network, addr, err)
	}
	return c, nil
}

// Serve answers test packets on conn until ctx ends or conn is closed. It
// closes conn when ctx ends.
func (r *Reflector) Serve(ctx context.Context, conn *net.UDPConn) error {
	untrack := r.track(conn)
	stop := context.AfterFunc(ctx, func() {
		untrack()
		_ = conn.Close()
	})
	defer func() {
		if stop() {
			untrack() // conn closed by the caller, or a read error
		}
	}()
	v6 := false
	if la, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		v6 = la.IP.To4() == nil
	}
	w := reflWorker{r: r, conn: conn, v6: v6, key: r.cfg.Key.Clone()}
	w.buf = make([]byte, 65536)
	w.out = make([]byte, 65536)
	w.oob = make([]byte, oobSize)
	w.txOOB = make([]byte, oobSize)
	for {
		n, oobn, _, src, err := conn.ReadMsgUDPAddrPort(w.buf, w.oob)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading STAMP test packet: %w", err)
		}
		w.handle(w.buf[:n], w.oob[:oobn], src)
	}
}

// reflWorker holds one socket's buffers, so the per-packet path allocates nothing.
type reflWorker struct {
	r          *Reflector
	conn       *net.UDPConn
	v6         bool
	key        *Key
	buf, out   []byte
	oob, txOOB []byte
	meta       rxMeta
}

func (w *reflWorker) handle(pkt, oob []byte, src netip.AddrPort) {
	r := w.r
	// The allow-list comes first: an unlisted flood costs one lookup per
	// datagram and creates no state.
	if !r.allow.Load().Contains(src.Addr()) {
		r.notAllowed.Add(1)
		return
	}
	mode := r.cfg.Mode
	base := mode.BaseLen()
	if len(pkt) < base {
		r.malformed.Add(1)
		return
	}
	now := time.Now()
	r.mu.Lock()
	ok := r.limiter.allow(src.Addr().Unmap(), now)
	r.mu.Unlock()
	if !ok {
		r.rateLimited.Add(1)
		return
	}
	if mode == Authenticated && !w.key.VerifyBase(pkt) {
		r.authFailed.Add(1)
		return
	}
	sp, _ := ParseSender(pkt, mode)
	parseOOB(oob, &w.meta)
	t2 := w.meta.ts
	if t2.IsZero() {
		t2 = now
	}

	r.mu.Lock()
	s := r.session(sessionKey{src: src, ssid: sp.SSID}, now)
	s.rx++
	s.tx++
	seq, rx, tx := s.seq, s.rx, s.tx
	s.seq++
	r.mu.Unlock()

	// The reply is the received packet rewritten in place: same length, so
	// never larger than what came in (RFC 8972 section 4 asks for symmetric
	// size too).
	out := w.out[:len(pkt)]
	copy(out, pkt)
	res := w.processTLVs(pkt, out, base, rx, tx)
	replyTOS := w.meta.tos &^ 3 // without CoS, answer in the class we were asked in
	if res.cos {
		replyTOS = res.dscp1 << 2
	}
	if res.integrity {
		r.integrity.Add(1)
	}
	ttl := w.meta.ttl
	if !w.meta.hasTTL {
		ttl = 0
	}
	rp := ReflectorPacket{
		Seq:              seq,
		ErrorEstimate:    r.cfg.Clock.ErrorEstimate(),
		SSID:             sp.SSID,
		ReceiveTimestamp: ToNTP(t2),
		SenderSeq:        sp.Seq,
		SenderTimestamp:  sp.Timestamp,
		SenderEE:         sp.ErrorEstimate,
		SenderTTL:        ttl,
	}
	oobn := buildTxOOB(w.txOOB, w.v6, w.meta.dst, replyTOS)
	rp.Timestamp = ToNTP(time.Now()) // T3, as late as possible
	rp.PutReflector(out, mode)
	if mode == Authenticated {
		if res.hmacOff >= 0 {
			// Recompute over the reply's Sequence Number and the TLVs as
			// rewritten (flags included).
			w.key.SignHMACTLV(out, base, res.hmacOff)
		}
		w.key.SignBase(out)
	}
	if _, _, err := w.conn.WriteMsgUDPAddrPort(out, w.txOOB[:oobn], src); err != nil {
		r.sendErrors.Add(1)
		return
	}
	r.reflected.Add(1)
}

// tlvResult is what a test packet's TLVs asked of the reply.
type tlvResult struct {
	cos       bool  // a Class of Service TLV was honoured: reply with dscp1
	dscp1     uint8 // the DSCP the sender asked for
	hmacOff   int   // the HMAC TLV to re-sign in the reply, -1 for none
	integrity bool  // authenticated mode: the TLVs failed verification
}

// processTLVs rewrites the TLVs of the reply in out (a copy of the received
// pkt) as RFC 8972 section 4 asks, in order of appearance:
//
//   - authenticated mode: the TLVs are verified first (HMAC TLV present,
//     last but for Extra Padding, matching). On failure none is processed
//     (no CoS obeyed, no counters) and every TLV gets I (section 4.8);
//   - a TLV understood and processed (Extra Padding, Class of Service,
//     Direct Measurement, HMAC in authenticated mode) gets its U, M and I
//     flags cleared; an unknown one (and the HMAC TLV without a key) gets U;
//   - a malformed TLV (a length wrong for its type, or running past the
//     packet) gets M, and processing stops there: the TLVs after it are
//     returned as received (their U, set by the sender, says so).
//
// Reserved flag bits are zeroed on every TLV sent back.
func (w *reflWorker) processTLVs(pkt, out []byte, base int, rx, tx uint32) tlvResult {
	res := tlvResult{hmacOff: -1}
	tlvs := out[base:]
	if len(tlvs) == 0 {
		return res
	}
	defer clearReservedFlags(tlvs)
	mode := w.r.cfg.Mode
	if mode == Authenticated {
		off, ok := w.key.VerifyTLVs(pkt, base)
		res.hmacOff = off
		if !ok {
			res.integrity = true
			setFlagAll(tlvs, FlagI)
			return res
		}
	}
	rd := NewTLVReader(tlvs)
	for {
		t, ok := rd.Next()
		if !ok {
			break
		}
		f := &tlvs[t.Off]
		switch t.Type {
		case TLVExtraPadding:
			*f = 0
		case TLVClassOfService:
			c, ok := ParseCoS(t.Value)
			if !ok {
				*f = FlagM
				return res
			}
			c.DSCP2, c.ECN, c.RP = w.meta.tos>>2, w.meta.tos&3, 0
			c.put(t.Value)
			res.cos, res.dscp1 = true, c.DSCP1
			*f = 0
		case TLVDirectMeasurement:
			if len(t.Value) != dmLen {
				*f = FlagM
				return res
			}
			binary.BigEndian.PutUint32(t.Value[4:], rx)
			binary.BigEndian.PutUint32(t.Value[8:], tx)
			*f = 0
		case TLVHMAC:
			if mode == Authenticated {
				*f = 0 // verified above; re-signed once the reply is built
			} else {
				*f = FlagU // no key: cannot be checked
			}
		default:
			*f = FlagU
		}
	}
	if rd.Err() != nil && rd.Offset() < len(tlvs) {
		tlvs[rd.Offset()] = FlagM
	}
	return res
}

// setFlagAll sets flag on every TLV of the area, a malformed last one too.
func setFlagAll(tlvs []byte, flag uint8) {
	rd := NewTLVReader(tlvs)
	for {
		t, ok := rd.Next()
		if !ok {
			break
		}
		tlvs[t.Off] |= flag
	}
	if rd.Err() != nil && rd.Offset() < len(tlvs) {
		tlvs[rd.Offset()] |= flag
	}
}

// clearReservedFlags zeroes the reserved flag bits of every TLV.
func clearReservedFlags(tlvs []byte) {
	rd := NewTLVReader(tlvs)
	for {
		t, ok := rd.Next()
		if !ok {
			break
		}
		tlvs[t.Off] &= flagsDefined
	}
	if rd.Err() != nil && rd.Offset() < len(tlvs) {
		tlvs[rd.Offset()] &= flagsDefined
	}
}

// session finds or creates the state of a session; r.mu is held.
func (r *Reflector) session(k sessionKey, now time.Time) *reflSession {
	if now.Sub(r.lastSweep) > r.cfg.SessionTimeout/4 {
		r.sweep(now)
	}
	s, ok := r.sessions[k]
	if !ok {
		if len(r.sessions) >= r.cfg.MaxSessions {
			r.evictOldest()
		}
		s = &reflSession{}
		r.sessions[k] = s
		r.nSessions.Store(int64(len(r.sessions)))
	}
	s.last = now
	return s
}

func (r *Reflector) sweep(now time.Time) {
	r.lastSweep = now
	for k, s := range r.sessions {
		if now.Sub(s.last) > r.cfg.SessionTimeout {
			delete(r.sessions, k)
		}
	}
	r.limiter.sweep(now)
	r.nSessions.Store(int64(len(r.sessions)))
}

func (r *Reflector) evictOldest() {
	var oldest sessionKey
	var t time.Time
	for k, s := range r.sessions {
		if t.IsZero() || s.last.Before(t) {
			oldest, t = k, s.last
		}
	}
	delete(r.sessions, oldest)
}
