package agent

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"github.com/probed/probed/exporter"
	"github.com/probed/probed/internal/testutil"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/icmpsock"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/stamp"
	"github.com/probed/probed/probe/trace"
)

// dnsServer is an authoritative DNS server for the test's names, on
// loopback UDP: A records the test changes, nothing else.
type dnsServer struct {
	pc net.PacketConn
	mu sync.Mutex
	a  map[string]netip.Addr
}

func startDNS(t *testing.T) *dnsServer {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{pc: pc, a: map[string]netip.Addr{}}
	t.Cleanup(func() { pc.Close() })
	go d.serve()
	return d
}

func (d *dnsServer) set(name string, a netip.Addr) {
	d.mu.Lock()
	d.a[name] = a
	d.mu.Unlock()
}

func (d *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		d.mu.Lock()
		a, ok := d.a[strings.TrimSuffix(q.Name.String(), ".")]
		d.mu.Unlock()
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
		if !ok {
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if ok && q.Type == dnsmessage.TypeA && a.Is4() {
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: a.As4()})
		}
		msg, err := b.Finish()
		if err == nil {
			d.pc.WriteTo(msg, from)
		}
	}
}

// resolver is Go's own resolver asking only this server.
func (d *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.pc.LocalAddr().String())
	}}
}

// spySockets are the kernel's sockets, noting where every kind of job sends.
type spySockets struct {
	probe.KernelSockets
	mu   sync.Mutex
	dsts map[string]map[netip.Addr]int
}

func (s *spySockets) note(kind string, a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dsts[kind] == nil {
		s.dsts[kind] = map[netip.Addr]int{}
	}
	s.dsts[kind][a.Unmap()]++
}

func (s *spySockets) count(kind string, a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dsts[kind][a]
}

func (s *spySockets) ICMP(k icmpsock.Key, id uint16) (probe.ICMPSocket, error) {
	sock, err := s.KernelSockets.ICMP(k, id)
	if err != nil {
		return nil, err
	}
	return spyICMP{sock, s}, nil
}

type spyICMP struct {
	probe.ICMPSocket
	s *spySockets
}

func (c spyICMP) SendTo(b []byte, sa unix.Sockaddr) (time.Time, error) {
	if a, ok := sa.(*unix.SockaddrInet4); ok {
		c.s.note("icmp", netip.AddrFrom4(a.Addr))
	}
	return c.ICMPSocket.SendTo(b, sa)
}

func (s *spySockets) Connect(ctx context.Context, c probe.TCPConnect) (time.Duration, error) {
	s.note("tcp", c.Dst.Addr())
	return s.KernelSockets.Connect(ctx, c)
}

func (s *spySockets) Session(ctx context.Context, cfg stamp.SenderConfig) (probe.Session, error) {
	sess, err := s.KernelSockets.Session(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return spySession{sess, s, cfg.Addr}, nil
}

type spySession struct {
	probe.Session
	s  *spySockets
	to netip.Addr
}

func (x spySession) Send() { x.s.note("stamp", x.to); x.Session.Send() }

func (s *spySockets) Tracer(pps int) (probe.Tracer, error) {
	t, err := s.KernelSockets.Tracer(pps)
	if err != nil {
		return nil, err
	}
	return spyTracer{t, s}, nil
}

type spyTracer struct {
	probe.Tracer
	s *spySockets
}

func (t spyTracer) Trace(ctx context.Context, tg trace.Target) (*trace.Path, error) {
	t.s.note("trace", tg.Dst)
	return t.Tracer.Trace(ctx, tg)
}

func (s *spySockets) MTU() (probe.MTUProber, error) {
	p, err := s.KernelSockets.MTU()
	if err != nil {
		return nil, err
	}
	return spyMTU{p, s}, nil
}

type spyMTU struct {
	probe.MTUProber
	s *spySockets
}

func (p spyMTU) Search(ctx context.Context, tg pmtu.Target) (pmtu.Result, error) {
	p.s.note("mtu", tg.Dst)
	return p.MTUProber.Search(ctx, tg)
}

const dnsMesh = `site: a
probe: {interval: 100ms, timeout: 100ms, resolve_interval: 1s}
trace: {enabled: true, interval: 1s, max_ttl: 2, probes_per_hop: 1}
mtu: {interval: 1s, retries: 0, paths: [lan]}
stamp:
  port: %d
  reflector: {enabled: true, listen: ["0.0.0.0"], allowed_sources: [127.0.0.0/8]}
sites:
  - name: a
    targets: []
  - name: b
    targets:
      - {address: peer.probed.test, family: ip4, path: lan, tcp_ports: [%d], stamp: true}
`

// Every kind of job to a name follows the name to its new address, through
// a real DNS server the test controls and Go's own resolver.
func TestJobsFollowARealDNSChange(t *testing.T) {
	testutil.RequireRoot(t)
	ln, err := net.Listen("tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	stampPort := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dns := startDNS(t)
	first, second := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	dns.set("peer.probed.test", first)
	spy := &spySockets{dsts: map[string]map[netip.Addr]int{}}
	a := startAgent(t, fmt.Sprintf(dnsMesh, stampPort, ln.Addr().(*net.TCPAddr).Port), Options{Sockets: spy, Resolver: dns.resolver()})
	kinds := []string{"icmp", "tcp", "stamp", "trace", "mtu"}
	reached := func(addr netip.Addr, n int) func() bool {
		return func() bool {
			for _, k := range kinds {
				if spy.count(k, addr) < n {
					return false
				}
			}
			return true
		}
	}
	waitUntil(t, 20*time.Second, "every kind probing the first address", reached(first, 2))
	dns.set("peer.probed.test", second)
	took := waitUntil(t, 20*time.Second, "every kind probing the new address", reached(second, 2))
	t.Logf("every kind moved to the new address %v after the DNS change (resolve_interval 1s)", took)
	waitUntil(t, 10*time.Second, "STAMP replies from the new address", func() bool {
		return strings.Contains(scrapeText(t, a.reg), "probed_stamp_rtt_seconds_count")
	})
}

const namesMesh = `site: a
probe: {interval: 100ms, timeout: 100ms, down_after: 3, resolve_interval: 1s}
sites:
  - name: a
    targets: []
  - name: b
    targets:
      - {address: typo.probed.test, family: ip4}
      - {address: gone.probed.test, family: ip4}
`

// A name that never resolves is a target that is down (it pages like an
// unreachable one); a name that stops resolving is visible as such while
// its last address goes on being probed.
func TestNamesThatDoNotResolve(t *testing.T) {
	testutil.RequireRoot(t)
	dns := startDNS(t)
	dns.set("gone.probed.test", netip.MustParseAddr("127.0.0.2"))
	a := startAgent(t, namesMesh, Options{Resolver: dns.resolver()})
	srv := exporter.NewServer(a.reg, a.Metrics, a.log, nil, exporter.ServerOptions{Ready: a.Ready})
	value := func(name, target string) float64 {
		rec := httptest.NewRecorder()
		srv.Mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if strings.HasPrefix(line, name+"{") && strings.Contains(line, `target="`+target+`"`) && !strings.Contains(line, "reason=") {
				var v float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
				return v
			}
		}
		return -1
	}
	waitUntil(t, 20*time.Second, "the never-resolving name down and marked unresolved", func() bool {
		return value("probed_target_up", "typo.probed.test") == 0 && value("probed_target_name_resolved", "typo.probed.test") == 0
	})
	waitUntil(t, 20*time.Second, "the other name answered", func() bool {
		return value("probed_target_up", "gone.probed.test") == 1 && value("probed_target_name_resolved", "gone.probed.test") == 1
	})
	if ok, why := a.Ready(); ok || !strings.Contains(why, "1 unresolvable") {
		t.Errorf("ready = %v (%s) with a name that never resolved", ok, why)
	}
	dns.set("gone.probed.test", netip.Addr{})
	waitUntil(t, 20*time.Second, "the name that stopped resolving marked", func() bool {
		return value("probed_target_name_resolved", "gone.probed.test") == 0
	})
	n := value("probed_rtt_seconds_count", "gone.probed.test")
	waitUntil(t, 20*time.Second, "its last address still probed and up", func() bool {
		return value("probed_rtt_seconds_count", "gone.probed.test") >= n+5 && value("probed_target_up", "gone.probed.test") == 1
	})
}
