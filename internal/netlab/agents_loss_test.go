package netlab

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// TestAgentsLossAndJitter runs three agents with 10 ms probes over paths
// with 1% and 10% loss and with uniform jitter, and checks probed's loss
// counters and jitter gauge against the configured distributions.
func TestAgentsLossAndJitter(t *testing.T) {
	topo, err := DefaultTopology().Subset("us-east", "us-west", "eu-frankfurt")
	if err != nil {
		t.Fatal(err)
	}
	// Short delays (an eighth of the fibre ones, 1.6 to 8.4 ms) keep the
	// round trips under the 100 ms timeout that 10 ms probes allow.
	for k, p := range topo.Links {
		p.Delay /= 8
		topo.Links[k] = p
	}
	lab := StartT(t, topo)
	const (
		interval = 10 * time.Millisecond
		jitter   = 3 * time.Millisecond
	)
	// Loss and jitter on one direction only. A probe's round trip crosses
	// both directions, so the agent at the other end sees them too (on
	// its replies).
	lossy := map[string]float64{PathSiteLink: 0.01, PathMPLS: 0.10}
	for path, p := range lossy {
		if err := lab.UpdatePath("us-east", "us-west", path, func(pp *PathParams) { pp.Loss = p }); err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.UpdatePath("us-east", "eu-frankfurt", PathSiteLink, func(pp *PathParams) { pp.Jitter = jitter }); err != nil {
		t.Fatal(err)
	}
	mesh := writeMesh(t, lab, interval, 100*time.Millisecond, 3, func(s *Site) []meshTarget {
		sl, _ := s.Addr(PathSiteLink, false)
		mp, _ := s.Addr(PathMPLS, false)
		return []meshTarget{{sl.String(), PathSiteLink, "prod", false}, {mp.String(), PathMPLS, "prod", false}}
	})
	agents := startAgents(t, lab, mesh)
	waitAgents(t, agents, 60*time.Second, "every series answered 50 times", func(ss []sample) bool {
		n := 0
		for _, v := range values(ss, "probed_rtt_seconds_count") {
			if v >= 50 {
				n++
			}
		}
		return n == 3*2*2
	})

	// Measure for 25 s (2,500 probes per series at 10 ms); read the jitter
	// gauge every 500 ms meanwhile (50 probes apart: the estimator's
	// memory, (15/16)^50 = 4%, has faded, so readings are ~independent).
	late1 := lateReplies(t, agents)
	s1 := scrapeAll(t, agents)
	jit := map[seriesKey][]float64{}
	for end := time.Now().Add(25 * time.Second); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond)
		for k, v := range values(scrapeAll(t, agents), "probed_jitter_seconds") {
			jit[k] = append(jit[k], v)
		}
	}
	s2 := scrapeAll(t, agents)
	late2 := lateReplies(t, agents)
	lost1, lost2 := values(s1, "probed_probes_lost_total"), values(s2, "probed_probes_lost_total")
	cnt1, cnt2 := values(s1, "probed_rtt_seconds_count"), values(s2, "probed_rtt_seconds_count")

	// Which configured loss a series crosses: us-east <-> us-west.
	lossOf := func(k seriesKey) float64 {
		if (k.src == "us-east" && k.dstSite == "us-west") || (k.src == "us-west" && k.dstSite == "us-east") {
			return lossy[k.path]
		}
		return 0
	}
	jittered := func(k seriesKey) bool {
		return k.path == PathSiteLink && ((k.src == "us-east" && k.dstSite == "eu-frankfurt") || (k.src == "eu-frankfurt" && k.dstSite == "us-east"))
	}
	// Uniform jitter X ~ U[-J, J] on one leg: consecutive RTTs differ by
	// D = X1 - X2, triangular on [-2J, 2J], E|D| = 2J/3. The RFC 3550
	// estimator J += (|D| - J)/16 is a linear filter, so its mean is E|D|
	// exactly: 2 ms here. One reading has sd ≈ sqrt(α/(2-α))·sd|D| with
	// α = 1/16 and sd|D| = J·sqrt(2/9): 0.25 ms (a little more for the
	// correlation of consecutive |D|); the mean of ~50 readings has sd
	// ~0.04 ms, so ±15% (0.3 ms) is over 5 sd and leaves room for the
	// machine's own timing noise, which only adds to |D|.
	wantJitter := 2 * jitter.Seconds() / 3
	losslessLost := map[seriesKey]float64{}
	var table strings.Builder
	fmt.Fprintf(&table, "%-13s %-13s %-8s %7s %6s %6s %8s %16s %10s\n", "from", "to", "path", "cfg", "n", "lost", "loss %", "99.9% interval", "jitter ms")
	for k, c2 := range cnt2 {
		n := (c2 - cnt1[k]) + (lost2[k] - lost1[k]) // finished probes
		lost := lost2[k] - lost1[k]
		p := lossOf(k)
		lo, hi := binomialInterval(int(n), p)
		mj := meanOf(jit[k])
		fmt.Fprintf(&table, "%-13s %-13s %-8s %6.1f%% %6.0f %6.0f %7.2f%% %7.0f..%-7.0f %10.3f\n", k.src, k.dstSite, k.path, p*100, n, lost, 100*lost/n, lo, hi, mj*1000)
		if n < 2000 {
			t.Errorf("%v: only %.0f probes finished in 25 s", k, n)
		}
		// On top of the lab's drops, a stalled machine can deliver answers
		// after the timeout; the agent counts those as late, so they may
		// stretch the upper bound, and nothing else may.
		late := late2[k.src] - late1[k.src]
		if p > 0 && (lost < lo || lost > hi+late) {
			t.Errorf("%v: %v lost of %v with %.0f%% loss configured: outside the 99.9%% binomial interval [%.0f, %.0f] (+%.0f answers the agent counted late)", k, lost, n, p*100, lo, hi, late)
		}
		// The lab drops nothing on these paths (its counters are checked
		// below): a loss there must be an answer the shared machine
		// delivered after the 100 ms timeout (explainLoss, below).
		if p == 0 {
			losslessLost[k] = lost
		}
		switch {
		case jittered(k):
			if math.Abs(mj-wantJitter) > 0.15*wantJitter {
				t.Errorf("%v: mean jitter %.3f ms, want %.3f ms ±15%%", k, mj*1000, wantJitter*1000)
			}
		case p == 0:
			// No jitter configured: what remains is the lab's and the
			// agents' own noise (~0.2 ms on the loaded 2-vCPU machine).
			if mj > 0.5e-3 {
				t.Errorf("%v: jitter %.3f ms on a path without jitter", k, mj*1000)
			}
		}
	}
	explainLoss(t, losslessLost, late1, late2, func(k seriesKey) string { return fmt.Sprint(reasons(s2, k)) })
	for _, k := range lab.Links() {
		st, _ := lab.Stats(k.From, k.To, k.Path)
		if lossless := !(k.From == "us-east" && k.To == "us-west"); lossless && st.Lost+st.Down+st.Blocked != 0 {
			t.Errorf("lab dropped packets on lossless %v: %+v", k, st)
		}
	}
	t.Logf("loss and jitter (jitter configured ±%v uniform on us-east->eu-frankfurt sitelink: expected %.3f ms):\n%s", jitter, wantJitter*1000, table.String())
}

func meanOf(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
