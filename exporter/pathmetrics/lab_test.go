package pathmetrics_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/exporter/pathmetrics"
	"github.com/probed/probed/internal/netlab"
	"github.com/probed/probed/probe/trace"
)

var labLabels = pathmetrics.Labels{SourceSite: "us-east", TargetSite: "us-west", Target: "10.77.2.1", Path: "sitelink", Segment: "prod", Protocol: "icmp"}

// observe feeds a trace to the Set the way the agent's trace loop does.
func observe(s *pathmetrics.Set, p *trace.Path) (pathmetrics.Change, bool) {
	obs := pathmetrics.Trace{Reached: p.Reached, At: p.Start}
	for i := range p.Hops {
		h := &p.Hops[i]
		ph := pathmetrics.Hop{RTT: h.RTT(), Sent: h.Sent, Received: h.Received}
		if !h.Silent() {
			ph.Addr = h.Addr.String()
		}
		obs.Hops = append(obs.Hops, ph)
	}
	return s.ObserveTrace("k", labLabels, obs)
}

func hopList(p *trace.Path) string {
	var out []string
	for _, h := range p.Hops {
		a := "*"
		if !h.Silent() {
			a = h.Addr.String()
		}
		out = append(out, a)
	}
	return strings.Join(out, ",")
}

// A link that is down when the agent starts, or that comes back while a
// trace runs, makes the trace see silence up to some TTL and then the
// target. The lab proves the shape (its counters show every probe of TTLs
// 1–4 dropped while the link was down, and the trace reached the target at
// a TTL beyond the path's length); such a trace must not become the first
// known path, count as a change or end up in previous_path. A real change
// of route is still counted, once.
func TestLabOutageRecoveryIsNotAPathChange(t *testing.T) {
	topo, err := netlab.DefaultTopology().Subset("us-east", "us-west")
	if err != nil {
		t.Fatal(err)
	}
	lab := netlab.StartT(t, topo)
	const from, to, path = "us-east", "us-west", netlab.PathSiteLink
	h1, h2, h3 := netip.MustParseAddr("10.90.12.1"), netip.MustParseAddr("10.90.12.2"), netip.MustParseAddr("10.90.12.3")
	if err := lab.SetLink(from, to, path, netlab.PathParams{Delay: 5 * time.Millisecond, Hops: []netip.Addr{h1, h2}}); err != nil {
		t.Fatal(err)
	}
	dst, _ := lab.Site(to).Addr(path, false)
	east := lab.Site(from)
	var tr *trace.Tracer
	if err := east.Do(func() (err error) { tr, err = trace.New(0); return err }); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	const perHop, timeout = 3, 400 * time.Millisecond
	tg := trace.Target{Dst: dst, Method: trace.ICMP, ProbesPerHop: perHop, Timeout: timeout, MaxTTL: 10}
	run := func() *trace.Path {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		p, err := tr.Trace(ctx, tg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	setDown := func(down bool) {
		t.Helper()
		for _, d := range [][2]string{{from, to}, {to, from}} {
			if err := lab.UpdatePath(d[0], d[1], path, func(p *netlab.PathParams) { p.Down = down }); err != nil {
				t.Fatal(err)
			}
		}
	}
	// recovering runs a trace that starts while the link is down; the
	// link comes back once the lab has dropped all probes of the first
	// four TTLs (the trace's window), long before TTL 5 is sent (one
	// timeout after TTL 1).
	recovering := func() *trace.Path {
		t.Helper()
		setDown(true)
		st, _ := lab.Stats(from, to, path)
		done := make(chan *trace.Path, 1)
		go func() {
			p, _ := tr.Trace(t.Context(), tg)
			done <- p
		}()
		deadline := time.Now().Add(timeout / 2)
		for {
			now, _ := lab.Stats(from, to, path)
			if now.Down >= st.Down+4*perHop {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the lab dropped %d probes while down, want %d", now.Down-st.Down, 4*perHop)
			}
			time.Sleep(time.Millisecond)
		}
		setDown(false)
		p := <-done
		if p == nil {
			t.Fatal("trace failed")
		}
		// The shape the lab forces: nothing up to TTL 4, then the target.
		if !p.Reached || len(p.Hops) <= 3 || !p.Hops[len(p.Hops)-1].Addr.IsValid() || p.Hops[0].Received != 0 {
			t.Fatalf("recovery trace %s (reached %v): not the outage shape", hopList(p), p.Reached)
		}
		t.Logf("trace across the recovery: %s", hopList(p))
		return p
	}
	set := pathmetrics.New()
	check := func(when, wantPath string, wantChanges uint64, wantPrevious string) {
		t.Helper()
		snap := set.Snapshot()
		var got, prev string
		var changes uint64
		if len(snap) == 1 {
			var hops []string
			for _, h := range snap[0].Hops {
				hops = append(hops, h.Address)
			}
			got, prev, changes = strings.Join(hops, ","), strings.Join(snap[0].PreviousPath, ","), snap[0].Changes
		}
		if got != wantPath || changes != wantChanges || prev != wantPrevious {
			t.Errorf("%s: path %q changes %d previous %q, want %q %d %q", when, got, changes, prev, wantPath, wantChanges, wantPrevious)
		}
	}
	real := strings.Join([]string{h1.String(), h2.String(), dst.String()}, ",")

	// The agent starts while the link is down and it comes back during
	// the first trace.
	observe(set, recovering())
	check("link down at start, back during the first trace", "", 0, "")
	observe(set, run())
	check("first complete trace", real, 0, "")

	// Outage and recovery while the path is known, twice.
	for i := 0; i < 2; i++ {
		if _, changed := observe(set, recovering()); changed {
			t.Errorf("recovery %d counted as a path change", i+1)
		}
		if _, changed := observe(set, run()); changed {
			t.Errorf("the trace after recovery %d counted as a path change", i+1)
		}
		check("after an outage", real, 0, "")
	}
	// While down, nothing answers: no evidence.
	setDown(true)
	observe(set, run())
	setDown(false)
	check("trace while down", real, 0, "")

	// A real change of route: one more router.
	if err := lab.SetLink(from, to, path, netlab.PathParams{Delay: 5 * time.Millisecond, Hops: []netip.Addr{h1, h3, h2}}); err != nil {
		t.Fatal(err)
	}
	longer := strings.Join([]string{h1.String(), h3.String(), h2.String(), dst.String()}, ",")
	if ch, changed := observe(set, run()); !changed || strings.Join(ch.New, ",") != longer {
		t.Errorf("a new router: changed %v %v, want a change to %s", changed, ch, longer)
	}
	observe(set, run())
	check("after a real change", longer, 1, real)
}
