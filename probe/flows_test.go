package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/ecmp"
	"github.com/probed/probed/probe/icmpsock"
	"github.com/probed/probed/probe/trace"
)

// flowRec is a FlowRecorder whose verdict the test sets.
type flowRec struct {
	countingRec
	fmu      sync.Mutex
	flows    []int // Probe.Flow of every outcome, in order
	ids      [][]uint16
	verdict  ecmp.Verdict
	evals    int
	reports  []MemberPathReport
	perFlows []int
}

func (r *flowRec) Succeeded(p Probe, d time.Duration) {
	r.countingRec.Succeeded(p, d)
	r.fmu.Lock()
	r.flows = append(r.flows, p.Flow)
	r.fmu.Unlock()
}

func (r *flowRec) SetFlows(s *config.ProbeSpec, ids []uint16) {
	r.fmu.Lock()
	r.ids = append(r.ids, slices.Clone(ids))
	r.perFlows = append(r.perFlows, s.Flows)
	r.fmu.Unlock()
}

func (r *flowRec) EvaluateFlows(time.Time) ecmp.Verdict {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	r.evals++
	v := r.verdict
	v.Sent = 1
	return v
}

func (r *flowRec) MemberPaths(rep MemberPathReport) {
	r.fmu.Lock()
	r.reports = append(r.reports, rep)
	r.fmu.Unlock()
}

func (r *flowRec) setVerdict(v ecmp.Verdict) { r.fmu.Lock(); r.verdict = v; r.fmu.Unlock() }

func (r *flowRec) snapshot() (flows []int, ids [][]uint16, reports []MemberPathReport) {
	r.fmu.Lock()
	defer r.fmu.Unlock()
	return slices.Clone(r.flows), slices.Clone(r.ids), slices.Clone(r.reports)
}

// flowSink hands out flowRecs.
type flowSink struct {
	countingSink
	mu   sync.Mutex
	recs map[string]*flowRec
}

func (s *flowSink) Add(spec *config.ProbeSpec) Recorder {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &flowRec{countingRec: countingRec{spec: spec}}
	s.recs[spec.Key()] = r
	return r
}

func (s *flowSink) rec(key string) *flowRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recs[key]
}

type flowEnv struct {
	e    *Engine
	net  *fakeNet
	sink *flowSink
}

func newFlowEnv(t *testing.T, n *fakeNet) *flowEnv {
	f := &flowEnv{net: n, sink: &flowSink{recs: map[string]*flowRec{}}}
	f.e = New(Options{Log: zaptest.NewLogger(t), Sink: f.sink, Sockets: n})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func flowSpecs(target string, flows int, interval time.Duration) []config.ProbeSpec {
	icmp := config.ProbeSpec{Kind: config.KindICMP, Protocol: config.ProtoICMP, SourceSite: "a", TargetSite: "b", Target: target,
		Path: "sitelink", Segment: "prod", Interval: interval, Timeout: interval, Size: 56, Flows: flows,
		TraceOpts: config.TraceJob{MaxTTL: 8, ProbesPerHop: 1}}
	tcp := icmp
	tcp.Kind, tcp.Protocol, tcp.Port = config.KindTCP, config.ProtoTCP, 443
	return []config.ProbeSpec{icmp, tcp}
}

func (f *flowEnv) update(specs ...config.ProbeSpec) {
	_, _ = f.e.Update(&config.Plan{Site: "a", Probes: specs, LossWindow: 100, DownAfter: 3, ResolveInterval: time.Minute})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Probe i of a job goes to flow i mod N, each flow with its own identity
// on the wire (an echo identifier, a TCP source port) derived from the
// job's key and the flow's index; the outcomes carry the flow; a reload
// that restarts the job keeps every identity; the recorder hears of them.
func TestFlowsRoundRobinAndIdentities(t *testing.T) {
	f := newFlowEnv(t, newFakeNet())
	dst := netip.MustParseAddr("192.0.2.7")
	specs := flowSpecs(dst.String(), 4, 5*time.Millisecond)
	f.update(specs...)
	icmpKey, tcpKey := specs[0].Key(), specs[1].Key()
	waitFor(t, "24 probes of each job", func() bool {
		f.net.mu.Lock()
		defer f.net.mu.Unlock()
		return len(f.net.echoIDs[dst]) >= 24 && len(f.net.tcpPorts[dst]) >= 24
	})
	f.net.mu.Lock()
	echo, ports := slices.Clone(f.net.echoIDs[dst]), slices.Clone(f.net.tcpPorts[dst])
	f.net.mu.Unlock()

	wantICMP := make([]uint16, 4)
	wantTCP := make([]uint16, 4)
	for i := range 4 {
		wantICMP[i] = icmpFlowStart(icmpKey, i)
		wantTCP[i] = tcpFlowPort(tcpKey, i, 0)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(wantICMP)))) != 4 || len(slices.Compact(slices.Sorted(slices.Values(wantTCP)))) != 4 {
		t.Fatalf("flow identities not distinct: %v %v", wantICMP, wantTCP)
	}
	// Round robin: consecutive probes take consecutive flows.
	check := func(what string, got, want []uint16) {
		t.Helper()
		start := slices.Index(want, got[0])
		if start < 0 {
			t.Fatalf("%s: first probe on %d, not a flow identity %v", what, got[0], want)
		}
		for i, id := range got {
			if w := want[(start+i)%4]; id != w {
				t.Fatalf("%s: probe %d on %d, want %d (flows %v, sent %v)", what, i, id, w, want, got)
			}
		}
	}
	check("icmp", echo, wantICMP)
	check("tcp", ports, wantTCP)

	r := f.sink.rec(icmpKey)
	flows, ids, _ := r.snapshot()
	if len(ids) == 0 || !slices.Equal(ids[0], wantICMP) {
		t.Errorf("recorder told identities %v, want %v", ids, wantICMP)
	}
	for i := 1; i < len(flows); i++ {
		// Replies come back in order on the fake socket.
		if flows[i] != (flows[i-1]+1)%4 {
			t.Fatalf("outcome flows %v are not round robin", flows)
		}
	}
	if rt := f.sink.rec(tcpKey); rt == nil {
		t.Fatal("no TCP recorder")
	} else if _, ids, _ := rt.snapshot(); len(ids) == 0 || !slices.Equal(ids[0], wantTCP) {
		t.Errorf("TCP recorder told ports %v, want %v", ids, wantTCP)
	}

	// A reload that restarts the jobs (another interval): same identities.
	slower := flowSpecs(dst.String(), 4, 6*time.Millisecond)
	f.net.mu.Lock()
	f.net.echoIDs[dst], f.net.tcpPorts[dst] = nil, nil
	f.net.mu.Unlock()
	f.update(slower...)
	waitFor(t, "probes after the reload", func() bool {
		f.net.mu.Lock()
		defer f.net.mu.Unlock()
		return len(f.net.echoIDs[dst]) >= 8 && len(f.net.tcpPorts[dst]) >= 8
	})
	f.net.mu.Lock()
	echo, ports = slices.Clone(f.net.echoIDs[dst]), slices.Clone(f.net.tcpPorts[dst])
	f.net.mu.Unlock()
	check("icmp after reload", echo, wantICMP)
	check("tcp after reload", ports, wantTCP)
	// More flows: the first four keep theirs.
	more := flowSpecs(dst.String(), 6, 6*time.Millisecond)
	f.update(more...)
	waitFor(t, "the recorder told of 6 flows", func() bool {
		_, ids, _ := f.sink.rec(icmpKey).snapshot()
		return len(ids[len(ids)-1]) == 6
	})
	_, ids, _ = f.sink.rec(icmpKey).snapshot()
	if got := ids[len(ids)-1]; !slices.Equal(got[:4], wantICMP) {
		t.Errorf("6 flows: identities %v, the first 4 were %v", got, wantICMP)
	}
}

// An ICMP flow identifier belongs to one socket: another socket's job
// whose flow derives the same one takes the next free one; the jobs of
// one socket share it; a released one lingers, and goes back to a job of
// its own socket only.
func TestICMPFlowIdentifiersPerSocket(t *testing.T) {
	e := New(Options{Log: zap.NewNop(), Sink: nopSink{}})
	p := e.icmp
	a := newICMPConn(p, icmpsock.Key{TOS: 1})
	b := newICMPConn(p, icmpsock.Key{TOS: 2})
	a.id, b.id = p.allocID(), p.allocID()
	p.setOwn(a.id, true)
	p.setOwn(b.id, true)
	p.conns[a.key], p.conns[b.key] = a, b
	job := func(key string) *target { return &target{key: key, flows: &flowSet{n: 3}} }
	p.mu.Lock()
	onA := p.takeFlowIDs(a, job("k"))
	again := p.takeFlowIDs(a, job("k")) // another job of the same socket deriving the same
	onB := p.takeFlowIDs(b, job("k"))
	p.mu.Unlock()
	if !slices.Equal(onA, again) {
		t.Errorf("two jobs of one socket: %v and %v", onA, again)
	}
	for i, id := range onB {
		if slices.Contains(onA, id) {
			t.Errorf("flow %d: identifier %d on two sockets", i, id)
		}
		if !b.isFlowID(id) || a.isFlowID(id) || !p.isOwn(id) {
			t.Errorf("identifier %d: socket bits a %v b %v, own %v", id, a.isFlowID(id), b.isFlowID(id), p.isOwn(id))
		}
	}
	for i := range onA {
		if onA[i] != icmpFlowStart("k", i) {
			t.Errorf("flow %d: %d, want the derived %d", i, onA[i], icmpFlowStart("k", i))
		}
	}
	// Released by both jobs of a: lingering, still a's and ours.
	p.mu.Lock()
	p.releaseFlowIDs(onA)
	p.releaseFlowIDs(again)
	p.mu.Unlock()
	if !a.isFlowID(onA[0]) || !p.isOwn(onA[0]) {
		t.Error("a lingering identifier stopped being the socket's")
	}
	p.mu.Lock()
	back := p.takeFlowIDs(a, job("k")) // the restarted job: the same ones
	other := p.takeFlowIDs(b, job("k2"))
	p.mu.Unlock()
	if !slices.Equal(back, onA) {
		t.Errorf("a restarted job got %v, had %v", back, onA)
	}
	for _, id := range other {
		if slices.Contains(onA, id) {
			t.Errorf("another socket took %d, held by a", id)
		}
	}
	// Freed after the linger: no longer ours.
	p.mu.Lock()
	p.releaseFlowIDs(back)
	p.mu.Unlock()
	p.releaseLingering(e.monoNow() + int64(ownLinger) + 1)
	if a.isFlowID(onA[0]) || p.isOwn(onA[0]) {
		t.Error("an identifier stayed the socket's after its linger")
	}
}

// A socket's flow identifiers are demultiplexed into its in-flight table:
// a reply carrying one is matched to its probe (and flow); another
// socket's is skipped, not foreign; the replies and errors of the flows'
// own Paris traces are skipped, not counted forged or stray.
func TestFlowReplyMatching(t *testing.T) {
	f := newMatchFixture(t)
	const flowID, otherSocket = 0x2222, 0x3333
	f.c.setFlowBit(flowID, true)
	f.c.p.setOwn(flowID, true)
	f.c.p.setOwn(otherSocket, true)
	f.inflight(int64(time.Second))
	sl := &f.c.slots[f.seq&f.c.mask]
	sl.id, sl.flow = flowID, 5
	rec := &flowRec{}
	f.t.rec = rec

	f.reply(otherSocket, f.seq, f.c.p.token[:], f.serial, "10.0.0.9", 0)
	if f.sink.ignored[IgnoredForeign] != 0 || f.sink.ignored[IgnoredForged] != 0 {
		t.Errorf("another socket's flow reply counted: %v", f.sink.ignored)
	}
	f.reply(0x1234, f.seq, f.c.p.token[:], f.serial, "10.0.0.9", 0) // the socket's own identifier, not the probe's
	if f.sink.ignored[IgnoredForged] != 1 {
		t.Errorf("a reply with the wrong identifier for its slot: %v", f.sink.ignored)
	}
	f.now += int64(10 * time.Millisecond)
	f.reply(flowID, f.seq, f.c.p.token[:], f.serial, "10.0.0.9", 0)
	flows, _, _ := rec.snapshot()
	if !slices.Equal(flows, []int{5}) || len(rec.rtts) != 1 {
		t.Fatalf("the flow's reply: outcomes on flows %v, rtts %v", flows, rec.rtts)
	}

	// A trace of the flow: its echo reply (a probe's payload, not our
	// token) and a Time Exceeded quoting 8 bytes of its probe.
	traceReply := func() {
		b := make([]byte, 32)
		b[0] = v4EchoReply
		binary.BigEndian.PutUint16(b[4:], flowID)
		binary.BigEndian.PutUint16(b[6:], 9)
		f.c.handle(&icmpsock.Packet{Data: b, From: netip.MustParseAddr("10.0.0.9")}, 0x1234, true)
	}
	f.inflight(int64(2 * time.Second))
	sl = &f.c.slots[f.seq&f.c.mask]
	sl.id, sl.flow = flowID, 5
	timeExceeded := func() {
		q := make([]byte, 8+20+8)
		q[0] = v4TimeExceeded
		ip := q[8:]
		ip[0], ip[9] = 0x45, 1
		copy(ip[16:20], netip.MustParseAddr("10.0.0.9").AsSlice())
		ip[20] = v4EchoRequest
		binary.BigEndian.PutUint16(ip[24:], flowID)
		binary.BigEndian.PutUint16(ip[26:], f.seq) // by chance our probe's sequence number
		f.c.handle(&icmpsock.Packet{Data: q, From: netip.MustParseAddr("10.90.0.1")}, 0x1234, true)
	}
	f.c.p.markTracing([]uint16{flowID}, true)
	traceReply()
	timeExceeded()
	if f.sink.ignored[IgnoredForged] != 1 || f.sink.ignored[IgnoredStrayError] != 0 || len(rec.reasons) != 0 {
		t.Errorf("while tracing: ignored %v, reasons %v", f.sink.ignored, rec.reasons)
	}
	f.c.p.markTracing([]uint16{flowID}, false)
	traceReply()
	if f.sink.ignored[IgnoredForged] != 2 {
		t.Errorf("after the trace, a stranger's reply on the flow is forged: %v", f.sink.ignored)
	}
	timeExceeded() // no trace: an 8-byte quote of our flow is our probe's
	if len(rec.reasons) != 1 || rec.reasons[0] != ReasonTTLExceeded {
		t.Errorf("Time Exceeded for the flow's probe: %v", rec.reasons)
	}
}

// With ping sockets the kernel sets the identifier: ICMP flows cannot be
// told apart on the wire, so the job probes one flow (and says so to its
// recorder); TCP flows need no privilege and keep theirs.
func TestFlowsOverPingSockets(t *testing.T) {
	n := newFakeNet()
	n.datagram = true
	f := newFlowEnv(t, n)
	dst := netip.MustParseAddr("192.0.2.8")
	specs := flowSpecs(dst.String(), 4, 5*time.Millisecond)
	f.update(specs...)
	waitFor(t, "probes", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return len(n.echoIDs[dst]) >= 8 && len(n.tcpPorts[dst]) >= 8
	})
	n.mu.Lock()
	echo := slices.Compact(slices.Sorted(slices.Values(n.echoIDs[dst])))
	ports := slices.Compact(slices.Sorted(slices.Values(n.tcpPorts[dst])))
	n.mu.Unlock()
	if !slices.Equal(echo, []uint16{4242}) || len(ports) != 4 {
		t.Errorf("ping sockets: echo identifiers %v (want the kernel's only), TCP ports %v (want 4)", echo, ports)
	}
	_, ids, _ := f.sink.rec(specs[0].Key()).snapshot()
	if len(ids) == 0 || !slices.Equal(ids[0], []uint16{4242}) {
		t.Errorf("recorder told %v, want the one identifier", ids)
	}
	flows, _, _ := f.sink.rec(specs[0].Key()).snapshot()
	for _, fl := range flows {
		if fl != 0 {
			t.Fatalf("outcome on flow %d with one flow probed", fl)
		}
	}
}

// Member-path rounds: when the job starts, every flow is traced with its
// exact identity (ICMP identifier; TCP source port and the job's port),
// the traces grouped into member paths; when the loss starts to
// concentrate, a new round; not on every evaluation.
func TestMemberPathRounds(t *testing.T) {
	n := newFakeNet()
	// Flows whose identity is even take member 0 (middle hop .10), odd
	// ones member 1 (.11).
	n.hops = func(tg trace.Target) []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("10.9.0.1"), netip.AddrFrom4([4]byte{10, 9, 0, byte(10 + tg.Flow%2)})}
	}
	f := newFlowEnv(t, n)
	f.e.SetFlowEvaluation(20 * time.Millisecond)
	dst := netip.MustParseAddr("192.0.2.9")
	specs := flowSpecs(dst.String(), 6, 5*time.Millisecond)
	f.update(specs...)
	for _, s := range specs {
		waitFor(t, s.Protocol+": the first round", func() bool {
			r := f.sink.rec(s.Key())
			if r == nil {
				return false
			}
			_, _, reps := r.snapshot()
			return len(reps) >= 1
		})
		r := f.sink.rec(s.Key())
		_, ids, reps := r.snapshot()
		rep := reps[0]
		if rep.Err != nil || rep.Traced != 6 || len(rep.Paths.Paths) != 2 {
			t.Fatalf("%s: first round %+v", s.Protocol, rep)
		}
		for _, p := range rep.Paths.Paths {
			for _, fl := range p.Flows {
				if want := netip.AddrFrom4([4]byte{10, 9, 0, byte(10 + ids[0][fl]%2)}); p.Hops[1] != want {
					t.Errorf("%s: flow %d (identity %d) on the path through %v", s.Protocol, fl, ids[0][fl], p.Hops[1])
				}
			}
		}
		n.mu.Lock()
		var traced []uint16
		for _, tg := range n.traces {
			wantMethod, wantPort := trace.ICMP, uint16(0)
			if s.Kind == config.KindTCP {
				wantMethod, wantPort = trace.TCP, 443
			}
			if tg.Method == wantMethod {
				traced = append(traced, tg.Flow)
				if tg.Port != wantPort || tg.MaxTTL != 8 || tg.ProbesPerHop != 1 {
					t.Errorf("%s trace %+v", s.Protocol, tg)
				}
			}
		}
		n.mu.Unlock()
		if !slices.Equal(slices.Sorted(slices.Values(traced)), slices.Sorted(slices.Values(ids[0]))) {
			t.Errorf("%s: traced %v, the flows are %v", s.Protocol, traced, ids[0])
		}
	}
	r := f.sink.rec(specs[0].Key())
	// Evaluations go on without new rounds while nothing changes...
	r.fmu.Lock()
	evals := r.evals
	r.fmu.Unlock()
	waitFor(t, "ten more evaluations", func() bool { r.fmu.Lock(); defer r.fmu.Unlock(); return r.evals >= evals+10 })
	if _, _, reps := r.snapshot(); len(reps) != 1 {
		t.Fatalf("%d rounds without a reason", len(reps))
	}
	// ...and the loss concentrating starts one.
	r.setVerdict(ecmp.Verdict{Concentrated: true, Lossy: []int{1, 3, 5}})
	waitFor(t, "a round when the loss concentrates", func() bool { _, _, reps := r.snapshot(); return len(reps) == 2 })
	r.fmu.Lock()
	evals = r.evals
	r.fmu.Unlock()
	waitFor(t, "ten more evaluations", func() bool { r.fmu.Lock(); defer r.fmu.Unlock(); return r.evals >= evals+10 })
	if _, _, reps := r.snapshot(); len(reps) != 2 {
		t.Errorf("%d rounds while the same loss goes on", len(reps))
	}
}

// A trace whose target answered only after silent hops (every probe of
// its own TTL lost on a lossy member) says nothing of the path's length:
// it ends at its last router, not reached, and groups with its member's
// path instead of making a path of its own.
func TestMemberTraceAfterSilentHops(t *testing.T) {
	a := netip.MustParseAddr
	dst := a("10.77.7.1")
	path := func(reached bool, hops ...string) *trace.Path {
		p := &trace.Path{Dst: dst, Reached: reached}
		for i, h := range hops {
			var addr netip.Addr
			if h != "*" {
				addr = a(h)
			}
			p.Hops = append(p.Hops, trace.Hop{TTL: i + 1, Addr: addr})
		}
		return p
	}
	traces := []ecmp.Trace{
		memberTrace(0, path(true, "10.90.17.1", "10.90.17.12", "10.90.17.3", "10.77.7.1")),
		memberTrace(1, path(true, "10.90.17.1", "10.90.17.12", "10.90.17.3", "*", "*", "10.77.7.1")),
		memberTrace(2, path(true, "10.90.17.1", "10.90.17.10", "10.90.17.3", "10.77.7.1")),
		memberTrace(3, path(true, "*", "10.90.17.10", "10.90.17.3", "10.77.7.1")), // a silent router, not before the target
	}
	if tr := traces[1]; tr.Reached || len(tr.Hops) != 3 {
		t.Fatalf("reached after silent hops: %+v", tr)
	}
	if tr := traces[3]; !tr.Reached || len(tr.Hops) != 4 {
		t.Fatalf("a silent first hop changed the trace: %+v", tr)
	}
	ps := ecmp.GroupPaths(traces)
	if len(ps.Paths) != 2 || !slices.Equal(ps.Paths[ps.PathOf(0)].Flows, []int{0, 1}) || !slices.Equal(ps.Paths[ps.PathOf(2)].Flows, []int{2, 3}) {
		t.Errorf("member paths %+v", ps)
	}
}

// A TCP flow whose source port another socket holds (here a listener on
// it: EADDRINUSE) moves to its next derived port, says so to the
// recorder, and its probes succeed; the other flows keep theirs. Real
// sockets on loopback.
func TestTCPFlowPortTaken(t *testing.T) {
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := uint16(srv.Addr().(*net.TCPAddr).Port)
	spec := config.ProbeSpec{Kind: config.KindTCP, Protocol: config.ProtoTCP, SourceSite: "a", TargetSite: "b", Target: "127.0.0.1",
		Port: port, Path: "p", Segment: "s", Interval: 50 * time.Millisecond, Timeout: 90 * time.Millisecond, Flows: 2}
	key := spec.Key()
	held, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", tcpFlowPort(key, 0, 0)))
	if err != nil {
		t.Fatalf("holding flow 0's port: %v", err)
	}
	defer held.Close()

	sink := &flowSink{recs: map[string]*flowRec{}}
	e := New(Options{Log: zaptest.NewLogger(t), Sink: sink, Sockets: KernelSockets{}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := e.Update(&config.Plan{Site: "a", Probes: []config.ProbeSpec{spec}, LossWindow: 100, DownAfter: 3, ResolveInterval: time.Minute}); err != nil {
		t.Fatal(err)
	}
	moved := []uint16{tcpFlowPort(key, 0, 1), tcpFlowPort(key, 1, 0)}
	waitFor(t, "the flow moved and 10 answered probes", func() bool {
		r := sink.rec(key)
		if r == nil {
			return false
		}
		_, ids, _ := r.snapshot()
		r.mu.Lock()
		n := len(r.rtts)
		r.mu.Unlock()
		return len(ids) > 0 && slices.Equal(ids[len(ids)-1], moved) && n >= 10
	})
	r := sink.rec(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.unsent) != 0 || len(r.reasons) != 0 {
		t.Errorf("unsent %v, failed %v: a held port cost probes", r.unsent, r.reasons)
	}
}
