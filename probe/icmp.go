package probe

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/icmpsock"
)

// Echo payload layout: token (8) | serial (8) | filler. The token is random
// per process, so replies to an earlier run of the agent, or to another
// program, never match; the serial tells a late reply from the current
// probe that reuses its sequence number.
const (
	payloadMin = 16
	echoHeader = 8
)

// pathFeatureIDs starts the echo identifiers used by the path features
// (probe/trace, probe/pmtu). Their replies reach our raw sockets too; they
// are this process's own traffic, so they are skipped, not counted.
const pathFeatureIDs = 0xc000

// ICMP types and codes used for matching.
const (
	v4EchoReply, v4Unreach, v4EchoRequest, v4TimeExceeded, v4ParamProblem           = 0, 3, 8, 11, 12
	v6Unreach, v6TooBig, v6TimeExceeded, v6ParamProblem, v6EchoRequest, v6EchoReply = 1, 2, 3, 4, 128, 129
)

type icmpProber struct {
	log     *zap.Logger
	sink    Sink
	base    time.Time // the engine's monotonic origin
	monoNow func() int64
	token   [8]byte

	mu    sync.Mutex
	conns map[icmpsock.Key]*icmpConn
	// list holds the same sockets for the scheduler's per-tick expiry,
	// replaced (never modified) when one is added, so a tick reads it
	// without locking or allocating.
	list  atomic.Pointer[[]*icmpConn]
	ids   uint16
	modes map[icmpsock.Mode]bool
}

func newICMPProber(log *zap.Logger, sink Sink, base time.Time, monoNow func() int64) *icmpProber {
	p := &icmpProber{log: log, sink: sink, base: base, monoNow: monoNow, conns: map[icmpsock.Key]*icmpConn{}, modes: map[icmpsock.Mode]bool{}}
	_, _ = rand.Read(p.token[:])
	var b [2]byte
	_, _ = rand.Read(b[:])
	p.ids = binary.BigEndian.Uint16(b[:]) % pathFeatureIDs
	return p
}

func icmpKey(s *config.ProbeSpec, ip netip.Addr) icmpsock.Key {
	k := icmpsock.Key{V6: ip.Is6(), Interface: s.Interface, TOS: s.TOS}
	if s.Source != "" {
		k.Source, _ = netip.ParseAddr(s.Source)
		k.Source = k.Source.Unmap()
	}
	return k
}

// conn returns the shared socket for k, opening it on first use.
func (p *icmpProber) conn(k icmpsock.Key) (*icmpConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[k]; c != nil {
		return c, nil
	}
	// Distinct identifiers per raw socket keep their replies apart; the
	// range from pathFeatureIDs up belongs to trace and pmtu.
	p.ids = (p.ids + 1) % pathFeatureIDs
	s, err := icmpsock.Open(k, p.ids)
	if err != nil {
		return nil, err
	}
	if !p.modes[s.Mode] {
		p.modes[s.Mode] = true
		how := "raw ICMP sockets (root or CAP_NET_RAW)"
		if s.Mode == icmpsock.Datagram {
			how = "unprivileged ICMP datagram sockets (net.ipv4.ping_group_range)"
		}
		p.log.Info("ICMP sockets opened", zap.String("mode", s.Mode.String()), zap.String("using", how))
	}
	p.log.Debug("ICMP socket opened", zap.Stringer("socket", k), zap.Uint16("identifier", s.ID))
	c := newICMPConn(p, s)
	p.conns[k] = c
	var list []*icmpConn
	if old := p.list.Load(); old != nil {
		list = append(list, *old...)
	}
	list = append(list, c)
	p.list.Store(&list)
	go c.readLoop()
	return c, nil
}

func (p *icmpProber) mode() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.modes[icmpsock.Raw]:
		return icmpsock.Raw.String()
	case p.modes[icmpsock.Datagram]:
		return icmpsock.Datagram.String()
	}
	return ""
}

func (p *icmpProber) send(t *target, a *resolved) { a.conn.send(t, a) }

// expire fails overdue probes on every socket and returns the earliest
// remaining deadline worth waking for (0: none).
func (p *icmpProber) expire(now int64) int64 {
	list := p.list.Load()
	if list == nil {
		return 0
	}
	var next int64
	for _, c := range *list {
		if d := c.expire(now); d != 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

func (p *icmpProber) close() {
	// Replies already queued are read first: readers wait up to coalesce
	// between reads. Probes still in flight after that get no verdict (a
	// shutdown is not loss).
	time.Sleep(2 * coalesce)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.sock.Close()
	}
}

// slot states
const (
	slotFree uint8 = iota
	slotInFlight
	slotAnswered
	slotLost
)

// slot is one sequence number's in-flight record. The table is indexed by
// the 16-bit sequence number: fixed size, no allocation per probe.
type slot struct {
	serial   uint64
	t        *target
	sentWall int64 // ns, CLOCK_REALTIME: the kernel's receive stamps use it
	sentMono int64
	deadline int64 // mono
	state    uint8
}

type pending struct {
	deadline int64
	serial   uint64
	seq      uint16
}

// icmpConn is one shared socket and the probes in flight on it.
type icmpConn struct {
	p    *icmpProber
	sock *icmpsock.Socket
	v6   bool
	raw  bool

	mu        sync.Mutex
	slots     []slot
	seq       uint16
	serial    uint64
	deadlines deadlineHeap
	buf       []byte
	handleFn  func(*icmpsock.Packet)
	drops     uint32
}

func newICMPConn(p *icmpProber, s *icmpsock.Socket) *icmpConn {
	c := &icmpConn{p: p, sock: s, v6: s.Key.V6, raw: s.Mode == icmpsock.Raw, slots: make([]slot, 1<<16)}
	var b [8]byte
	_, _ = rand.Read(b[:])
	c.serial = binary.BigEndian.Uint64(b[:]) >> 1 // random start: serials never repeat across runs
	c.seq = uint16(c.serial)
	c.buf = make([]byte, echoHeader+config.MaxSize+payloadMin)
	fillPayload(c.buf)
	c.handleFn = c.handle
	return c
}

// send builds and sends one echo request. Called by the scheduler only.
func (c *icmpConn) send(t *target, a *resolved) {
	size := t.spec.Size
	if size < payloadMin {
		size = payloadMin
	}
	c.mu.Lock()
	// Find a free sequence number. With 65,536 of them and at most
	// rate × timeout in flight, the first one is nearly always free.
	var seq uint16
	found := false
	for i := 0; i < 1<<16; i++ {
		c.seq++
		if c.slots[c.seq].state != slotInFlight {
			seq, found = c.seq, true
			break
		}
	}
	if !found {
		c.mu.Unlock()
		t.rec.Sent()
		t.rec.Failed(ReasonSendError)
		return
	}
	c.serial++
	serial := c.serial
	b := buildEcho(c, c.buf, seq, serial, size)
	sl := &c.slots[seq]
	sl.serial, sl.t, sl.state = serial, t, slotInFlight
	// Taken inside SendTo just before the system call.
	at, err := c.sock.SendTo(b, a.sa)
	sl.sentWall = at.UnixNano()
	sl.sentMono = int64(at.Sub(c.p.base))
	sl.deadline = sl.sentMono + t.timeout
	t.rec.Sent()
	if err != nil {
		sl.state = slotLost
		c.mu.Unlock()
		c.p.log.Debug("ICMP send failed", zap.String("target", t.spec.Target), zap.Error(err))
		t.rec.Failed(ReasonSendError)
		return
	}
	c.deadlines.push(pending{deadline: sl.deadline, serial: serial, seq: seq})
	c.mu.Unlock()
}

// fillPayload writes the filler after the token and serial once: it is
// the same for every probe, so buildEcho leaves it alone.
func fillPayload(buf []byte) {
	for i := echoHeader + payloadMin; i < len(buf); i++ {
		buf[i] = byte(i)
	}
}

// buildEcho writes an echo request with the given sequence number and
// serial into buf and returns it.
func buildEcho(c *icmpConn, buf []byte, seq uint16, serial uint64, size int) []byte {
	b := buf[:echoHeader+size]
	if c.v6 {
		b[0] = v6EchoRequest
	} else {
		b[0] = v4EchoRequest
	}
	b[1] = 0
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint16(b[4:], c.sock.ID)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:16], c.p.token[:])
	binary.BigEndian.PutUint64(b[16:24], serial)
	if !c.v6 && c.raw {
		// Raw IPv4: we checksum. ICMPv6 and ping sockets: the kernel does.
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
	return b
}

// expire fails every probe whose deadline has passed without a reply and
// returns when the next one falls due (0: nothing in flight).
func (c *icmpConn) expire(now int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.deadlines) > 0 && c.deadlines[0].deadline+expiryGrace <= now {
		d := c.deadlines.pop()
		sl := &c.slots[d.seq]
		if sl.serial == d.serial && sl.state == slotInFlight {
			sl.state = slotLost
			sl.t.rec.Failed(ReasonTimeout)
		}
	}
	if len(c.deadlines) == 0 {
		return 0
	}
	return c.deadlines[0].deadline + expiryGrace
}

// readLoop handles replies. Their RTT comes from kernel timestamps, so
// handling them up to coalesce later costs no accuracy; waiting lets replies
// accumulate into one recvmmsg batch instead of one wake-up per packet.
// expire keeps probes in flight for the same margin past their deadline, so
// a reply that arrived in time is never counted lost for being read late.
func (c *icmpConn) readLoop() {
	for {
		n, drops, err := c.sock.ReadBatch(c.handleFn)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.p.log.Warn("ICMP receive failed", zap.Stringer("socket", c.sock.Key), zap.Error(err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if drops != c.drops {
			c.p.sink.SocketDrops(uint64(drops - c.drops))
			c.drops = drops
		}
		if n < icmpsock.BatchSize {
			time.Sleep(coalesce)
		}
	}
}

// coalesce is how long the reader lets replies accumulate; expiryGrace is
// the margin expire adds to deadlines to cover it.
const (
	coalesce    = 2 * time.Millisecond
	expiryGrace = int64(5 * time.Millisecond)
)

// handle decides what one received ICMP message is.
func (c *icmpConn) handle(pk *icmpsock.Packet) {
	d := pk.Data
	typ := d[0]
	switch {
	case (!c.v6 && typ == v4EchoReply) || (c.v6 && typ == v6EchoReply):
		c.handleReply(pk)
	case !c.v6 && (typ == v4Unreach || typ == v4TimeExceeded || typ == v4ParamProblem):
		c.handleError(pk, reasonV4(typ, d[1]))
	case c.v6 && (typ == v6Unreach || typ == v6TooBig || typ == v6TimeExceeded || typ == v6ParamProblem):
		c.handleError(pk, reasonV6(typ, d[1]))
	}
}

func (c *icmpConn) handleReply(pk *icmpsock.Packet) {
	d := pk.Data
	if id := binary.BigEndian.Uint16(d[4:]); c.raw && id != c.sock.ID {
		if id < pathFeatureIDs {
			c.p.sink.Ignored(IgnoredForeign)
		}
		return
	}
	if len(d) < echoHeader+payloadMin {
		c.p.sink.Ignored(IgnoredMalformed)
		return
	}
	if string(d[8:16]) != string(c.p.token[:]) {
		c.p.sink.Ignored(IgnoredForged)
		return
	}
	seq := binary.BigEndian.Uint16(d[6:])
	serial := binary.BigEndian.Uint64(d[16:24])
	c.mu.Lock()
	sl := &c.slots[seq]
	if sl.serial != serial {
		c.mu.Unlock()
		if serial < sl.serial {
			c.p.sink.Ignored(IgnoredLate) // its slot was reused by a newer probe
		} else {
			c.p.sink.Ignored(IgnoredForged)
		}
		return
	}
	switch sl.state {
	case slotAnswered:
		c.mu.Unlock()
		c.p.sink.Ignored(IgnoredDuplicate)
		return
	case slotLost:
		c.mu.Unlock()
		c.p.sink.Ignored(IgnoredLate)
		return
	case slotFree:
		c.mu.Unlock()
		c.p.sink.Ignored(IgnoredForged)
		return
	}
	t := sl.t
	if a := t.addr.Load(); a == nil || a.ip != pk.From {
		c.mu.Unlock()
		c.p.sink.Ignored(IgnoredForged)
		return
	}
	mono := c.p.monoNow() - sl.sentMono
	rtt := mono
	if pk.KernelTime != 0 {
		// The kernel stamp is exact unless the wall clock stepped between
		// send and receive; then the monotonic figure is the honest one.
		if k := pk.KernelTime - sl.sentWall; k > 0 && k <= mono {
			rtt = k
		}
	}
	if rtt > t.timeout {
		// Arrived after the deadline: lost, and the reply is late.
		sl.state = slotLost
		c.mu.Unlock()
		t.rec.Failed(ReasonTimeout)
		c.p.sink.Ignored(IgnoredLate)
		return
	}
	sl.state = slotAnswered
	c.mu.Unlock()
	t.rec.Succeeded(time.Duration(rtt))
}

// handleError attributes an ICMP error to the probe whose request it quotes.
func (c *icmpConn) handleError(pk *icmpsock.Packet, r Reason) {
	d := pk.Data
	q := d[8:] // the quoted IP packet
	var dst netip.Addr
	var inner []byte
	if c.v6 {
		if len(q) < 40+8 || q[6] != 58 {
			c.p.sink.Ignored(IgnoredStrayError)
			return
		}
		dst = netip.AddrFrom16([16]byte(q[24:40]))
		inner = q[40:]
		if inner[0] != v6EchoRequest {
			c.p.sink.Ignored(IgnoredStrayError)
			return
		}
	} else {
		if len(q) < 20 {
			c.p.sink.Ignored(IgnoredStrayError)
			return
		}
		ihl := int(q[0]&0x0f) * 4
		if ihl < 20 || len(q) < ihl+8 || q[9] != 1 {
			c.p.sink.Ignored(IgnoredStrayError)
			return
		}
		dst = netip.AddrFrom4([4]byte(q[16:20]))
		inner = q[ihl:]
		if inner[0] != v4EchoRequest {
			c.p.sink.Ignored(IgnoredStrayError)
			return
		}
	}
	if id := binary.BigEndian.Uint16(inner[4:]); c.raw && id != c.sock.ID {
		if id < pathFeatureIDs {
			c.p.sink.Ignored(IgnoredStrayError)
		}
		return
	}
	seq := binary.BigEndian.Uint16(inner[6:])
	c.mu.Lock()
	sl := &c.slots[seq]
	ok := sl.state == slotInFlight
	if ok && len(inner) >= echoHeader+payloadMin {
		// Routers quoting enough of the packet let us check it fully.
		ok = string(inner[8:16]) == string(c.p.token[:]) && binary.BigEndian.Uint64(inner[16:24]) == sl.serial
	}
	if ok {
		a := sl.t.addr.Load()
		ok = a != nil && a.ip == dst.Unmap()
	}
	if !ok {
		c.mu.Unlock()
		c.p.sink.Ignored(IgnoredStrayError)
		return
	}
	sl.state = slotLost
	t := sl.t
	c.mu.Unlock()
	t.rec.Failed(r)
}

func reasonV4(typ, code byte) Reason {
	switch typ {
	case v4TimeExceeded:
		return ReasonTTLExceeded
	case v4ParamProblem:
		return ReasonParamProblem
	}
	switch code {
	case 0, 6, 11:
		return ReasonNetUnreachable
	case 1, 7, 12:
		return ReasonHostUnreachable
	case 3:
		return ReasonPortUnreachable
	case 4:
		return ReasonPacketTooBig
	case 9, 10, 13:
		return ReasonAdminProhibited
	}
	return ReasonUnreachable
}

func reasonV6(typ, code byte) Reason {
	switch typ {
	case v6TooBig:
		return ReasonPacketTooBig
	case v6TimeExceeded:
		return ReasonTTLExceeded
	case v6ParamProblem:
		return ReasonParamProblem
	}
	switch code {
	case 0:
		return ReasonNetUnreachable
	case 1, 5, 6:
		return ReasonAdminProhibited
	case 3:
		return ReasonHostUnreachable
	case 4:
		return ReasonPortUnreachable
	}
	return ReasonUnreachable
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// deadlineHeap orders in-flight probes by deadline. Targets may have
// different timeouts, so send order is not deadline order.
type deadlineHeap []pending

func (h *deadlineHeap) push(p pending) {
	*h = append(*h, p)
	s := *h
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if s[parent].deadline <= s[i].deadline {
			break
		}
		s[parent], s[i] = s[i], s[parent]
		i = parent
	}
}

func (h *deadlineHeap) pop() pending {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && s[l].deadline < s[m].deadline {
			m = l
		}
		if r < n && s[r].deadline < s[m].deadline {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
