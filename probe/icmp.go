package probe

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/inet"
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

// pathFeatureIDs starts the echo identifiers of the path features: their
// replies reach our raw sockets too, and are skipped, not counted.
const pathFeatureIDs = inet.PathIDs

// ICMP types and codes used for matching.
const (
	v4EchoReply, v4Unreach, v4EchoRequest, v4TimeExceeded, v4ParamProblem           = 0, 3, 8, 11, 12
	v6Unreach, v6TooBig, v6TimeExceeded, v6ParamProblem, v6EchoRequest, v6EchoReply = 1, 2, 3, 4, 128, 129
)

type icmpProber struct {
	e     *Engine
	token [8]byte

	mu    sync.Mutex // guards conns, list updates, nextID and conn refs
	conns map[icmpsock.Key]*icmpConn
	// list holds the same sockets for the scheduler's per-tick expiry,
	// replaced (never modified) when one is added or closed, so a tick
	// reads it without locking or allocating.
	list   atomic.Pointer[[]*icmpConn]
	nextID uint16

	modesMu sync.Mutex
	modes   map[icmpsock.Mode]bool
	// own marks the identifiers of this process's raw sockets: every raw
	// socket receives a copy of every echo reply on the host, and the
	// replies to our other sockets are skipped, not counted as foreign.
	// A closed socket's identifier stays marked for ownLinger, since
	// replies to its last probes may still arrive; lingering lists them.
	own       [1 << 16 / 64]atomic.Uint64
	lingering []lingeringID // guarded by mu

	// flowUse are the echo identifiers of multi-flow jobs (flows.go):
	// each belongs to one socket, shared by the jobs of that socket whose
	// flows derive it, and lingers like a closed socket's identifier when
	// the last of them leaves (so a replacing job on the same socket gets
	// it back). Guarded by mu; flowLinger lists those with no job.
	flowUse    map[uint16]*flowUse
	flowLinger []uint16
	// tracing marks the identifiers whose flows are being traced: the
	// replies and errors of those Paris probes reach our raw sockets with
	// one of our flow identifiers and are skipped, not counted as forged
	// or stray. tracingN counts the rounds per identifier (guarded by mu).
	tracing  [1 << 16 / 64]atomic.Uint64
	tracingN map[uint16]int
	// warnedPing: the warning that ICMP flows need raw sockets was given.
	warnedPing atomic.Bool
}

// flowUse is one flow identifier's socket and the jobs using it.
type flowUse struct {
	key   icmpsock.Key
	refs  int
	until int64 // mono ns: when a lingering identifier is freed (refs 0)
}

type lingeringID struct {
	id    uint16
	until int64 // mono ns
}

// ownLinger is how long a closed socket's identifier stays ours: longer
// than any probe timeout (at most 10 intervals of at most a few seconds).
const ownLinger = 2 * time.Minute

// linger keeps id marked as ours for ownLinger; it is not reused meanwhile.
func (p *icmpProber) linger(id uint16) {
	p.mu.Lock()
	p.lingering = append(p.lingering, lingeringID{id: id, until: p.e.monoNow() + int64(ownLinger)})
	p.mu.Unlock()
}

// releaseLingering frees the identifiers whose linger has passed.
func (p *icmpProber) releaseLingering(now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.lingering[:0]
	for _, l := range p.lingering {
		if l.until > now {
			keep = append(keep, l)
		} else {
			p.setOwn(l.id, false)
		}
	}
	p.lingering = keep
	ids := p.flowLinger[:0]
	for _, id := range p.flowLinger {
		u := p.flowUse[id]
		switch {
		case u == nil || u.refs > 0:
			// Taken again by a job of its socket.
		case u.until > now:
			ids = append(ids, id)
		default:
			delete(p.flowUse, id)
			p.setOwn(id, false)
			if c := p.conns[u.key]; c != nil {
				c.setFlowBit(id, false)
			}
		}
	}
	p.flowLinger = ids
}

func newICMPProber(e *Engine) *icmpProber {
	p := &icmpProber{e: e, conns: map[icmpsock.Key]*icmpConn{}, modes: map[icmpsock.Mode]bool{},
		flowUse: map[uint16]*flowUse{}, tracingN: map[uint16]int{}}
	_, _ = rand.Read(p.token[:])
	var b [2]byte
	_, _ = rand.Read(b[:])
	p.nextID = binary.BigEndian.Uint16(b[:]) % pathFeatureIDs
	return p
}

func (p *icmpProber) isOwn(id uint16) bool { return p.own[id/64].Load()&(1<<(id%64)) != 0 }

func (p *icmpProber) setOwn(id uint16, on bool) {
	w := &p.own[id/64]
	for {
		old := w.Load()
		v := old &^ (1 << (id % 64))
		if on {
			v |= 1 << (id % 64)
		}
		if w.CompareAndSwap(old, v) {
			return
		}
	}
}

// bind implements job: the job sends over the shared socket of its
// family, source, interface and TOS, opened by the first job that needs it
// and closed with the last. A socket that cannot be opened (its interface
// does not exist yet, its source address is not on the host) is kept
// broken and re-opened with backoff; its jobs report their slots unsent.
// Only a missing privilege fails the bind itself.
func (p *icmpProber) bind(t *target, ip netip.Addr) (*binding, error) {
	k := icmpKey(t.spec, ip)
	p.mu.Lock()
	c := p.conns[k]
	if c == nil {
		c = newICMPConn(p, k)
		c.id = p.allocID()
		if err := c.open(); errors.Is(err, icmpsock.ErrPermission) {
			p.mu.Unlock()
			return nil, err
		}
		p.conns[k] = c
		p.publish()
	}
	c.refs++
	b := &binding{ip: ip, sa: sockaddr(ip, 0), conn: c}
	raw := t.flows != nil && c.flowsOK()
	if raw {
		b.flowIDs = p.takeFlowIDs(c, t)
	}
	p.mu.Unlock()
	if t.flows != nil && t.flows.rec != nil {
		ids := b.flowIDs
		if ids == nil {
			// The job probes one flow, the socket's identifier.
			c.mu.Lock()
			ids = []uint16{c.id}
			c.mu.Unlock()
			switch {
			case !raw && p.warnedPing.CompareAndSwap(false, true):
				p.e.log.Warn("ICMP flows need raw sockets (root or CAP_NET_RAW): with ping sockets the kernel sets one identifier per socket, so targets with flows are probed over one flow by ICMP; TCP flows (tcp_ports) need no privilege",
					zap.String("target", t.spec.Target), zap.Int("flows", t.spec.Flows))
			case raw:
				p.e.log.Warn("no free ICMP identifiers for the target's flows: it is probed over one flow",
					zap.String("target", t.spec.Target), zap.Int("flows", t.spec.Flows))
			}
		}
		t.flows.rec.SetFlows(t.spec, ids)
	}
	return b, c.broken()
}

// takeFlowIDs gives each flow of t an echo identifier on c: flow i's
// identifier is derived from the job's key and i (icmpFlowStart), so it
// is the same at every bind, reload and restart; if another socket of
// ours holds that one, the next free one is taken (identifiers are shared
// by the jobs of one socket, never between sockets: every raw socket
// receives every reply, and each must know its own). p.mu is held.
func (p *icmpProber) takeFlowIDs(c *icmpConn, t *target) []uint16 {
	ids := make([]uint16, t.flows.n)
	for i := range ids {
		start := int(icmpFlowStart(t.key, i))
		found := false
		for j := range int(pathFeatureIDs) {
			id := uint16((start + j) % pathFeatureIDs)
			if u := p.flowUse[id]; u != nil {
				if u.key != c.key {
					continue
				}
				u.refs++
				c.setFlowBit(id, true)
				ids[i], found = id, true
				break
			}
			if p.isOwn(id) {
				continue // a socket's identifier, or one lingering
			}
			p.flowUse[id] = &flowUse{key: c.key, refs: 1}
			p.setOwn(id, true)
			c.setFlowBit(id, true)
			ids[i], found = id, true
			break
		}
		if !found {
			// Every identifier is another socket's: one flow.
			p.releaseFlowIDs(ids[:i])
			return nil
		}
	}
	return ids
}

// releaseFlowIDs gives back the identifiers of an unbound job; those no
// other job uses linger (still ours, still the socket's) for ownLinger.
// p.mu is held.
func (p *icmpProber) releaseFlowIDs(ids []uint16) {
	until := p.e.monoNow() + int64(ownLinger)
	for _, id := range ids {
		u := p.flowUse[id]
		if u == nil || u.refs == 0 {
			continue
		}
		if u.refs--; u.refs == 0 {
			u.until = until
			p.flowLinger = append(p.flowLinger, id)
		}
	}
}

// markTracing marks ids as being traced (on) or no longer (off).
func (p *icmpProber) markTracing(ids []uint16, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		n := p.tracingN[id]
		if on {
			n++
		} else {
			n--
		}
		if n <= 0 {
			delete(p.tracingN, id)
		} else {
			p.tracingN[id] = n
		}
		w, bit := &p.tracing[id/64], uint64(1)<<(id%64)
		for {
			old := w.Load()
			v := old &^ bit
			if n > 0 {
				v |= bit
			}
			if w.CompareAndSwap(old, v) {
				break
			}
		}
	}
}

func (p *icmpProber) isTracing(id uint16) bool {
	return p.tracing[id/64].Load()&(1<<(id%64)) != 0
}

// unbind implements job: the last job of a socket closes it.
func (p *icmpProber) unbind(_ *target, b *binding) {
	c := b.conn
	p.mu.Lock()
	p.releaseFlowIDs(b.flowIDs)
	c.refs--
	last := c.refs == 0
	if last {
		delete(p.conns, c.key)
		p.publish()
	}
	p.mu.Unlock()
	if last {
		c.close()
	}
}

// publish rebuilds the expiry list. p.mu is held.
func (p *icmpProber) publish() {
	list := make([]*icmpConn, 0, len(p.conns))
	for _, c := range p.conns {
		list = append(list, c)
	}
	p.list.Store(&list)
}

// allocID picks a raw socket identifier no other socket of ours uses,
// below the range of the path features. p.mu is held.
func (p *icmpProber) allocID() uint16 {
	for range pathFeatureIDs {
		p.nextID = (p.nextID + 1) % pathFeatureIDs
		if !p.isOwn(p.nextID) {
			break
		}
	}
	return p.nextID
}

func (p *icmpProber) fire(t *target, b *binding) {
	flow, id := -1, uint16(0)
	if n := len(b.flowIDs); n > 0 {
		flow = t.flows.next(n)
		id = b.flowIDs[flow]
	}
	b.conn.send(t, b, flow, id)
}

func (p *icmpProber) unsent(t *target, r Reason) { t.rec.Unsent(r) }

// stop implements job; in-flight probes are released by forget.
func (p *icmpProber) stop(t *target) {
	if t.flows != nil {
		t.flows.stop()
	}
}

// forget drops the in-flight probes of jobs that left (or were replaced),
// so their memory goes at once rather than at their deadline, and no
// verdict reaches a recorder that is gone.
func (p *icmpProber) forget(lists ...[]*target) {
	n := 0
	for _, l := range lists {
		n += len(l)
	}
	if n == 0 {
		return
	}
	gone := make(map[*target]bool, n)
	for _, l := range lists {
		for _, t := range l {
			if t.spec.Kind == config.KindICMP {
				gone[t] = true
			}
		}
	}
	if len(gone) == 0 {
		return
	}
	if list := p.list.Load(); list != nil {
		for _, c := range *list {
			c.forget(gone)
		}
	}
}

func (p *icmpProber) opened(s icmpsock.Info) {
	p.modesMu.Lock()
	defer p.modesMu.Unlock()
	if !p.modes[s.Mode] {
		p.modes[s.Mode] = true
		how := "raw ICMP sockets (root or CAP_NET_RAW)"
		if s.Mode == icmpsock.Datagram {
			how = "unprivileged ICMP datagram sockets (net.ipv4.ping_group_range)"
		}
		p.e.log.Info("ICMP sockets opened", zap.String("mode", s.Mode.String()), zap.String("using", how))
	}
	p.e.log.Debug("ICMP socket opened", zap.Stringer("socket", s.Key), zap.Uint16("identifier", s.ID))
}

func (p *icmpProber) mode() string {
	p.modesMu.Lock()
	defer p.modesMu.Unlock()
	switch {
	case p.modes[icmpsock.Raw]:
		return icmpsock.Raw.String()
	case p.modes[icmpsock.Datagram]:
		return icmpsock.Datagram.String()
	}
	return ""
}

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

// reopenDue re-opens the broken sockets whose retry is due and returns
// when the next retry falls due (0: none).
func (p *icmpProber) reopenDue(now int64) int64 {
	p.releaseLingering(now)
	list := p.list.Load()
	if list == nil {
		return 0
	}
	var next int64
	for _, c := range *list {
		if d := c.reopenDue(now); d != 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// checkInterfaces breaks the sockets bound to an interface whose index
// changed (re-created) or that is gone, so they are opened again.
func (p *icmpProber) checkInterfaces(index func(string) int) {
	list := p.list.Load()
	if list == nil {
		return
	}
	for _, c := range *list {
		if c.key.Interface == "" {
			continue
		}
		c.mu.Lock()
		if c.sock != nil && c.ifindex != index(c.key.Interface) {
			_ = c.breakLocked(fmt.Errorf("interface %s was deleted or re-created", c.key.Interface))
		}
		c.mu.Unlock()
	}
}

// closeAll closes every socket at shutdown. The conns stay listed, so the
// probes in flight can still be expired (tests do, to see every verdict).
func (p *icmpProber) closeAll() {
	p.mu.Lock()
	conns := make([]*icmpConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// slot states
const (
	slotFree uint8 = iota
	slotInFlight
	slotAnswered
	slotLost
)

// slot is one in-flight record. The table is indexed by the sequence
// number modulo its size: fixed for a socket's steady state, no allocation
// per probe. It starts small and doubles (up to one slot per sequence
// number) when probes wait for their deadline long enough to fill it, so
// a socket costs memory for what is in flight, not 65,536 slots.
type slot struct {
	serial   uint64
	t        *target
	sentWall int64 // ns, CLOCK_REALTIME: the kernel's receive stamps use it
	sentMono int64
	deadline int64 // mono
	seq      uint16
	id       uint16 // the echo identifier it was sent with
	flow     uint16 // its job's flow
	state    uint8
}

// probe identifies the slot's probe in its outcome.
func (sl *slot) probe() Probe { return Probe{Sent: time.Unix(0, sl.sentWall), Flow: int(sl.flow)} }

// Slot table sizes: a new socket starts with minSlots.
const (
	minSlots = 256
	maxSlots = 1 << 16
)

type pending struct {
	deadline int64
	serial   uint64
	seq      uint16
}

// icmpConn is one shared socket and the probes in flight on it. The
// socket may be re-opened (a re-created interface, a source address that
// came back) under the same conn: the jobs keep their binding, and the
// in-flight table survives.
type icmpConn struct {
	p   *icmpProber
	key icmpsock.Key
	v6  bool

	mu        sync.Mutex
	refs      int // bindings; guarded by p.mu
	sock      ICMPSocket
	id        uint16 // the identifier our requests carry (raw sockets)
	raw       bool
	ifindex   int // of key.Interface when the socket was opened
	everOpen  bool
	err       error // why sock is nil
	reopenAt  int64 // mono ns
	backoff   time.Duration
	slots     []slot
	mask      uint16 // len(slots)-1
	seq       uint16
	serial    uint64
	deadlines deadlineHeap
	buf       []byte
	readers   sync.WaitGroup
	// drained is a mono time before which every packet the socket
	// received has been read and handled (see expire).
	drained atomic.Int64
	// flowBits marks the flow identifiers of this socket's multi-flow
	// jobs (nil until it has any): replies carrying them are this
	// socket's, looked up in the same in-flight table.
	flowBits atomic.Pointer[[1 << 16 / 64]atomic.Uint64]
}

// setFlowBit marks id as one of this socket's flow identifiers (or not).
func (c *icmpConn) setFlowBit(id uint16, on bool) {
	bm := c.flowBits.Load()
	if bm == nil {
		if !on {
			return
		}
		bm = new([1 << 16 / 64]atomic.Uint64)
		if !c.flowBits.CompareAndSwap(nil, bm) {
			bm = c.flowBits.Load()
		}
	}
	w, bit := &bm[id/64], uint64(1)<<(id%64)
	for {
		old := w.Load()
		v := old &^ bit
		if on {
			v |= bit
		}
		if w.CompareAndSwap(old, v) {
			return
		}
	}
}

// isFlowID reports whether id is one of this socket's flow identifiers.
func (c *icmpConn) isFlowID(id uint16) bool {
	bm := c.flowBits.Load()
	return bm != nil && bm[id/64].Load()&(1<<(id%64)) != 0
}

// flowsOK says whether the socket can carry flows of their own
// identifiers: a raw socket (or one not opened yet, when this agent has
// raw sockets or has opened none); a ping socket has the one identifier
// the kernel gave it.
func (c *icmpConn) flowsOK() bool {
	c.mu.Lock()
	raw, open := c.raw, c.everOpen
	c.mu.Unlock()
	if open {
		return raw
	}
	c.p.modesMu.Lock()
	defer c.p.modesMu.Unlock()
	return c.p.modes[icmpsock.Raw] || !c.p.modes[icmpsock.Datagram]
}

func newICMPConn(p *icmpProber, k icmpsock.Key) *icmpConn {
	c := &icmpConn{p: p, key: k, v6: k.V6, slots: make([]slot, minSlots), mask: minSlots - 1}
	var b [8]byte
	_, _ = rand.Read(b[:])
	c.serial = binary.BigEndian.Uint64(b[:]) >> 1 // random start: serials never repeat across runs
	c.seq = uint16(c.serial)
	c.buf = make([]byte, echoHeader+config.MaxSize+payloadMin)
	fillPayload(c.buf)
	return c
}

// open opens the socket (again). Caller holds p.mu or owns c alone.
func (c *icmpConn) open() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.openLocked()
}

func (c *icmpConn) openLocked() error {
	ifindex := 0
	if c.key.Interface != "" {
		i, err := c.p.e.socks.InterfaceIndex(c.key.Interface)
		if err != nil {
			return c.breakLocked(fmt.Errorf("interface %s: %w", c.key.Interface, err))
		}
		ifindex = i
	}
	s, err := c.p.e.socks.ICMP(c.key, c.id)
	if err != nil {
		if errors.Is(err, icmpsock.ErrPermission) {
			return err
		}
		return c.breakLocked(fmt.Errorf("opening ICMP socket %s: %w", c.key, err))
	}
	info := s.Info()
	if info.ID != c.id {
		// A ping socket: the kernel chose the identifier. The one it
		// replaces was in use only if a socket was open before (a
		// re-open, which never runs under p.mu, unlike the first open).
		if c.everOpen {
			c.p.linger(c.id)
		} else {
			c.p.setOwn(c.id, false)
		}
	}
	c.everOpen = true
	c.sock, c.id, c.raw, c.ifindex, c.err = s, info.ID, info.Mode == icmpsock.Raw, ifindex, nil
	c.p.setOwn(info.ID, true)
	c.p.opened(info)
	c.readers.Add(1)
	go c.readLoop(s, info.ID, c.raw)
	return nil
}

// breakLocked closes the socket (if open) and schedules a re-open, sooner
// after a socket that worked, backing off while it keeps failing; the jobs
// report their slots unsent meanwhile. c.mu is held.
func (c *icmpConn) breakLocked(err error) error {
	if c.sock != nil {
		c.p.e.log.Warn("ICMP socket broken; re-opening it", zap.Stringer("socket", c.key), zap.Error(err))
		_ = c.sock.Close()
		c.sock = nil
		c.backoff = 0
	}
	c.err = err
	c.backoff = min(max(2*c.backoff, retryMin), retryMax)
	c.reopenAt = c.p.e.monoNow() + int64(c.backoff)
	c.p.e.kick(c.p.e.maint)
	return err
}

// broken is why the socket is not open (nil when it is).
func (c *icmpConn) broken() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// reopenDue tries to open a broken socket whose retry is due and returns
// when the next try falls due (0: the socket is open).
func (c *icmpConn) reopenDue(now int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sock != nil || c.err == nil {
		return 0
	}
	if c.reopenAt > now {
		return c.reopenAt
	}
	old := c.err
	if err := c.openLocked(); err != nil {
		if err.Error() != old.Error() {
			c.p.e.log.Warn("cannot open ICMP socket; retrying", zap.Stringer("socket", c.key), zap.Error(err))
		}
		return c.reopenAt
	}
	c.p.e.log.Info("ICMP socket open again", zap.Stringer("socket", c.key))
	return 0
}

// close closes the socket for good and waits for its reader.
func (c *icmpConn) close() {
	c.mu.Lock()
	if c.sock != nil {
		_ = c.sock.Close()
		c.sock = nil
	}
	c.err = net.ErrClosed
	id, raw := c.id, c.raw
	c.mu.Unlock()
	c.readers.Wait()
	if raw {
		c.p.linger(id)
	}
}

// forget drops the in-flight probes of the given jobs.
func (c *icmpConn) forget(gone map[*target]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.deadlines {
		if sl := &c.slots[d.seq&c.mask]; sl.serial == d.serial && sl.state == slotInFlight && gone[sl.t] {
			sl.state, sl.t = slotLost, nil
		}
	}
}

// send builds and sends one echo request on flow (-1: the job has one
// flow, the socket's identifier) with identifier id. Called by the
// scheduler only.
func (c *icmpConn) send(t *target, b *binding, flow int, id uint16) {
	size := t.spec.Size
	if size < payloadMin {
		size = payloadMin
	}
	c.mu.Lock()
	if c.sock == nil {
		c.mu.Unlock()
		t.rec.Unsent(ReasonBind)
		return
	}
	// The next sequence number's slot is free unless as many probes as
	// the table holds are waiting for their deadline: then the table
	// doubles (up to one slot per sequence number).
	if c.slots[(c.seq+1)&c.mask].state == slotInFlight && len(c.slots) < maxSlots {
		c.grow()
	}
	var seq uint16
	found := false
	for i := 0; i < len(c.slots); i++ {
		c.seq++
		if c.slots[c.seq&c.mask].state != slotInFlight {
			seq, found = c.seq, true
			break
		}
	}
	if flow < 0 || !c.raw {
		// One flow, or a ping socket: the kernel's identifier.
		flow, id = 0, c.id
	}
	if !found {
		c.mu.Unlock()
		t.rec.Sent()
		t.rec.Failed(Probe{Sent: time.Now(), Flow: flow}, ReasonSendError)
		return
	}
	c.serial++
	serial := c.serial
	pkt := buildEcho(c, c.buf, id, seq, serial, size)
	sl := &c.slots[seq&c.mask]
	sl.serial, sl.t, sl.seq, sl.id, sl.flow, sl.state = serial, t, seq, id, uint16(flow), slotInFlight
	// Taken inside SendTo just before the system call.
	at, err := c.sock.SendTo(pkt, b.sa)
	sl.sentWall = at.UnixNano()
	sl.sentMono = int64(at.Sub(c.p.e.base))
	sl.deadline = sl.sentMono + t.timeout
	t.rec.Sent()
	if err != nil {
		sl.state, sl.t = slotLost, nil
		if socketGone(err) {
			// The device or source address went away under the socket:
			// open it again rather than fail every probe.
			_ = c.breakLocked(err)
		}
		c.mu.Unlock()
		c.p.e.log.Debug("ICMP send failed", zap.String("target", t.spec.Target), zap.Error(err))
		t.rec.Failed(Probe{Sent: at, Flow: flow}, ReasonSendError)
		return
	}
	c.deadlines.push(pending{deadline: sl.deadline, serial: serial, seq: seq})
	c.mu.Unlock()
}

// grow doubles the slot table. Every slot keeps its sequence number, so it
// moves to seq & newMask; two slots cannot meet there, as they differed
// in the bits of the old mask already. c.mu is held.
func (c *icmpConn) grow() {
	n := make([]slot, 2*len(c.slots))
	mask := uint16(len(n) - 1)
	for i := range c.slots {
		if sl := &c.slots[i]; sl.state != slotFree {
			n[sl.seq&mask] = *sl
		}
	}
	c.slots, c.mask = n, mask
}

// socketGone reports a send error that means the socket's interface or
// source address no longer exists.
func socketGone(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EADDRNOTAVAIL)
}

// fillPayload writes the filler after the token and serial once: it is
// the same for every probe, so buildEcho leaves it alone.
func fillPayload(buf []byte) {
	for i := echoHeader + payloadMin; i < len(buf); i++ {
		buf[i] = byte(i)
	}
}

// buildEcho writes an echo request with the given identifier, sequence
// number and serial into buf and returns it.
func buildEcho(c *icmpConn, buf []byte, id, seq uint16, serial uint64, size int) []byte {
	b := buf[:echoHeader+size]
	if c.v6 {
		b[0] = v6EchoRequest
	} else {
		b[0] = v4EchoRequest
	}
	b[1] = 0
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:16], c.p.token[:])
	binary.BigEndian.PutUint64(b[16:24], serial)
	if !c.v6 && c.raw {
		// Raw IPv4: we checksum. ICMPv6 and ping sockets: the kernel does.
		binary.BigEndian.PutUint16(b[2:], inet.Checksum(b))
	}
	return b
}

// expire fails every probe whose deadline has passed without a reply and
// returns when to look again (0: nothing in flight).
//
// A reply the kernel received before the deadline may still wait in the
// socket's queue when the agent is slow (a loaded machine, a stalled
// reader): it must not make the probe lost. So a probe is failed only
// once the reader has drained the queue after its deadline, or the queue
// is seen empty now. Where the kernel cannot tell (ping sockets), the old
// margin applies: the deadline plus expiryGrace.
func (c *icmpConn) expire(now int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.deadlines) == 0 {
		return 0
	}
	cutoff := now - expiryGrace
	if c.sock == nil {
		cutoff = now // closed: nothing more can be read
	} else if drained := c.drained.Load(); c.deadlines[0].deadline <= now && c.deadlines[0].deadline > drained {
		switch pending, ok := c.sock.Pending(); {
		case ok && !pending:
			cutoff = now
		case ok:
			cutoff = drained // the reader has replies to read first
		}
	} else if c.raw {
		cutoff = max(drained, cutoff)
	}
	for len(c.deadlines) > 0 && c.deadlines[0].deadline <= cutoff {
		d := c.deadlines.pop()
		sl := &c.slots[d.seq&c.mask]
		if sl.serial == d.serial && sl.state == slotInFlight {
			t := sl.t
			sl.state, sl.t = slotLost, nil
			t.rec.Failed(sl.probe(), ReasonTimeout)
		}
	}
	if len(c.deadlines) == 0 {
		return 0
	}
	if next := c.deadlines[0].deadline; next > now {
		return next
	}
	return now + int64(tick) // due, waiting for the reader
}

// readLoop handles replies. Their RTT comes from kernel timestamps, so
// handling them up to coalesce later costs no accuracy; waiting lets replies
// accumulate into one recvmmsg batch instead of one wake-up per packet.
// expire keeps probes in flight for the same margin past their deadline, so
// a reply that arrived in time is never counted lost for being read late.
//
// A reader belongs to one socket: a re-opened socket gets its own, with
// the identifier that socket uses.
func (c *icmpConn) readLoop(s ICMPSocket, id uint16, raw bool) {
	defer c.readers.Done()
	h := func(pk *icmpsock.Packet) { c.handle(pk, id, raw) }
	var last uint32
	for {
		before := c.p.e.monoNow()
		n, drops, err := s.ReadBatch(h)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
			c.p.e.log.Warn("ICMP receive failed", zap.Stringer("socket", c.key), zap.Error(err))
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if drops != last {
			c.p.e.sink.SocketDrops(uint64(drops - last))
			last = drops
		}
		if n < icmpsock.BatchSize {
			// The queue was empty when this batch was read: whatever
			// arrived before the call has been handled.
			c.drained.Store(before)
			time.Sleep(coalesce)
		}
	}
}

// coalesce is how long the reader lets replies accumulate; expiryGrace is
// the margin expire adds to deadlines to cover it where the socket's queue
// cannot be inspected.
const (
	coalesce    = 2 * time.Millisecond
	expiryGrace = int64(5 * time.Millisecond)
)

// handle decides what one received ICMP message is. id is the identifier
// of the socket it came from; raw sockets see every ICMP message of the
// host, ping sockets only their own.
func (c *icmpConn) handle(pk *icmpsock.Packet, id uint16, raw bool) {
	d := pk.Data
	typ := d[0]
	switch {
	case (!c.v6 && typ == v4EchoReply) || (c.v6 && typ == v6EchoReply):
		c.handleReply(pk, id, raw)
	case !c.v6 && (typ == v4Unreach || typ == v4TimeExceeded || typ == v4ParamProblem):
		c.handleError(pk, reasonV4(typ, d[1]), id, raw)
	case c.v6 && (typ == v6Unreach || typ == v6TooBig || typ == v6TimeExceeded || typ == v6ParamProblem):
		c.handleError(pk, reasonV6(typ, d[1]), id, raw)
	}
}

// ours says whether a message with identifier got belongs to another part of
// this process (another of our sockets, or the path features): skipped,
// not counted.
func (c *icmpConn) ours(got uint16) bool {
	return got >= pathFeatureIDs || c.p.isOwn(got)
}

func (c *icmpConn) handleReply(pk *icmpsock.Packet, id uint16, raw bool) {
	d := pk.Data
	got := binary.BigEndian.Uint16(d[4:])
	if raw && got != id && !c.isFlowID(got) {
		if !c.ours(got) {
			c.p.e.sink.Ignored(IgnoredForeign)
		}
		return
	}
	if len(d) < echoHeader+payloadMin || string(d[8:16]) != string(c.p.token[:]) {
		switch {
		case got != id && c.p.isTracing(got):
			// The reply to a Paris probe of one of our flows (flows.go).
		case len(d) < echoHeader+payloadMin:
			c.p.e.sink.Ignored(IgnoredMalformed)
		default:
			c.p.e.sink.Ignored(IgnoredForged)
		}
		return
	}
	seq := binary.BigEndian.Uint16(d[6:])
	serial := binary.BigEndian.Uint64(d[16:24])
	c.mu.Lock()
	sl := &c.slots[seq&c.mask]
	if sl.serial != serial || sl.seq != seq || (raw && sl.id != got) {
		c.mu.Unlock()
		if serial < sl.serial {
			c.p.e.sink.Ignored(IgnoredLate) // its slot was reused by a newer probe
		} else {
			c.p.e.sink.Ignored(IgnoredForged)
		}
		return
	}
	switch sl.state {
	case slotAnswered:
		c.mu.Unlock()
		c.p.e.sink.Ignored(IgnoredDuplicate)
		return
	case slotLost:
		c.mu.Unlock()
		c.p.e.sink.Ignored(IgnoredLate)
		return
	case slotFree:
		c.mu.Unlock()
		c.p.e.sink.Ignored(IgnoredForged)
		return
	}
	t := sl.t
	if b := t.bound.Load(); b == nil || b.ip != pk.From {
		c.mu.Unlock()
		c.p.e.sink.Ignored(IgnoredForged)
		return
	}
	mono := c.p.e.monoNow() - sl.sentMono
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
		sl.state, sl.t = slotLost, nil
		p := sl.probe()
		c.mu.Unlock()
		t.rec.Failed(p, ReasonTimeout)
		c.p.e.sink.Ignored(IgnoredLate)
		return
	}
	sl.state, sl.t = slotAnswered, nil
	p := sl.probe()
	c.mu.Unlock()
	t.rec.Succeeded(p, time.Duration(rtt))
}

// handleError attributes an ICMP error to the probe whose request it quotes.
func (c *icmpConn) handleError(pk *icmpsock.Packet, r Reason, id uint16, raw bool) {
	d := pk.Data
	q := d[8:] // the quoted IP packet
	var dst netip.Addr
	var inner []byte
	if c.v6 {
		if len(q) < 40+8 || q[6] != 58 {
			c.p.e.sink.Ignored(IgnoredStrayError)
			return
		}
		dst = netip.AddrFrom16([16]byte(q[24:40]))
		inner = q[40:]
		if inner[0] != v6EchoRequest {
			c.p.e.sink.Ignored(IgnoredStrayError)
			return
		}
	} else {
		if len(q) < 20 {
			c.p.e.sink.Ignored(IgnoredStrayError)
			return
		}
		ihl := int(q[0]&0x0f) * 4
		if ihl < 20 || len(q) < ihl+8 || q[9] != 1 {
			c.p.e.sink.Ignored(IgnoredStrayError)
			return
		}
		dst = netip.AddrFrom4([4]byte(q[16:20]))
		inner = q[ihl:]
		if inner[0] != v4EchoRequest {
			c.p.e.sink.Ignored(IgnoredStrayError)
			return
		}
	}
	got := binary.BigEndian.Uint16(inner[4:])
	if raw && got != id && !c.isFlowID(got) {
		if !c.ours(got) {
			c.p.e.sink.Ignored(IgnoredStrayError)
		}
		return
	}
	full := len(inner) >= echoHeader+payloadMin
	if got != id && c.p.isTracing(got) && (!full || string(inner[8:16]) != string(c.p.token[:])) {
		// About a Paris probe of one of our flows (flows.go), or too
		// short a quote to tell it from our echo request: skipped.
		return
	}
	seq := binary.BigEndian.Uint16(inner[6:])
	c.mu.Lock()
	sl := &c.slots[seq&c.mask]
	ok := sl.state == slotInFlight && sl.seq == seq && (!raw || sl.id == got)
	if ok && full {
		// Routers quoting enough of the packet let us check it fully.
		ok = string(inner[8:16]) == string(c.p.token[:]) && binary.BigEndian.Uint64(inner[16:24]) == sl.serial
	}
	if ok {
		b := sl.t.bound.Load()
		ok = b != nil && b.ip == dst.Unmap()
	}
	if !ok {
		c.mu.Unlock()
		c.p.e.sink.Ignored(IgnoredStrayError)
		return
	}
	t := sl.t
	sl.state, sl.t = slotLost, nil
	p := sl.probe()
	c.mu.Unlock()
	t.rec.Failed(p, r)
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
