// Package trace discovers the hops to a target, Paris-traceroute style: every
// probe of a target carries the same flow identifier (UDP or TCP ports, or
// ICMP identifier and checksum), so routers that balance flows over equal
// cost paths keep all of them on one path and the hop list is a real path,
// not a mix of several. Probes differ only in fields ECMP hashes ignore (the
// UDP checksum, the ICMP sequence, the TCP sequence number), and replies are
// matched on those fields, read from the packet quoted inside ICMP Time
// Exceeded / Destination Unreachable.
//
// A Tracer owns its raw sockets (opened on first use, in the network
// namespace of the calling thread) and a packets-per-second budget shared
// by every trace it runs.
package trace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/internal/inet"
	"github.com/probed/probed/probe/internal/rawsock"
)

// Discovery methods.
const (
	UDP  = "udp"
	ICMP = "icmp"
	TCP  = "tcp"
)

// Defaults for a Target's zero fields.
const (
	DefaultMaxTTL       = 30
	DefaultProbesPerHop = 3
	DefaultTimeout      = time.Second
	DefaultUDPPort      = 33434
	DefaultTCPPort      = 443
	// window is how many TTLs may be outstanding at once: TTL t+window is
	// sent only once TTL t has been answered or timed out, so a trace
	// stops at most window-1 TTLs past the target instead of sending
	// every TTL up to MaxTTL, while a 15-hop path still takes only about
	// four round trips.
	window = 4
	// probeSize is the transport part of a UDP or ICMP probe in bytes.
	probeSize = 32
	// readMargin is how long after a probe's timeout a trace still waits
	// for its answer: on a loaded agent the reader may get to a reply
	// that arrived in time (by the kernel's receive timestamp) some
	// milliseconds late, and such a reply must not make a hop look lossy.
	readMargin = 50 * time.Millisecond
)

// Target is one trace to run.
type Target struct {
	Dst netip.Addr
	// Src is the source address; zero means the one the routing table picks.
	Src netip.Addr
	// Interface sends the probes out of this device (and picks the
	// source address the kernel would use there); "" lets routing choose.
	Interface string
	Method    string // UDP, ICMP or TCP; "" is ICMP
	// Port is the UDP or TCP destination port.
	Port uint16
	// Flow is the UDP/TCP source port or the ICMP identifier. Keep it
	// constant for a target across rounds so each round follows the
	// same ECMP path. Zero picks one from the destination.
	Flow         uint16
	MaxTTL       int
	ProbesPerHop int
	// Timeout is how long to wait for the answer to one probe.
	Timeout time.Duration
	TOS     uint8
}

// Hop is what one TTL answered.
type Hop struct {
	TTL int
	// Addr is the address that answered (the most frequent one if the
	// probes of this TTL were answered by several); invalid when silent.
	Addr           netip.Addr
	Sent, Received int
	RTTs           []time.Duration
	// Unreachable is set when this hop answered Destination Unreachable
	// (and is not the target): the path ends here.
	Unreachable bool
}

// Silent reports whether no probe of this hop was answered.
func (h *Hop) Silent() bool { return !h.Addr.IsValid() }

// RTT is the median round-trip time of the hop's answers (0 if silent).
func (h *Hop) RTT() time.Duration {
	if len(h.RTTs) == 0 {
		return 0
	}
	s := slices.Clone(h.RTTs)
	slices.Sort(s)
	return s[len(s)/2]
}

// Loss is the fraction of this hop's probes that got no answer.
func (h *Hop) Loss() float64 {
	if h.Sent == 0 {
		return 0
	}
	return float64(h.Sent-h.Received) / float64(h.Sent)
}

// Path is the result of one trace.
type Path struct {
	Dst, Src netip.Addr
	// Hops runs from TTL 1 to the target when Reached, else to the last
	// hop that answered.
	Hops    []Hop
	Reached bool
	// Sent is the number of probes this trace sent.
	Sent     int
	Start    time.Time
	Duration time.Duration
}

// Tracer runs traces. It is safe for concurrent use.
type Tracer struct {
	lim  *Limiter
	sent atomic.Uint64
	// txStamped counts probes that got the kernel's transmit timestamp.
	txStamped atomic.Uint64

	mu      sync.Mutex
	closed  bool
	pending map[key]*inflight
	nextID  uint32
	// Receive sockets, opened on first use; nil until then. They are in
	// the Go runtime's poller and never send: a send socket's transmit
	// timestamps would wake the poller with an error-queue event.
	v4icmp *os.File // ICMP errors and echo replies
	v4tcp  *os.File // SYN-ACK / RST from targets (TCP method only)
	v6icmp *os.File // ICMPv6 errors and echo replies
	v6tcp  *os.File // SYN-ACK / RST from targets (TCP method only)
	// Send sockets (blocking, outside the poller, transmit timestamps on).
	v4send    *sendSock // IPPROTO_RAW (IP_HDRINCL): every v4 probe
	v6icmpOut *sendSock // ICMPv6 echo
	v6udp     *sendSock // UDP probes over IPv6
	v6tcpOut  *sendSock // SYNs over IPv6
	// route4/route6 are UDP sockets connected to a target to learn the
	// source address the kernel would pick (nothing is sent).
	route4, route6 int
	wg             sync.WaitGroup
}

// sendSock is one send socket and the scratch space to read its transmit
// timestamps. mu serialises the sends on it and the reading of its error
// queue.
type sendSock struct {
	mu sync.Mutex
	fd int // -1 until opened
	// tx is set when the kernel gives transmit timestamps.
	tx bool
	tb rawsock.TxBuffers
}

// inflight is one probe on the wire. ch, ttl and user belong to the trace
// that sent it; answered and kernel are written under Tracer.mu.
type inflight struct {
	ch  chan<- result
	ttl int
	// user is the wall clock read just before the send system call;
	// kernel the kernel's transmit timestamp (zero until read).
	user, kernel time.Time
	answered     bool
}

// result is the first answer to one probe.
type result struct {
	ttl  int
	from netip.Addr
	kind replyKind
	at   time.Time // the kernel's receive timestamp
	in   *inflight
}

// sendClockKind says which send time an RTT starts from.
type sendClockKind uint8

const (
	// kernelClock: the kernel's transmit timestamp where it gave one,
	// else the wall clock read just before the send system call.
	kernelClock sendClockKind = iota
	// userClock: always the wall clock before the send system call (for
	// measuring what the kernel's timestamp gains).
	userClock
)

var sendClock = kernelClock

// New returns a Tracer sending at most pps packets per second over all its
// traces (pps <= 0: unlimited). It opens its raw sockets now, in the network
// namespace of the calling thread (the TCP method's receive sockets, which
// see every TCP segment, only on first use). IPv6 sockets are skipped where
// the kernel has no IPv6; tracing an IPv6 target then fails.
func New(pps int) (*Tracer, error) {
	t := &Tracer{
		lim:       NewLimiter(pps),
		pending:   map[key]*inflight{},
		v4send:    &sendSock{fd: -1},
		v6icmpOut: &sendSock{fd: -1},
		v6udp:     &sendSock{fd: -1},
		v6tcpOut:  &sendSock{fd: -1},
		route4:    -1,
		route6:    -1,
	}
	if err := t.ensure(false, ICMP); err != nil {
		_ = t.Close()
		return nil, err
	}
	if err := t.ensure(true, UDP); err != nil {
		if !errors.Is(err, unix.EAFNOSUPPORT) {
			_ = t.Close()
			return nil, err
		}
	}
	return t, nil
}

// SetPPS changes the packets-per-second budget.
func (t *Tracer) SetPPS(pps int) { t.lim.SetPPS(pps) }

// PacketsSent is the number of probes sent since New.
func (t *Tracer) PacketsSent() uint64 { return t.sent.Load() }

// Close closes the sockets and waits for the receive loops to end.
func (t *Tracer) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, f := range []*os.File{t.v4icmp, t.v4tcp, t.v6icmp, t.v6tcp} {
		if f != nil {
			f.Close()
		}
	}
	for _, fd := range []int{t.route4, t.route6} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	t.mu.Unlock()
	for _, s := range t.sendSocks() {
		s.mu.Lock()
		if s.fd >= 0 {
			unix.Close(s.fd)
			s.fd = -1
		}
		s.mu.Unlock()
	}
	t.wg.Wait()
	return nil
}

func (t *Tracer) sendSocks() []*sendSock {
	return []*sendSock{t.v4send, t.v6icmpOut, t.v6udp, t.v6tcpOut}
}

// ensure opens the sockets a trace of this family and method needs.
func (t *Tracer) ensure(v6 bool, method string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return errors.New("tracer is closed")
	}
	recv := func(fp **os.File, family, proto int, handle func([]byte, netip.Addr, time.Time)) error {
		if *fp != nil {
			return nil
		}
		f, _, err := rawSocket(family, proto, true)
		if err != nil {
			return err
		}
		*fp = f
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			rawsock.ReadLoop(f, handle)
		}()
		return nil
	}
	send := func(s *sendSock, family, proto int) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fd >= 0 {
			return nil
		}
		_, fd, err := rawSocket(family, proto, false)
		if err != nil {
			return err
		}
		s.fd = fd
		// Without transmit timestamps (an old kernel) RTTs start at
		// the wall clock read just before the send system call.
		s.tx = rawsock.SetTxTimestamps(fd) == nil
		return nil
	}
	route := func(fdp *int, family int) error {
		if *fdp >= 0 {
			return nil
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening route lookup socket: %w", err)
		}
		*fdp = fd
		return nil
	}
	if !v6 {
		if err := route(&t.route4, unix.AF_INET); err != nil {
			return err
		}
		if err := send(t.v4send, unix.AF_INET, unix.IPPROTO_RAW); err != nil {
			return err
		}
		if err := recv(&t.v4icmp, unix.AF_INET, unix.IPPROTO_ICMP, t.handle4ICMP); err != nil {
			return err
		}
		if method == TCP {
			return recv(&t.v4tcp, unix.AF_INET, unix.IPPROTO_TCP, t.handle4TCP)
		}
		return nil
	}
	if err := route(&t.route6, unix.AF_INET6); err != nil {
		return err
	}
	if err := recv(&t.v6icmp, unix.AF_INET6, unix.IPPROTO_ICMPV6, t.handle6ICMP); err != nil {
		return err
	}
	switch method {
	case UDP:
		return send(t.v6udp, unix.AF_INET6, unix.IPPROTO_UDP)
	case TCP:
		if err := send(t.v6tcpOut, unix.AF_INET6, unix.IPPROTO_TCP); err != nil {
			return err
		}
		return recv(&t.v6tcp, unix.AF_INET6, unix.IPPROTO_TCP, t.handle6TCP)
	}
	return send(t.v6icmpOut, unix.AF_INET6, unix.IPPROTO_ICMPV6)
}

func (t *Tracer) handle4ICMP(b []byte, _ netip.Addr, at time.Time) {
	m, src, ok := parseIPv4(b)
	if !ok {
		return
	}
	if r, ok := parseICMP(m, src, false); ok {
		t.deliver(r, at)
	}
}

func (t *Tracer) handle4TCP(b []byte, _ netip.Addr, at time.Time) {
	seg, src, ok := parseIPv4(b)
	if !ok {
		return
	}
	if r, ok := parseTCP(seg, src); ok {
		t.deliver(r, at)
	}
}

func (t *Tracer) handle6ICMP(b []byte, from netip.Addr, at time.Time) {
	if r, ok := parseICMP(b, from, true); ok {
		t.deliver(r, at)
	}
}

func (t *Tracer) handle6TCP(b []byte, from netip.Addr, at time.Time) {
	if r, ok := parseTCP(b, from); ok {
		t.deliver(r, at)
	}
}

// deliver hands the first reply to a probe to the trace waiting for it, with
// the kernel's receive time; replies nobody waits for (other tools'
// traffic, answers after the trace ended) and duplicates are dropped.
func (t *Tracer) deliver(r reply, at time.Time) {
	t.mu.Lock()
	in, ok := t.pending[r.k]
	if !ok || in.answered {
		t.mu.Unlock()
		return
	}
	in.answered = true
	t.mu.Unlock()
	select {
	case in.ch <- result{ttl: in.ttl, from: r.from, kind: r.kind, at: at, in: in}:
	default: // cannot happen: the channel holds one slot per probe
	}
}

// sentAt is when the probe left: the kernel's transmit timestamp if it
// gave one, else the wall clock just before the send system call.
func (t *Tracer) sentAt(in *inflight) time.Time {
	t.mu.Lock()
	k := in.kernel
	t.mu.Unlock()
	if sendClock == kernelClock && !k.IsZero() {
		return k
	}
	return in.user
}

// txStamp is a transmit timestamp and the probe it belongs to.
type txStamp struct {
	k  key
	at time.Time
}

// readTx reads the transmit timestamps waiting on s, appending them to
// out. s.mu must be held (and Tracer.mu not: see applyTx).
func (t *Tracer) readTx(s *sendSock, out []txStamp) []txStamp {
	if !s.tx || s.fd < 0 {
		return out
	}
	rawsock.DrainTxTimestamps(s.fd, &s.tb, func(pkt []byte, at time.Time) {
		for _, l3 := range rawsock.NetworkHeaders(pkt) {
			if len(l3) == 0 {
				continue
			}
			if k, ok := parseQuoted(l3, l3[0]>>4 == 6); ok {
				out = append(out, txStamp{k, at})
			}
		}
	})
	return out
}

// applyTx records transmit timestamps on their probes. It takes
// Tracer.mu, so it runs after the send socket's lock is released (ensure
// takes the two the other way round).
func (t *Tracer) applyTx(stamps []txStamp) {
	if len(stamps) == 0 {
		return
	}
	t.mu.Lock()
	for _, st := range stamps {
		if in := t.pending[st.k]; in != nil && in.kernel.IsZero() {
			in.kernel = st.at
			t.txStamped.Add(1)
		}
	}
	t.mu.Unlock()
}

// register reserves a probe id for k (k.id is filled in).
func (t *Tracer) register(k *key, in *inflight) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		t.nextID++
		id := t.nextID
		if k.proto != protoTCP {
			id &= 0xffff
			// A UDP checksum of 0 means "none" and 0xffff is its
			// other spelling: neither can carry an id.
			if id == 0 || id == 0xffff {
				continue
			}
		}
		k.id = id
		if _, busy := t.pending[*k]; !busy {
			t.pending[*k] = in
			return
		}
	}
}

func (t *Tracer) unregister(keys []key) {
	t.mu.Lock()
	for _, k := range keys {
		delete(t.pending, k)
	}
	t.mu.Unlock()
}

// send puts one probe on the wire. The packet is built first; the wall
// clock is read after the socket's lock is taken, just before the system
// call, and the kernel's transmit timestamp is read right after it.
func (t *Tracer) send(k key, in *inflight, src netip.Addr, ifindex, ttl int, tos uint8) error {
	v6 := k.dst.Is6()
	l4 := buildL4(k, src, probeSize, v6)
	var (
		s   *sendSock
		pkt []byte
		oob []byte
		sa  unix.Sockaddr
	)
	if !v6 {
		s, pkt, oob = t.v4send, buildIPv4(src, k.dst, uint8(k.proto), ttl, tos, uint16(k.id), l4), send4Oob(ifindex)
		sa = &unix.SockaddrInet4{Addr: k.dst.As4()}
	} else {
		switch k.proto {
		case protoUDP:
			s = t.v6udp
		case protoTCP:
			s = t.v6tcpOut
		default:
			s = t.v6icmpOut
		}
		pkt, oob, sa = l4, send6Oob(src, ifindex, ttl, tos), &unix.SockaddrInet6{Addr: k.dst.As16()}
	}
	var stamps [4]txStamp
	s.mu.Lock()
	if s.fd < 0 {
		s.mu.Unlock()
		return errors.New("tracer is closed")
	}
	in.user = time.Now()
	err := unix.Sendmsg(s.fd, pkt, oob, sa, 0)
	got := t.readTx(s, stamps[:0])
	s.mu.Unlock()
	t.applyTx(got)
	return err
}

// drainAllTx reads every send socket's waiting transmit timestamps (a
// device that queues packets stamps them after the send call returned).
func (t *Tracer) drainAllTx() {
	var stamps []txStamp
	for _, s := range t.sendSocks() {
		s.mu.Lock()
		stamps = t.readTx(s, stamps)
		s.mu.Unlock()
	}
	t.applyTx(stamps)
}

// hopAcc collects the answers of one TTL.
type hopAcc struct {
	sent, received int
	firstSent      time.Time
	answers        []result
	unreachable    bool
}

// Trace discovers the path to tg.Dst.
func (t *Tracer) Trace(ctx context.Context, tg Target) (*Path, error) {
	dst := tg.Dst.Unmap()
	if !dst.IsValid() {
		return nil, errors.New("tracing: no destination address")
	}
	method := tg.Method
	if method == "" {
		method = ICMP
	}
	k := key{dst: dst, flow: tg.Flow}
	switch method {
	case ICMP:
		k.proto = protoICMP
	case UDP:
		k.proto, k.port = protoUDP, tg.Port
		if k.port == 0 {
			k.port = DefaultUDPPort
		}
	case TCP:
		k.proto, k.port = protoTCP, tg.Port
		if k.port == 0 {
			k.port = DefaultTCPPort
		}
	default:
		return nil, fmt.Errorf("tracing %s: unknown method %q", dst, method)
	}
	if k.flow == 0 {
		k.flow = defaultFlow(dst)
	}
	maxTTL, perHop, timeout := tg.MaxTTL, tg.ProbesPerHop, tg.Timeout
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	if perHop <= 0 {
		perHop = DefaultProbesPerHop
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ifindex := 0
	if tg.Interface != "" {
		ifi, err := net.InterfaceByName(tg.Interface)
		if err != nil {
			return nil, fmt.Errorf("tracing %s: interface %s: %w", dst, tg.Interface, err)
		}
		ifindex = ifi.Index
	}
	src := tg.Src.Unmap()
	if !src.IsValid() {
		s, err := t.sourceFor(dst, ifindex)
		if err != nil {
			return nil, fmt.Errorf("tracing %s: %w", dst, err)
		}
		src = s
	}
	if src.Is4() != dst.Is4() {
		return nil, fmt.Errorf("tracing %s: source %s is of another address family", dst, src)
	}
	if err := t.ensure(dst.Is6(), method); err != nil {
		return nil, fmt.Errorf("tracing %s: %w", dst, err)
	}

	ch := make(chan result, maxTTL*perHop)
	keys := make([]key, 0, maxTTL*perHop)
	defer func() { t.unregister(keys) }()
	hops := make([]hopAcc, maxTTL+1)
	reached, stopAt, lastTTL := 0, 0, 0
	start := time.Now()
	var lastSend time.Time

	process := func(r result) {
		if r.at.Sub(t.sentAt(r.in)) > timeout {
			return
		}
		h := &hops[r.ttl]
		h.received++
		h.answers = append(h.answers, r)
		switch {
		case r.from == dst || r.kind == kindEchoReply || r.kind == kindTCP:
			if reached == 0 || r.ttl < reached {
				reached = r.ttl
			}
		case r.kind == kindUnreachable:
			h.unreachable = true
			if stopAt == 0 || r.ttl < stopAt {
				stopAt = r.ttl
			}
		}
	}
	// end is the last TTL that matters once the target (or a router
	// saying it is unreachable) has answered.
	end := func() int {
		e := lastTTL
		if reached > 0 {
			e = min(e, reached)
		}
		if stopAt > 0 {
			e = min(e, stopAt)
		}
		return e
	}
	stopped := func() bool { return reached > 0 || stopAt > 0 }
	// waitFor processes replies until done() or the deadline.
	waitFor := func(deadline time.Time, done func() bool) error {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		for !done() {
			select {
			case r := <-ch:
				process(r)
			case <-timer.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	drain := func() {
		for {
			select {
			case r := <-ch:
				process(r)
			default:
				return
			}
		}
	}

	for ttl := 1; ttl <= maxTTL; ttl++ {
		drain()
		if stopped() {
			break
		}
		if ttl > window {
			old := &hops[ttl-window]
			if err := waitFor(old.firstSent.Add(timeout), func() bool { return stopped() || old.received == old.sent }); err != nil {
				return nil, err
			}
			if stopped() {
				break
			}
		}
		for p := 0; p < perHop; p++ {
			if err := t.lim.Wait(ctx); err != nil {
				return nil, err
			}
			pk := k
			now := time.Now()
			in := &inflight{ch: ch, ttl: ttl}
			t.register(&pk, in)
			keys = append(keys, pk)
			if err := t.send(pk, in, src, ifindex, ttl, tg.TOS); err != nil {
				return nil, fmt.Errorf("tracing %s: sending TTL %d probe: %w", dst, ttl, err)
			}
			t.sent.Add(1)
			lastSend = now
			h := &hops[ttl]
			if h.sent == 0 {
				h.firstSent = now
			}
			h.sent++
		}
		lastTTL = ttl
	}
	// Wait for the stragglers of every TTL up to the end of the path.
	complete := func() bool {
		for i := 1; i <= end(); i++ {
			if hops[i].received < hops[i].sent {
				return false
			}
		}
		return true
	}
	if err := waitFor(lastSend.Add(timeout+min(readMargin, timeout/2)), complete); err != nil {
		return nil, err
	}
	drain()
	t.drainAllTx()

	p := &Path{Dst: dst, Src: src, Reached: reached > 0, Start: start, Duration: time.Since(start), Sent: len(keys)}
	n := end()
	if !stopped() {
		// Not reached: keep hops up to the last one that answered.
		n = 0
		for i := 1; i <= lastTTL; i++ {
			if hops[i].received > 0 {
				n = i
			}
		}
	}
	for i := 1; i <= n; i++ {
		h := &hops[i]
		from := make([]netip.Addr, 0, len(h.answers))
		var rtts []time.Duration
		for _, r := range h.answers {
			from = append(from, r.from)
			rtts = append(rtts, r.at.Sub(t.sentAt(r.in)))
		}
		addr := mostFrequent(from)
		p.Hops = append(p.Hops, Hop{TTL: i, Addr: addr, Sent: h.sent, Received: h.received, RTTs: rtts, Unreachable: h.unreachable && addr != dst})
	}
	return p, nil
}

// mostFrequent returns the address seen most often (the first of a tie).
func mostFrequent(as []netip.Addr) netip.Addr {
	var best netip.Addr
	bestN := 0
	for i, a := range as {
		n := 0
		for _, b := range as[i:] {
			if a == b {
				n++
			}
		}
		if n > bestN {
			best, bestN = a, n
		}
	}
	return best
}

// defaultFlow derives a flow id from the destination, kept in the dynamic
// port range so UDP and TCP probes look like ordinary client traffic.
func defaultFlow(dst netip.Addr) uint16 {
	var h uint32 = 2166136261
	for _, b := range dst.AsSlice() {
		h = (h ^ uint32(b)) * 16777619
	}
	return inet.FlowID(h)
}
