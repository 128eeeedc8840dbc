package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/probed/probed/exporter"
	"github.com/probed/probed/internal/netlab"
	"github.com/probed/probed/internal/nssock"
	"github.com/probed/probed/probe/ecmp"
)

// flowsMesh probes two of eu-frankfurt's sitelink addresses over 16
// flows: 10.77.7.1 by ICMP every icmp (10 ms), 10.77.7.65 by TCP to the
// lab's port 443 listener every tcp (20 ms, with a timeout a busy machine
// running the race detector cannot stall past). 16 flows sample the member
// paths 100 (50) times faster than at the 1 s default, so a window of 40
// probes per flow (10 minutes at 1 s) takes 6.4 s (12.8 s; the window is
// 16/15 of that, so that its newest bucket may have just begun).
func flowsMesh(icmp, tcp string) string {
	return `
site: us-east
probe:
  flows: 16
trace:
  max_ttl: 6
  probes_per_hop: 3
  pps: 5000
sites:
  - name: us-east
    targets: []
  - name: eu-frankfurt
    targets:
      - {address: 10.77.7.1, path: sitelink, segment: prod, interval: ` + icmp + `, timeout: 100ms}
      - {address: 10.77.7.65, path: sitelink, segment: dev, icmp: false, tcp_ports: [443], interval: ` + tcp + `, timeout: 200ms}
`
}

// startFlowsAgent is startAgent with a stop: the lab closes its
// namespaces when the test's context ends, before the cleanups run, so an
// agent still connecting through them must be stopped first.
func startFlowsAgent(t *testing.T, yaml string, o Options) (*testAgent, func()) {
	t.Helper()
	o.Log = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	ta, stop := launchAgent(t, yaml, o)
	t.Cleanup(func() { _ = stop() })
	return ta, func() { _ = stop() }
}

// The multi-flow feature in the WAN lab, against the lab's own hash and
// counters: a sitelink path of 4 member paths from us-east to
// eu-frankfurt, each with its own middle hop (10.90.17.1m), and an agent
// probing it over 16 ICMP and 16 TCP flows.
//
//   - One member losing 30%: the flows the lab hashes onto it, and only
//     those, are reported lossy, each at a loss whose 99.9% interval holds
//     30%, the others at 0; the traces of the flows find the 4 member
//     paths with every flow on its member's; the suspect hop is the lossy
//     member's own (TTL 2); the exported summary says so.
//   - 5% on every member: no evaluation flags anything over 120
//     evaluations of a sliding 640-probe window (the lab's counters show
//     each member losing 5%): at 1 probe/s and one evaluation per 10 s,
//     20 minutes.
//   - Members 40/41/42/47 ms round trip: each flow's RTT is its member's.
//   - A reload that restarts the jobs keeps every flow's identity, and so
//     its member (the RTTs say so again, from a new window).
func TestFlowsLab(t *testing.T) {
	topo, err := netlab.DefaultTopology().Subset("us-east", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	topo.Seed = 15
	lab := netlab.StartT(t, topo)
	src, dst, tcpDst := netip.MustParseAddr("10.77.1.1"), netip.MustParseAddr("10.77.7.1"), netip.MustParseAddr("10.77.7.65")
	a := netip.MustParseAddr
	memberHop := func(m int) netip.Addr { return netip.AddrFrom4([4]byte{10, 90, 17, byte(10 + m)}) }
	// setMembers sets the forward path's members (the return path is one
	// plain path, so a round trip's loss and extra delay are the member's).
	setMembers := func(oneWay time.Duration, extra [4]time.Duration, loss [4]float64) {
		t.Helper()
		p := netlab.PathParams{Delay: oneWay}
		for m := range 4 {
			p.Members = append(p.Members, netlab.MemberParams{Delay: extra[m], Loss: loss[m],
				Hops: []netip.Addr{a("10.90.17.1"), memberHop(m), a("10.90.17.3")}})
		}
		if err := lab.SetPath("us-east", "eu-frankfurt", netlab.PathSiteLink, p); err != nil {
			t.Fatal(err)
		}
		if err := lab.SetPath("eu-frankfurt", "us-east", netlab.PathSiteLink, netlab.PathParams{Delay: oneWay}); err != nil {
			t.Fatal(err)
		}
	}
	setMembers(5*time.Millisecond, [4]time.Duration{}, [4]float64{0, 0, 0.30, 0})

	ag, stop := startFlowsAgent(t, flowsMesh("10ms", "20ms"), Options{Sockets: nssock.In(lab.Site("us-east"))})
	defer stop()
	ag.engine.SetFlowEvaluation(100 * time.Millisecond)
	ag.Metrics.SetFlowWindow(8 * time.Second)
	srv := exporter.NewServer(ag.reg, ag.Metrics, ag.log, nil, exporter.ServerOptions{Ready: ag.Ready})
	ag.Mount(srv.Mux)
	get := func(path string) string {
		rec := httptest.NewRecorder()
		srv.Mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		b, _ := io.ReadAll(rec.Body)
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d %s", path, rec.Code, b)
		}
		return string(b)
	}
	flows := func() map[string]exporter.FlowTarget {
		var d exporter.FlowsDoc
		if err := json.Unmarshal([]byte(get("/api/v1/flows")), &d); err != nil {
			t.Fatal(err)
		}
		out := map[string]exporter.FlowTarget{}
		for _, ft := range d.Targets {
			out[ft.Protocol] = ft
		}
		return out
	}
	// member is the member the lab hashes a flow of ft onto.
	member := func(ft exporter.FlowTarget, f exporter.FlowDetail) int {
		if f.ICMPID != nil {
			return netlab.EchoFlow(src, dst, *f.ICMPID).Member(4)
		}
		return netlab.TCPFlow(src, *f.SourcePort, tcpDst, 443).Member(4)
	}
	minSent := func(ft exporter.FlowTarget) uint64 {
		m := uint64(1 << 62)
		for _, f := range ft.FlowDetail {
			m = min(m, f.Sent)
		}
		return m
	}
	var ids map[string][]uint16 // the flows' identities, per protocol
	identities := func(ft exporter.FlowTarget) []uint16 {
		var out []uint16
		for _, f := range ft.FlowDetail {
			if f.ICMPID != nil {
				out = append(out, *f.ICMPID)
			} else {
				out = append(out, *f.SourcePort)
			}
		}
		return out
	}

	t.Run("30% on one member of 4", func(t *testing.T) {
		want := map[string][]int{}
		var last map[string]exporter.FlowTarget
		why := ""
		defer func() {
			if t.Failed() {
				t.Logf("last state: %s", why)
			}
		}()
		waitSlowly(t, 90*time.Second, "the lossy member's flows named, its path traced", func() bool {
			last = flows()
			for _, proto := range []string{"icmp", "tcp"} {
				ft, ok := last[proto]
				want[proto] = nil
				for _, f := range ft.FlowDetail {
					if member(ft, f) == 2 {
						want[proto] = append(want[proto], f.Flow)
					}
				}
				why = fmt.Sprintf("%s: %d flows, min sent %d, concentrated %v lossy %v (want %v), member paths %+v, trace error %q",
					proto, len(ft.FlowDetail), minSent(ft), ft.Concentrated, ft.LossyFlows, want[proto], ft.MemberPaths, ft.TraceError)
				if !ok || len(ft.FlowDetail) != 16 || minSent(ft) < 40 {
					return false
				}
				lossyPaths := 0
				for _, p := range ft.MemberPaths {
					if p.Lossy && p.Suspect != nil {
						lossyPaths++
					}
				}
				if !ft.Concentrated || !slices.Equal(ft.LossyFlows, want[proto]) || len(ft.MemberPaths) != 4 || lossyPaths != 1 {
					return false
				}
			}
			return true
		})
		ids = map[string][]uint16{}
		for _, proto := range []string{"icmp", "tcp"} {
			ft := last[proto]
			ids[proto] = identities(ft)
			covered := map[int]bool{}
			for _, f := range ft.FlowDetail {
				covered[member(ft, f)] = true
			}
			t.Logf("%s: P %.3g, lossy flows %v at %.3f, others %.3f; flows per member %v", proto, ft.PValue, ft.LossyFlows,
				ft.LossyLossRatio, ft.OtherLossRatio, covered)
			if len(covered) != 4 {
				t.Fatalf("%s: the flows cover members %v only", proto, covered)
			}
			for _, f := range ft.FlowDetail {
				m := member(ft, f)
				if m != 2 {
					if f.Lost != 0 {
						t.Errorf("%s flow %d (member %d): %d of %d lost on a healthy member", proto, f.Flow, m, f.Lost, f.Sent)
					}
					continue
				}
				lo, hi := ecmp.Wilson(f.Lost, f.Sent, 3.29)
				t.Logf("%s flow %d (member 2): %d of %d lost, 99.9%% interval [%.3f, %.3f]", proto, f.Flow, f.Lost, f.Sent, lo, hi)
				// ICMP's loss is the member's; a TCP flow can lose a
				// probe more (a lost RST leaves the far side's connection
				// to the flow's port half open for its next SYN).
				if proto == "icmp" && (lo > 0.30 || hi < 0.30) || proto == "tcp" && hi < 0.30 {
					t.Errorf("%s flow %d: %d of %d lost: 30%% outside its 99.9%% interval [%.3f, %.3f]", proto, f.Flow, f.Lost, f.Sent, lo, hi)
				}
			}
			for i, p := range ft.MemberPaths {
				for _, fl := range p.Flows {
					if m := member(ft, ft.FlowDetail[fl]); len(p.Hops) < 2 || p.Hops[1] != memberHop(m).String() {
						t.Errorf("%s path %d %v holds flow %d of member %d", proto, i, p.Hops, fl, m)
					}
				}
				if p.Lossy != (len(p.Hops) > 1 && p.Hops[1] == memberHop(2).String()) {
					t.Errorf("%s path %d %v: lossy %v", proto, i, p.Hops, p.Lossy)
				}
				if p.Lossy && (p.Suspect.Hop != 2 || p.Suspect.Address != memberHop(2).String() || p.Suspect.Previous != "10.90.17.1") {
					t.Errorf("%s: suspect %+v, want hop 2 %v after 10.90.17.1", proto, *p.Suspect, memberHop(2))
				}
			}
		}
		if b, err := json.Marshal(last["icmp"]); err == nil {
			t.Logf("GET /api/v1/flows, the ICMP target: %s", b)
		}
		ms, _ := lab.MemberStats("us-east", "eu-frankfurt", netlab.PathSiteLink)
		t.Logf("lab members: %+v", ms)
		for m, s := range ms {
			if (s.Lost > 0) != (m == 2) {
				t.Errorf("lab member %d lost %d", m, s.Lost)
			}
		}
		body := get("/metrics")
		for _, proto := range []string{"icmp", "tcp"} {
			l := `protocol="` + proto + `"`
			for name, want := range map[string]float64{"probed_flows": 16, "probed_flow_member_paths": 4, "probed_flows_lossy": float64(len(want[proto]))} {
				if v := metricValue(body, name, l); v != want {
					t.Errorf("%s{%s} = %v, want %v", name, l, v, want)
				}
			}
			if v := metricValue(body, "probed_flow_worst_loss_ratio", l); v < 0.2 || v > 0.6 {
				t.Errorf("probed_flow_worst_loss_ratio{%s} = %v", l, v)
			}
			if v := metricValue(body, "probed_flow_suspect_hop_info", l+`,hop="2",address="10.90.17.12",previous="10.90.17.1"`); v != 1 {
				t.Errorf("no suspect hop series for %s:\n%s", proto, grepLines(body, "probed_flow_suspect_hop_info"))
			}
		}
	})

	t.Run("5% on every member", func(t *testing.T) {
		setMembers(5*time.Millisecond, [4]time.Duration{}, [4]float64{0.05, 0.05, 0.05, 0.05})
		before, _ := lab.MemberStats("us-east", "eu-frankfurt", netlab.PathSiteLink)
		ag.Metrics.SetFlowWindow(6400 * time.Millisecond) // the old window goes
		time.Sleep(time.Second)                           // evaluations that began before the reset end
		start := flows()
		waitSlowly(t, 120*time.Second, "120 evaluations", func() bool {
			f := flows()
			return f["icmp"].Evaluations-start["icmp"].Evaluations >= 120 && f["tcp"].Evaluations-start["tcp"].Evaluations >= 120
		})
		end := flows()
		for _, proto := range []string{"icmp", "tcp"} {
			s, e := start[proto], end[proto]
			t.Logf("%s: %d evaluations, %d flagged; last P %.3g, worst flow %.3f", proto, e.Evaluations-s.Evaluations, e.Flagged-s.Flagged, e.PValue, *e.WorstLossRatio)
			if e.Flagged != s.Flagged {
				t.Errorf("%s: %d evaluations of uniform 5%% loss flagged", proto, e.Flagged-s.Flagged)
			}
		}
		after, _ := lab.MemberStats("us-east", "eu-frankfurt", netlab.PathSiteLink)
		for m := range after {
			n, lost := after[m].Packets-before[m].Packets, after[m].Lost-before[m].Lost
			lo, hi := ecmp.Wilson(lost, n, 3.29)
			t.Logf("lab member %d: %d of %d lost", m, lost, n)
			if n < 500 || lo > 0.05 || hi < 0.05 {
				t.Errorf("lab member %d lost %d of %d: not the 5%% under test", m, lost, n)
			}
		}
	})

	// rttsMatchMembers checks that every flow's RTT is its member's, from
	// a window of at least n answered probes per flow.
	extra := [4]time.Duration{0, time.Millisecond, 2 * time.Millisecond, 7 * time.Millisecond}
	rttsMatchMembers := func(t *testing.T, n uint64) {
		t.Helper()
		var last map[string]exporter.FlowTarget
		waitSlowly(t, 60*time.Second, fmt.Sprintf("%d probes per flow", n), func() bool {
			last = flows()
			return minSent(last["icmp"]) >= n && minSent(last["tcp"]) >= n
		})
		for _, proto := range []string{"icmp", "tcp"} {
			ft := last[proto]
			byMember := map[int][]string{}
			for _, f := range ft.FlowDetail {
				m := member(ft, f)
				want := 40*time.Millisecond + extra[m]
				if f.RTTMin == nil || f.RTTMean == nil {
					t.Errorf("%s flow %d: no RTT", proto, f.Flow)
					continue
				}
				got := time.Duration(*f.RTTMin * 1e9)
				byMember[m] = append(byMember[m], fmt.Sprintf("%d: min %v mean %.2fms", f.Flow, got.Round(time.Microsecond), *f.RTTMean*1e3))
				// The lab never delivers early; the best of n probes is
				// within half a millisecond of the configured delay.
				if got < want-100*time.Microsecond || got > want+500*time.Microsecond {
					t.Errorf("%s flow %d (member %d): RTT min %v, want %v", proto, f.Flow, m, got, want)
				}
			}
			for m := range 4 {
				t.Logf("%s member %d (%v): flows %s", proto, m, 40*time.Millisecond+extra[m], strings.Join(byMember[m], ", "))
			}
		}
	}

	t.Run("members at 40/41/42/47 ms", func(t *testing.T) {
		setMembers(20*time.Millisecond, extra, [4]float64{})
		ag.Metrics.SetFlowWindow(4 * time.Second)
		rttsMatchMembers(t, 20)
	})

	t.Run("a reload keeps each flow's member", func(t *testing.T) {
		if ids == nil {
			t.Fatal("no flow identities from the first subtest")
		}
		// Another interval restarts both jobs (their series continue)
		// and starts their flow windows over.
		if err := ag.reload(t, flowsMesh("12ms", "24ms")); err != nil {
			t.Fatal(err)
		}
		// 40 probes per flow at 12 and 24 ms, and the newest of the 16
		// buckets just begun: windows of 8.192 and 16.384 s (6.4 × 16/15
		// and 12.8 × 16/15 s before).
		waitSlowly(t, 10*time.Second, "the restarted jobs' new windows", func() bool {
			f := flows()
			return f["icmp"].WindowSeconds == 8.192 && f["tcp"].WindowSeconds == 16.384
		})
		f := flows()
		for _, proto := range []string{"icmp", "tcp"} {
			if got := identities(f[proto]); !slices.Equal(got, ids[proto]) {
				t.Errorf("%s flow identities after the reload %v, before %v", proto, got, ids[proto])
			}
		}
		rttsMatchMembers(t, 15)
	})
}

// waitSlowly polls cond every 250 ms until it holds, failing the test
// after timeout. The lab runs in the test process: reading the flows' JSON
// every 20 ms makes enough garbage for the collector's pauses to hold up
// the emulator's packets past the probes' timeouts.
func waitSlowly(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitEvery(t, timeout, 250*time.Millisecond, what, cond)
}

// metricValue is the value of the first series of name whose labels hold
// every fragment of labels (comma-separated), or -1.
func metricValue(body, name, labels string) float64 {
lines:
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, l := range strings.Split(labels, ",") {
			if !strings.Contains(line, l) {
				continue lines
			}
		}
		var v float64
		fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
		return v
	}
	return -1
}

func grepLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
