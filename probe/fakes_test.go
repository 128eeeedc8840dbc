package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/icmpsock"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/stamp"
	"github.com/probed/probed/probe/trace"
)

// fakeNet is a host without root: Sockets whose ICMP sockets answer every
// echo request themselves, whose connects, sessions, traces and MTU
// searches succeed — as long as the interface they are bound to exists
// with the index they were opened with, as the kernel would have it.
type fakeNet struct {
	mu     sync.Mutex
	ifaces map[string]int
	sends  map[string][]netip.Addr // by kind: where each job's probes went
	opened map[icmpsock.Key]int    // ICMP sockets opened
	closed int                     // ICMP sockets closed
	// Flow identities on the wire: echo identifiers and TCP source
	// ports in send order, and the traces asked for.
	echoIDs  map[netip.Addr][]uint16
	tcpPorts map[netip.Addr][]uint16
	traces   []trace.Target
	// datagram makes ICMP sockets ping sockets (identifier 4242).
	datagram bool
	// hops gives a trace's hop list (nil: the target at TTL 1).
	hops func(tg trace.Target) []netip.Addr
}

func newFakeNet() *fakeNet {
	return &fakeNet{ifaces: map[string]int{}, sends: map[string][]netip.Addr{}, opened: map[icmpsock.Key]int{},
		echoIDs: map[netip.Addr][]uint16{}, tcpPorts: map[netip.Addr][]uint16{}}
}

func (n *fakeNet) setIface(name string, index int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if index == 0 {
		delete(n.ifaces, name)
	} else {
		n.ifaces[name] = index
	}
}

func (n *fakeNet) sent(kind string, to netip.Addr) {
	n.mu.Lock()
	n.sends[kind] = append(n.sends[kind], to)
	n.mu.Unlock()
}

// count is how many probes of kind went to addr.
func (n *fakeNet) count(kind string, addr netip.Addr) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, a := range n.sends[kind] {
		if a == addr {
			c++
		}
	}
	return c
}

var errNoDev = &os.SyscallError{Syscall: "setsockopt", Err: unix.ENODEV}

// check says whether a socket opened on iface at index may send now.
func (n *fakeNet) check(iface string, index int) error {
	if iface == "" {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if cur, ok := n.ifaces[iface]; !ok || cur != index {
		return errNoDev
	}
	return nil
}

func (n *fakeNet) index(iface string) (int, error) {
	if iface == "" {
		return 0, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if i, ok := n.ifaces[iface]; ok {
		return i, nil
	}
	return 0, &net.OpError{Op: "route", Net: "ip+net", Err: errors.New("no such network interface")}
}

func (n *fakeNet) InterfaceIndex(name string) (int, error) { return n.index(name) }

func (n *fakeNet) ICMP(k icmpsock.Key, id uint16) (ICMPSocket, error) {
	idx, err := n.index(k.Interface)
	if err != nil {
		return nil, errNoDev
	}
	n.mu.Lock()
	n.opened[k]++
	info := icmpsock.Info{Key: k, Mode: icmpsock.Raw, ID: id}
	if n.datagram {
		info.Mode, info.ID = icmpsock.Datagram, 4242
	}
	n.mu.Unlock()
	return &fakeICMP{n: n, info: info, ifindex: idx, replies: make(chan icmpsock.Packet, 1024), done: make(chan struct{})}, nil
}

type fakeICMP struct {
	n       *fakeNet
	info    icmpsock.Info
	ifindex int
	replies chan icmpsock.Packet
	once    sync.Once
	done    chan struct{}
}

func (s *fakeICMP) Info() icmpsock.Info { return s.info }

func (s *fakeICMP) SendTo(b []byte, sa unix.Sockaddr) (time.Time, error) {
	now := time.Now()
	if err := s.n.check(s.info.Key.Interface, s.ifindex); err != nil {
		return now, unix.ENODEV
	}
	var to netip.Addr
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		to = netip.AddrFrom4(a.Addr)
	case *unix.SockaddrInet6:
		to = netip.AddrFrom16(a.Addr)
	}
	s.n.sent("icmp", to)
	s.n.mu.Lock()
	s.n.echoIDs[to] = append(s.n.echoIDs[to], binary.BigEndian.Uint16(b[4:]))
	s.n.mu.Unlock()
	reply := append([]byte(nil), b...)
	reply[0] = v4EchoReply
	if s.info.Key.V6 {
		reply[0] = v6EchoReply
	}
	binary.BigEndian.PutUint16(reply[2:], 0)
	select {
	case s.replies <- icmpsock.Packet{Data: reply, From: to, KernelTime: now.Add(time.Millisecond).UnixNano()}:
	default:
	}
	return now, nil
}

func (s *fakeICMP) ReadBatch(h func(*icmpsock.Packet)) (int, uint32, error) {
	select {
	case <-s.done:
		return 0, 0, net.ErrClosed
	case p := <-s.replies:
		h(&p)
		return 1, 0, nil
	}
}

func (s *fakeICMP) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.n.mu.Lock()
		s.n.closed++
		s.n.mu.Unlock()
	})
	return nil
}

func (n *fakeNet) Connect(ctx context.Context, c TCPConnect) (time.Duration, error) {
	if _, err := n.index(c.Interface); err != nil {
		return 0, errNoDev
	}
	n.sent("tcp", c.Dst.Addr())
	n.mu.Lock()
	n.tcpPorts[c.Dst.Addr()] = append(n.tcpPorts[c.Dst.Addr()], c.LocalPort)
	n.mu.Unlock()
	return time.Millisecond, nil
}

func (n *fakeNet) Session(ctx context.Context, cfg stamp.SenderConfig) (Session, error) {
	idx, err := n.index(cfg.Interface)
	if err != nil {
		return nil, errNoDev
	}
	return &fakeSession{n: n, to: cfg.Addr, iface: cfg.Interface, ifindex: idx, obs: cfg.Observer}, nil
}

type fakeSession struct {
	n       *fakeNet
	to      netip.Addr
	iface   string
	ifindex int
	obs     stamp.Observer
}

func (s *fakeSession) Send() {
	if s.n.check(s.iface, s.ifindex) != nil {
		s.obs.Error("send")
		return
	}
	s.n.sent("stamp", s.to)
	s.obs.Sent()
}

func (s *fakeSession) Close() error { return nil }

func (n *fakeNet) Tracer(int) (Tracer, error) { return fakeTracer{n}, nil }
func (n *fakeNet) MTU() (MTUProber, error)    { return fakeTracer{n}, nil }

type fakeTracer struct{ n *fakeNet }

func (t fakeTracer) Trace(ctx context.Context, tg trace.Target) (*trace.Path, error) {
	if _, err := t.n.index(tg.Interface); err != nil {
		return nil, err
	}
	t.n.sent("trace", tg.Dst)
	t.n.mu.Lock()
	t.n.traces = append(t.n.traces, tg)
	hops := t.n.hops
	t.n.mu.Unlock()
	if hops == nil {
		return &trace.Path{Dst: tg.Dst, Reached: true, Hops: []trace.Hop{{TTL: 1, Addr: tg.Dst, Sent: 1, Received: 1}}}, nil
	}
	p := &trace.Path{Dst: tg.Dst, Reached: true}
	for i, a := range append(hops(tg), tg.Dst) {
		p.Hops = append(p.Hops, trace.Hop{TTL: i + 1, Addr: a, Sent: 1, Received: 1})
	}
	return p, nil
}

func (t fakeTracer) Search(ctx context.Context, tg pmtu.Target) (pmtu.Result, error) {
	if _, err := t.n.index(tg.Interface); err != nil {
		return pmtu.Result{}, err
	}
	t.n.sent("mtu", tg.Dst)
	return pmtu.Result{MTU: 1500, Reached: true}, nil
}

func (fakeTracer) SetPPS(int)   {}
func (fakeTracer) Close() error { return nil }

// fakeDNS is a resolver the test controls.
type fakeDNS struct {
	mu    sync.Mutex
	names map[string]netip.Addr
}

func (d *fakeDNS) set(name string, a netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.IsValid() {
		d.names[name] = a
	} else {
		delete(d.names, name)
	}
}

func (d *fakeDNS) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.names[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// kindSinks record what every kind of job reported.
type kindSinks struct {
	countingSink
	mu       sync.Mutex
	sessions map[string]*countingObs
	paths    map[string]*pathCounts
	forgot   []string
}

type countingObs struct {
	stamp.NopObserver
	mu     sync.Mutex
	sent   int
	errors map[string]int
}

func (o *countingObs) Sent()          { o.mu.Lock(); o.sent++; o.mu.Unlock() }
func (o *countingObs) Error(r string) { o.mu.Lock(); o.errors[r]++; o.mu.Unlock() }
func (o *countingObs) get() (int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sent, o.errors["bind"]
}
func (o *countingObs) errs(r string) int { o.mu.Lock(); defer o.mu.Unlock(); return o.errors[r] }

type pathCounts struct {
	results int
	failed  map[Reason]int
}

func newKindSinks() *kindSinks {
	return &kindSinks{sessions: map[string]*countingObs{}, paths: map[string]*pathCounts{}}
}

func (s *kindSinks) Session(spec *config.ProbeSpec) stamp.Observer {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.sessions[spec.Key()]
	if o == nil {
		o = &countingObs{errors: map[string]int{}}
		s.sessions[spec.Key()] = o
	}
	return o
}

func (s *kindSinks) path(spec *config.ProbeSpec) *pathCounts {
	p := s.paths[spec.Key()]
	if p == nil {
		p = &pathCounts{failed: map[Reason]int{}}
		s.paths[spec.Key()] = p
	}
	return p
}

func (s *kindSinks) ObserveTrace(spec *config.ProbeSpec, _ *trace.Path) {
	s.mu.Lock()
	s.path(spec).results++
	s.mu.Unlock()
}

func (s *kindSinks) ObserveMTU(spec *config.ProbeSpec, _ pmtu.Result) {
	s.mu.Lock()
	s.path(spec).results++
	s.mu.Unlock()
}

func (s *kindSinks) Failed(spec *config.ProbeSpec, r Reason, _ error) {
	s.mu.Lock()
	s.path(spec).failed[r]++
	s.mu.Unlock()
}

func (s *kindSinks) Forget(spec *config.ProbeSpec) {
	s.mu.Lock()
	s.forgot = append(s.forgot, spec.Key())
	s.mu.Unlock()
}

func (s *kindSinks) pathResults(key string) (int, map[Reason]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.paths[key]
	if p == nil {
		return 0, nil
	}
	f := map[Reason]int{}
	for k, v := range p.failed {
		f[k] = v
	}
	return p.results, f
}

func (s *fakeICMP) Pending() (bool, bool) { return len(s.replies) > 0, true }
