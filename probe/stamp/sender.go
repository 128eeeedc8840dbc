package stamp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SenderConfig configures one STAMP session towards one reflector.
type SenderConfig struct {
	Target string // IP literal or hostname
	// Addr, when valid, is Target already resolved (the probe engine
	// resolves names itself and follows their changes).
	Addr      netip.Addr
	Port      uint16
	Family    string // "", "ip4" or "ip6"
	Source    string // local address to send from ("" = kernel's choice)
	Interface string
	TOS       uint8 // IPv4 TOS / IPv6 traffic class of the test packets
	Interval  time.Duration
	Timeout   time.Duration // a packet without reply after this is lost
	Size      int           // pad test packets to this many UDP payload octets
	Mode      Mode
	Key       *Key // required in Authenticated mode
	// Clock is the local clock state (KernelClock when nil).
	Clock ClockState
	// SSID identifies the session (RFC 8972); 0 picks a random one.
	SSID uint16
	// VariationWindow is the number of replies over which the minimum
	// one-way delay is taken for the delay variation (default 100).
	VariationWindow int
	Observer        Observer
}

// slot states
const (
	slotEmpty uint8 = iota
	slotPending
	slotReplied
	slotLost
)

type slot struct {
	seq   uint32
	state uint8
	t1    time.Time
	ee    ErrorEstimate
	// rIdx is the reflector's receive index of this packet: the
	// reflector's sequence number, or its Direct Measurement receive
	// counter minus one.
	rIdx uint32
}

// Sender is a STAMP session-sender: it sends a test packet every interval
// and turns the replies into RTT, one-way delay (variation), DSCP and
// direction-split loss, reported to its Observer.
type Sender struct {
	cfg  SenderConfig
	conn *net.UDPConn
	rwg  sync.WaitGroup // the receive loop
	v6   bool
	ssid uint16
	key  *Key // the send path's; the receive path has its own clone
	rkey *Key
	obs  Observer

	mu     sync.Mutex
	ring   []slot
	next   uint32 // next sequence number to send
	cursor uint32 // oldest sequence number not yet resolved
	// Whether the reflector keeps per-session state that splits loss by
	// direction: its own sequence counter or the Direct Measurement
	// counters (see classify). Sticky once proven.
	stateful bool
	// Loss attribution state: the last replied packet the cursor passed,
	// the highest reflector index seen, and the lost packets since.
	prevJ, prevR uint32
	run          int
	maxReplied   uint32
	anyReplied   bool
	fwdWin       minWindow
	revWin       minWindow
	reply        Reply
	sendBuf      []byte
}

// NewSender checks the configuration; Open then Run start the session.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.Interval <= 0 || cfg.Timeout <= 0 {
		return nil, errors.New("STAMP sender needs a positive interval and timeout")
	}
	if cfg.Port == 0 {
		cfg.Port = 862
	}
	if cfg.Mode == Authenticated && cfg.Key == nil {
		return nil, ErrNoKey
	}
	if cfg.Clock == nil {
		cfg.Clock = KernelClock{}
	}
	if cfg.VariationWindow <= 0 {
		cfg.VariationWindow = 100
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	ssid := cfg.SSID
	for ssid == 0 {
		ssid = uint16(rand.Uint32())
	}
	// The ring must outlast every packet in flight: timeout/interval of
	// them plus slack, rounded up to a power of two for cheap indexing.
	inFlight := int(cfg.Timeout/cfg.Interval) + 4
	n := 64
	for n < 2*inFlight {
		n *= 2
	}
	s := &Sender{
		cfg: cfg, ssid: ssid, obs: cfg.Observer,
		key: cfg.Key.Clone(), rkey: cfg.Key.Clone(),
		// The first packet is number 1, not 0: on the wire exactly as
		// if packet 0 had been lost on the way out. A stateful reflector
		// numbers from 0 what it receives, so its first reply carries
		// a lower number than ours; a stateless one copies ours (RFC
		// 8762 section 4.3). The first reply tells them apart.
		next: firstSeq, cursor: firstSeq,
		ring:    make([]slot, n),
		prevJ:   ^uint32(0),
		prevR:   ^uint32(0),
		fwdWin:  newMinWindow(cfg.VariationWindow),
		revWin:  newMinWindow(cfg.VariationWindow),
		sendBuf: make([]byte, 0, max(cfg.Size, AuthBaseLen)+64),
	}
	return s, nil
}

// firstSeq is the sequence number of a session's first test packet.
const firstSeq = 1

// SSID is the session identifier the sender uses.
func (s *Sender) SSID() uint16 { return s.ssid }

// Open resolves the target and opens the socket. Call it in the network
// namespace the session should run in; Run calls it if it was not.
func (s *Sender) Open(ctx context.Context) error {
	addr, err := s.resolve(ctx)
	if err != nil {
		return err
	}
	s.v6 = addr.Is6()
	network := "udp4"
	if s.v6 {
		network = "udp6"
	}
	d := net.Dialer{Control: sockOpts{v6: s.v6, tos: int(s.cfg.TOS), iface: s.cfg.Interface}.control}
	if s.cfg.Source != "" {
		src, err := netip.ParseAddr(s.cfg.Source)
		if err != nil {
			return fmt.Errorf("STAMP source address %q: %w", s.cfg.Source, err)
		}
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	c, err := d.DialContext(ctx, network, netip.AddrPortFrom(addr, s.cfg.Port).String())
	if err != nil {
		return fmt.Errorf("opening STAMP session to %s port %d: %w", s.cfg.Target, s.cfg.Port, err)
	}
	s.conn = c.(*net.UDPConn)
	return nil
}

func (s *Sender) resolve(ctx context.Context) (netip.Addr, error) {
	if s.cfg.Addr.IsValid() {
		return s.cfg.Addr.Unmap(), nil
	}
	if a, err := netip.ParseAddr(s.cfg.Target); err == nil {
		return a.Unmap(), nil
	}
	network := "ip"
	if s.cfg.Family == "ip4" || s.cfg.Family == "ip6" {
		network = s.cfg.Family
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, s.cfg.Target)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving STAMP target %s: %w", s.cfg.Target, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolving STAMP target %s: no %s address", s.cfg.Target, network)
	}
	return addrs[0].Unmap(), nil
}

// Start opens the session (unless Open was called) and starts receiving
// replies; Send then sends one test packet per call, and Close ends it.
// The probe engine drives sessions this way, on its own schedule.
func (s *Sender) Start(ctx context.Context) error {
	if s.conn == nil {
		if err := s.Open(ctx); err != nil {
			return err
		}
	}
	s.rwg.Add(1)
	go func() {
		defer s.rwg.Done()
		s.receive(ctx)
	}()
	return nil
}

// Send sends one test packet and resolves the packets past their timeout.
func (s *Sender) Send() { s.send() }

// Close closes the socket and waits for the receive loop to end.
func (s *Sender) Close() error {
	err := s.conn.Close()
	s.rwg.Wait()
	return err
}

// Run sends every interval, after a random phase, and receives until ctx
// ends, then closes the socket.
func (s *Sender) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = s.Close() }()
	phase := time.Duration(rand.Int64N(int64(s.cfg.Interval)))
	timer := time.NewTimer(phase)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-timer.C:
	}
	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	for {
		s.send()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// send builds and sends one test packet and resolves timed-out ones.
func (s *Sender) send() {
	mode := s.cfg.Mode
	ee := s.cfg.Clock.ErrorEstimate()
	s.mu.Lock()
	seq := s.next
	s.next++
	s.mu.Unlock()

	t1 := time.Now()
	p := SenderPacket{Seq: seq, Timestamp: ToNTP(t1), ErrorEstimate: ee, SSID: s.ssid}
	b := p.AppendSender(s.sendBuf[:0], mode)
	b = AppendCoS(b, CoS{DSCP1: s.cfg.TOS >> 2})
	b = AppendDirectMeasurement(b, DirectMeasurement{SenderTx: seq - firstSeq + 1})
	trailer := 0
	if mode == Authenticated {
		trailer = TLVHeaderLen + hmacLen
	}
	if pad := s.cfg.Size - len(b) - trailer; pad >= TLVHeaderLen {
		b = AppendExtraPadding(b, pad)
	}
	if mode == Authenticated {
		b = s.key.AppendHMACTLV(b, mode.BaseLen())
		s.key.SignBase(b)
	}
	s.sendBuf = b

	s.mu.Lock()
	sl := &s.ring[seq%uint32(len(s.ring))]
	if sl.state == slotPending {
		// Never happens with the ring sized for the timeout; resolve
		// rather than overwrite silently.
		s.advance(t1, true)
	}
	*sl = slot{seq: seq, state: slotPending, t1: t1, ee: ee}
	s.mu.Unlock()

	if _, err := s.conn.Write(b); err != nil {
		s.obs.Error("send")
	}
	s.mu.Lock()
	s.obs.Sent()
	s.advance(time.Now(), false)
	s.mu.Unlock()
}

func (s *Sender) receive(ctx context.Context) {
	buf := make([]byte, 65536)
	oob := make([]byte, oobSize)
	var meta rxMeta
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				// ICMP port unreachable for an earlier packet: the
				// packet is lost and will time out.
				s.obs.Error("refused")
				continue
			}
			s.obs.Error("receive")
			time.Sleep(10 * time.Millisecond) // do not spin on a persistent error
			continue
		}
		parseOOB(oob[:oobn], &meta)
		t4 := meta.ts
		if t4.IsZero() {
			t4 = time.Now()
		}
		s.handleReply(buf[:n], &meta, t4)
	}
}

func (s *Sender) handleReply(pkt []byte, meta *rxMeta, t4 time.Time) {
	mode := s.cfg.Mode
	base := mode.BaseLen()
	rp, err := ParseReflector(pkt, mode)
	if err != nil {
		s.obs.Error("malformed")
		return
	}
	if mode == Authenticated && !s.rkey.VerifyBase(pkt) {
		s.obs.Error("auth")
		return
	}
	if rp.SSID != s.ssid {
		s.obs.Error("foreign_session")
		return
	}
	cos, hasCoS, dm, hasDM := s.replyTLVs(pkt, base)
	localEE := s.cfg.Clock.ErrorEstimate()

	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.ring[rp.SenderSeq%uint32(len(s.ring))]
	switch {
	case sl.seq != rp.SenderSeq || sl.state == slotEmpty || sl.state == slotLost:
		s.obs.Late()
		return
	case sl.state == slotReplied:
		s.obs.Duplicate()
		return
	}
	if s.anyReplied && int32(rp.SenderSeq-s.maxReplied) < 0 {
		s.obs.Reordered()
	} else {
		s.maxReplied, s.anyReplied = rp.SenderSeq, true
	}
	sl.state = slotReplied
	sl.rIdx = rp.Seq
	if hasDM {
		sl.rIdx = dm.ReflectorRx - 1
	}
	s.classify(rp.Seq != rp.SenderSeq || hasDM)

	r := &s.reply
	*r = Reply{Seq: rp.SenderSeq, SenderTTL: rp.SenderTTL, Stateless: !s.stateful}
	t1 := ToNTP(sl.t1)
	raw := t4.Sub(sl.t1)
	dwell := rp.Timestamp.Sub(rp.ReceiveTimestamp)
	if dwell < 0 || dwell > raw {
		dwell = 0 // a reflector with a broken clock; keep the raw RTT
	}
	r.Dwell = dwell
	r.RTT = raw - dwell
	r.Forward = rp.ReceiveTimestamp.Sub(t1)
	r.Reverse = ToNTP(t4).Sub(rp.Timestamp)
	r.Synced = sl.ee.Synced() && localEE.Synced() && rp.ErrorEstimate.Synced()
	r.ErrorBound = sl.ee.Error() + rp.ErrorEstimate.Error()
	r.ForwardVariation = r.Forward - s.fwdWin.add(r.Forward)
	r.ReverseVariation = r.Reverse - s.revWin.add(r.Reverse)
	r.SentDSCP = s.cfg.TOS >> 2
	if hasCoS {
		r.HasForwardDSCP = true
		r.ReflectorDSCP = cos.DSCP2
		r.ForwardRemarked = cos.DSCP2 != r.SentDSCP
		if cos.RP == 0 && meta.hasTOS {
			r.HasReverseDSCP = true
			r.RequestedDSCP, r.ReceivedDSCP = cos.DSCP1, meta.tos>>2
			r.ReverseRemarked = r.ReceivedDSCP != r.RequestedDSCP
		}
	}
	s.obs.Reply(r)
	s.advance(t4, false)
}

// replyTLVs reads the TLVs of a reply (RFC 8972 section 4): in
// authenticated mode they count only when the reply's HMAC TLV verifies; a
// TLV with U set was not processed by the reflector and is skipped; M ends
// TLV processing (the TLV and those after it are ignored); I on any TLV
// means the reflector could not verify ours and processed none. The reply
// itself still counts: its base packet was checked on its own.
func (s *Sender) replyTLVs(pkt []byte, base int) (cos CoS, hasCoS bool, dm DirectMeasurement, hasDM bool) {
	if len(pkt) <= base {
		return
	}
	if s.cfg.Mode == Authenticated {
		if _, ok := s.rkey.VerifyTLVs(pkt, base); !ok {
			s.obs.Error("integrity")
			return
		}
	}
	rd := NewTLVReader(pkt[base:])
	for {
		t, ok := rd.Next()
		switch {
		case !ok || t.Flags&FlagM != 0:
			// A reflector that echoes TLVs without processing them
			// but clears U leaves our zero counters: then no TLV says
			// anything.
			if hasDM && dm.ReflectorRx == 0 {
				return CoS{}, false, DirectMeasurement{}, false
			}
			return
		case t.Flags&FlagI != 0:
			s.obs.Error("integrity")
			return CoS{}, false, DirectMeasurement{}, false
		case t.Flags&FlagU != 0:
			continue
		}
		switch t.Type {
		case TLVClassOfService:
			cos, hasCoS = ParseCoS(t.Value)
		case TLVDirectMeasurement:
			dm, hasDM = ParseDirectMeasurement(t.Value)
		}
	}
}

// classify records what a reply tells about the reflector: stateful when
// it numbered the reply itself (a sequence number other than ours) or
// filled the Direct Measurement counters. Either splits loss by direction
// and is sticky. A reflector whose every reply so far copied our sequence
// number and gave no counters is stateless (RFC 8762 section 4.3): since
// our first packet is number 1, even a stateful reflector's first reply
// differs, unless its counter does not start at 0 (then it is taken for
// stateless until its numbering diverges from ours after a forward loss).
func (s *Sender) classify(stateful bool) {
	s.stateful = s.stateful || stateful
}

// advance moves the cursor over resolved packets: replied ones, and
// pending ones past their deadline (declared lost). force resolves the
// oldest pending packet regardless of its deadline. s.mu is held.
func (s *Sender) advance(now time.Time, force bool) {
	for s.cursor != s.next {
		sl := &s.ring[s.cursor%uint32(len(s.ring))]
		if sl.seq != s.cursor {
			// The slot was never filled (send of s.cursor still in
			// progress on the other goroutine).
			return
		}
		switch sl.state {
		case slotReplied:
			s.attribute(sl)
		case slotPending:
			if !force && now.Sub(sl.t1) < s.cfg.Timeout {
				return
			}
			if !force && s.repliesQueued() {
				// Its reply may be among those the receive loop has not
				// read yet (a loaded agent): decide after it has.
				return
			}
			force = false
			sl.state = slotLost
			s.run++
			s.obs.Unattributed(s.run)
		}
		s.cursor++
	}
}

// attribute splits the lost packets between the previous replied packet
// and sl by what the reflector saw: of the run packets lost in between, it
// received (its index now) - (its index then) - 1; those were lost on the
// way back, the rest on the way out.
//
// A stateless reflector copies our sequence numbers: its index says
// nothing about what it received, so the losses are reported without a
// direction.
func (s *Sender) attribute(sl *slot) {
	if s.run > 0 {
		if s.stateful {
			between := int(int32(sl.rIdx - s.prevR - 1))
			rev := min(max(between, 0), s.run)
			s.obs.Lost(s.run-rev, rev)
		} else {
			s.obs.LostUnknownDirection(s.run)
		}
		s.run = 0
		s.obs.Unattributed(0)
	}
	s.prevJ = sl.seq
	// Keep the highest index: forward reordering must not make later
	// losses look like reverse ones. An index far below it (more than
	// could be in flight) means the reflector restarted and counts anew.
	if d := int32(sl.rIdx - s.prevR); d > 0 || s.prevR == ^uint32(0) || d < -int32(len(s.ring)) {
		s.prevR = sl.rIdx
	}
}

// minWindow tracks the minimum of the last n samples.
type minWindow struct {
	v    []time.Duration
	i, n int
	min  time.Duration
}

func newMinWindow(n int) minWindow { return minWindow{v: make([]time.Duration, n)} }

// add records x and returns the window's minimum including x.
func (w *minWindow) add(x time.Duration) time.Duration {
	evicted := w.v[w.i]
	full := w.n == len(w.v)
	w.v[w.i] = x
	w.i = (w.i + 1) % len(w.v)
	if !full {
		w.n++
	}
	switch {
	case w.n == 1:
		w.min = x
	case x <= w.min:
		w.min = x
	case full && evicted == w.min:
		w.min = x
		for _, y := range w.v[:w.n] {
			w.min = min(w.min, y)
		}
	}
	return w.min
}

// repliesQueued reports whether replies wait unread in the socket (SIOCINQ).
func (s *Sender) repliesQueued() bool {
	if s.conn == nil {
		return false
	}
	rc, err := s.conn.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}
