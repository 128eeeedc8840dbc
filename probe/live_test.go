package probe

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/testutil"
)

// runEngine probes specs for d and returns what the sink saw, per spec in
// the order given.
func runEngine(t *testing.T, log *zap.Logger, d time.Duration, specs ...config.ProbeSpec) []*countingRec {
	t.Helper()
	sink := &countingSink{}
	e := New(Options{Log: log, Sink: sink})
	if _, err := e.Update(&config.Plan{Site: "test", Probes: specs, LossWindow: 100, DownAfter: 3}); err != nil {
		t.Fatalf("update: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := e.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// Let in-flight probes reach their verdict: Run stopped, expire by hand.
	time.Sleep(specs[0].Timeout)
	e.icmp.expire(e.monoNow() + int64(time.Hour))
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.recs) != len(specs) {
		t.Fatalf("%d recorders for %d specs", len(sink.recs), len(specs))
	}
	return sink.recs
}

func spec(target, proto string, port uint16) config.ProbeSpec {
	k := config.KindICMP
	if proto == config.ProtoTCP {
		k = config.KindTCP
	}
	return config.ProbeSpec{Kind: k, SourceSite: "test", TargetSite: "peer", Target: target, Path: "default", Segment: "default",
		Protocol: proto, Port: port, Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, Size: 56}
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// acceptAndClose completes every handshake and hangs up, until ln closes.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func TestLoopbackICMPAndTCP(t *testing.T) {
	testutil.RequireRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := uint16(closed.Addr().(*net.TCPAddr).Port)
	closed.Close()

	recs := runEngine(t, zaptest.NewLogger(t), time.Second,
		spec("127.0.0.1", config.ProtoICMP, 0),
		spec("::1", config.ProtoICMP, 0),
		spec("127.0.0.1", config.ProtoTCP, port),
		spec("127.0.0.1", config.ProtoTCP, closedPort),
		spec("localhost", config.ProtoICMP, 0),
	)
	for i, name := range []string{"icmp v4", "icmp v6", "tcp open", "", "icmp hostname"} {
		if name == "" {
			continue
		}
		r := recs[i]
		// A TCP probe still connecting at shutdown gets no verdict.
		if r.sent < 40 || len(r.rtts) < r.sent-1 || len(r.reasons) != 0 {
			t.Errorf("%s: sent %d answered %d failed %v", name, r.sent, len(r.rtts), r.reasons)
			continue
		}
		if m := median(r.rtts); m <= 0 || m > 2*time.Millisecond {
			t.Errorf("%s: median RTT %v on loopback", name, m)
		}
		t.Logf("%s: %d probes, median RTT %v", name, r.sent, median(r.rtts))
	}
	// SO_LINGER 0: about 50 connections, none left in TIME_WAIT on either side.
	out, err := exec.Command("ss", "-Htan", "state", "time-wait").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	if p := fmt.Sprintf(":%d ", port); strings.Contains(string(out), p) {
		t.Fatalf("TCP probes left TIME_WAIT sockets:\n%s", out)
	}
	r := recs[3]
	if r.sent < 40 || len(r.rtts) != 0 || len(r.reasons) < r.sent-1 {
		t.Fatalf("closed port: sent %d answered %d failed %d", r.sent, len(r.rtts), len(r.reasons))
	}
	for _, x := range r.reasons {
		if x != ReasonRefused {
			t.Fatalf("closed port reason %v, want refused", x)
		}
	}
}

// TestNamespaceProbes runs the engine inside a namespace made by the test:
// a peer answering ICMP (v4 and v6) and TCP, a closed port, and a peer that
// ignores ICMP echo, whose probes must all count as lost.
func TestNamespaceProbes(t *testing.T) {
	if peer := os.Getenv("PROBED_TEST_PEER_NS"); peer != "" {
		namespaceChild(t, peer)
		return
	}
	testutil.RequireRoot(t)
	agent, peer, silent := testutil.NewNetNS(t), testutil.NewNetNS(t), testutil.NewNetNS(t)
	testutil.Veth(t, agent, "to-peer", peer, "eth0")
	testutil.Veth(t, agent, "to-silent", silent, "eth0")
	agent.MustRun(t, "ip", "addr", "add", "10.200.0.1/24", "dev", "to-peer")
	agent.MustRun(t, "ip", "-6", "addr", "add", "fd00:200::1/64", "dev", "to-peer", "nodad")
	agent.MustRun(t, "ip", "addr", "add", "10.201.0.1/24", "dev", "to-silent")
	peer.MustRun(t, "ip", "addr", "add", "10.200.0.2/24", "dev", "eth0")
	peer.MustRun(t, "ip", "-6", "addr", "add", "fd00:200::2/64", "dev", "eth0", "nodad")
	silent.MustRun(t, "ip", "addr", "add", "10.201.0.2/24", "dev", "eth0")
	silent.MustRun(t, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
	// The peer routes 10.203.0.0/24 nowhere: it answers host unreachable,
	// which must be attributed to our probe.
	agent.MustRun(t, "ip", "route", "add", "10.203.0.0/24", "via", "10.200.0.2")
	peer.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	peer.MustRun(t, "ip", "route", "add", "unreachable", "10.203.0.0/24")
	// Routers rate-limit these errors (a burst of 5, then 1/s per
	// destination: net.ipv4.route.error_cost, not settable per namespace),
	// so later probes time out instead.
	peer.MustRun(t, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")

	cmd := exec.Command("ip", "netns", "exec", agent.Name, os.Args[0], "-test.run=^TestNamespaceProbes$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "PROBED_TEST_PEER_NS="+peer.Name)
	out, err := cmd.CombinedOutput()
	t.Logf("inside %s:\n%s", agent.Name, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNamespaceProbes") {
		t.Fatalf("namespace run failed: %v", err)
	}
}

func namespaceChild(t *testing.T, peerName string) {
	peer, err := testutil.OpenNetNS(peerName)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := peer.Do(func() (err error) { ln, err = net.Listen("tcp", "10.200.0.2:8443"); return }); err != nil {
		t.Fatalf("listen in peer namespace: %v", err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	recs := runEngine(t, zaptest.NewLogger(t), 1500*time.Millisecond,
		spec("10.200.0.2", config.ProtoICMP, 0),
		spec("fd00:200::2", config.ProtoICMP, 0),
		spec("10.200.0.2", config.ProtoTCP, 8443),
		spec("10.200.0.2", config.ProtoTCP, 8444),
		spec("10.201.0.2", config.ProtoICMP, 0),
		spec("10.203.0.9", config.ProtoICMP, 0),
	)
	for i, name := range []string{"icmp v4", "icmp v6", "tcp open"} {
		r := recs[i]
		if r.sent < 50 || len(r.rtts) < r.sent-1 || len(r.reasons) != 0 {
			t.Errorf("%s: sent %d answered %d failed %v", name, r.sent, len(r.rtts), r.reasons)
		}
	}
	if r := recs[3]; r.sent < 50 || len(r.reasons) < r.sent-1 || r.reasons[0] != ReasonRefused {
		t.Errorf("closed port: sent %d failed %d (%v...)", r.sent, len(r.reasons), r.reasons[:min(1, len(r.reasons))])
	}
	r := recs[4]
	if r.sent < 50 || len(r.rtts) != 0 || len(r.reasons) != r.sent {
		t.Fatalf("silent peer: sent %d answered %d lost %d", r.sent, len(r.rtts), len(r.reasons))
	}
	for _, x := range r.reasons {
		if x != ReasonTimeout {
			t.Fatalf("silent peer reason %v, want timeout", x)
		}
	}
	r = recs[5]
	if r.sent < 50 || len(r.rtts) != 0 || len(r.reasons) != r.sent {
		t.Fatalf("unreachable net: sent %d answered %d failed %d", r.sent, len(r.rtts), len(r.reasons))
	}
	unreach := 0
	for _, x := range r.reasons {
		switch x {
		case ReasonHostUnreachable:
			unreach++
		case ReasonTimeout:
		default:
			t.Fatalf("unreachable net: reason %v (all: %v)", x, r.reasons)
		}
	}
	if unreach < 5 {
		t.Fatalf("unreachable net: only %d probes attributed host_unreachable: %v", unreach, r.reasons)
	}
}
