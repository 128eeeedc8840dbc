package netlab

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pathRTT is the configured round trip of a target: the one-way delay of
// the path there plus the one back.
func pathRTT(t testing.TB, lab *Lab, from, to, path string) time.Duration {
	fwd, err := lab.Path(from, to, path)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := lab.Path(to, from, path)
	if err != nil {
		t.Fatal(err)
	}
	return RTT(fwd, rev)
}

// TestAgentsMeasureTheMesh runs seven probed agents, one per site of the
// reference topology with asymmetric fibre delays, and checks that what
// they report is what the lab did: RTT per pair over ICMP and TCP, IPv4
// and IPv6, sitelink and mpls; a path set down and restored.
func TestAgentsMeasureTheMesh(t *testing.T) {
	topo := DefaultTopology()
	// Asymmetric: the lower-numbered site's direction gets 125% of the
	// fibre delay, the way back 75%; the round trip stays the fibre one.
	idx := map[string]int{}
	for i, s := range topo.Sites {
		idx[s.Name] = i
	}
	for k, p := range topo.Links {
		if idx[k.From] < idx[k.To] {
			p.Delay = p.Delay * 5 / 4
		} else {
			p.Delay = p.Delay * 3 / 4
		}
		topo.Links[k] = p
	}
	lab := StartT(t, topo)
	const (
		interval  = 200 * time.Millisecond
		timeout   = time.Second // well above the longest RTT (sydney-frankfurt mpls, 272 ms)
		downAfter = 3
	)
	mesh := writeMesh(t, lab, interval, timeout, downAfter, func(s *Site) []meshTarget {
		sl4, _ := s.Addr(PathSiteLink, false)
		mp4, _ := s.Addr(PathMPLS, false)
		sl6, _ := s.Addr(PathSiteLink, true)
		return []meshTarget{
			{sl4.String(), PathSiteLink, "prod", true},
			{mp4.String(), PathMPLS, "prod", false},
			{sl6.String(), PathSiteLink, "prod", true},
		}
	})
	agents := startAgents(t, lab, mesh)
	const series = 7 * 6 * 5 // agents × peers × (3 ICMP + 2 TCP)
	waitAgents(t, agents, 60*time.Second, "every series answered 5 times", func(ss []sample) bool {
		n := 0
		for _, v := range values(ss, "probed_rtt_seconds_count") {
			if v >= 5 {
				n++
			}
		}
		return n == series
	})

	t.Run("RTT of every pair, path, family and protocol", func(t *testing.T) {
		late1 := lateReplies(t, agents)
		s1 := scrapeAll(t, agents)
		samples := rttSamples(t, agents, 15*time.Second, interval)
		s2 := scrapeAll(t, agents)
		late2 := lateReplies(t, agents)
		lost := map[seriesKey]float64{}
		cnt1, cnt2 := values(s1, "probed_rtt_seconds_count"), values(s2, "probed_rtt_seconds_count")
		sum1, sum2 := values(s1, "probed_rtt_seconds_sum"), values(s2, "probed_rtt_seconds_sum")
		lost1, lost2 := values(s1, "probed_probes_lost_total"), values(s2, "probed_probes_lost_total")
		var keys []seriesKey
		for k := range cnt2 {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		if len(keys) != series {
			t.Fatalf("%d RTT series, want %d", len(keys), series)
		}
		var table strings.Builder
		fmt.Fprintf(&table, "%-13s %-13s %-10s %-8s %-5s %9s %9s %8s %9s %4s %5s %4s\n", "from", "to", "target", "path", "proto", "cfg ms", "p50 ms", "diff µs", "mean ms", "n", "sent", "lost")
		var worst time.Duration
		var worstKey seriesKey
		measured := map[seriesKey]float64{}
		var diffs []float64
		for _, k := range keys {
			n := cnt2[k] - cnt1[k]
			if len(samples[k]) < 10 {
				t.Errorf("%v: only %d samples in 15 s", k, len(samples[k]))
				continue
			}
			med := median(samples[k])
			measured[k] = med
			cfg := pathRTT(t, lab, k.src, k.dstSite, k.path)
			diff := time.Duration((med - cfg.Seconds()) * 1e9)
			diffs = append(diffs, diff.Seconds())
			fmt.Fprintf(&table, "%-13s %-13s %-10s %-8s %-5s %9.3f %9.3f %8d %9.3f %4d %5.0f %4.0f\n", k.src, k.dstSite, k.target, k.path, k.protocol,
				cfg.Seconds()*1000, med*1000, diff.Microseconds(), (sum2[k]-sum1[k])/n*1000, len(samples[k]), n, lost2[k]-lost1[k])
			if diff.Abs() > worst.Abs() {
				worst, worstKey = diff, k
			}
			if diff.Abs() > 300*time.Microsecond {
				t.Errorf("%v: median %s ms, configured %s ms: off by %v (> 0.3 ms)", k, ms(med), ms(cfg.Seconds()), diff)
			}
			lost[k] = lost2[k] - lost1[k]
		}
		explainLoss(t, lost, late1, late2, func(k seriesKey) string { return fmt.Sprint(reasons(s2, k)) })
		for _, lk := range lab.Links() {
			if st, _ := lab.Stats(lk.From, lk.To, lk.Path); st.Lost+st.Down+st.Blocked+st.MTUDropped != 0 {
				t.Errorf("the lab dropped packets on %v: %+v", lk, st)
			}
		}
		t.Logf("configured vs measured RTT (median of per-scrape means, scrapes twice per interval, over 15 s; mean over all probes):\n%s", table.String())
		t.Logf("worst pair: %v off by %v; median of all diffs %v; emulator scheduling error so far: %+v",
			worstKey, worst, time.Duration(median(diffs)*1e9), lab.DelayError())
		// sitelink and mpls of one peer report their own latencies.
		for k, v := range measured {
			if k.path != PathMPLS {
				continue
			}
			for k2, v2 := range measured {
				if k2.src == k.src && k2.dstSite == k.dstSite && k2.path == PathSiteLink && k2.protocol == "icmp" && !strings.Contains(k2.target, ":") {
					want := pathRTT(t, lab, k.src, k.dstSite, PathMPLS) - pathRTT(t, lab, k.src, k.dstSite, PathSiteLink)
					got := time.Duration((v - v2) * 1e9)
					if want < 2*time.Millisecond || (got-want).Abs() > 500*time.Microsecond {
						t.Errorf("%s -> %s: mpls - sitelink measured %v, configured %v", k.src, k.dstSite, got, want)
					}
				}
			}
		}
	})

	t.Run("a path set down: only its targets go down, and come back", func(t *testing.T) {
		const from, to = "us-east", "us-west"
		// The link goes down both ways; a one-way failure would take the
		// other agent's probes too, since their replies use it.
		affected := func(k seriesKey) bool {
			return k.path == PathSiteLink && (k.src == from && k.dstSite == to || k.src == to && k.dstSite == from)
		}
		setDown := func(down bool) {
			for _, d := range [][2]string{{from, to}, {to, from}} {
				if err := lab.UpdatePath(d[0], d[1], PathSiteLink, func(p *PathParams) { p.Down = down }); err != nil {
					t.Fatal(err)
				}
			}
		}
		probe := seriesKey{from, to, "10.77.3.1", PathSiteLink, "icmp"}
		// What the lab dropped anywhere but the downed link.
		droppedElsewhere := func() (n uint64) {
			for _, k := range lab.Links() {
				if k.Path == PathSiteLink && (k.From == from && k.To == to || k.From == to && k.To == from) {
					continue
				}
				st, _ := lab.Stats(k.From, k.To, k.Path)
				n += st.Down + st.Lost + st.Blocked + st.MTUDropped
			}
			return n
		}
		dropped0 := droppedElsewhere()
		late1 := lateReplies(t, agents)
		before := scrapeAll(t, agents)
		lostBefore := values(before, "probed_probes_lost_total")
		lag0 := schedulerLagOf(t, agents[from])
		down := time.Now()
		setDown(true)
		// Poll only the us-east agent for the transitions: a round over all
		// seven would blur the timing.
		watch := map[string]*agent{from: agents[from]}
		var wentDown, pollGap time.Duration
		lastPoll := down
		waitAgents(t, watch, 10*time.Second, "target_up 0 on the downed path", func(ss []sample) bool {
			now := time.Now()
			pollGap, lastPoll = max(pollGap, now.Sub(lastPoll)), now
			// What the agent's own counters prove, whatever the machine's
			// speed: it says down from the down_after-th probe lost to
			// the outage on (losses to late answers, counted by the agent,
			// do not count toward it), and never before.
			up := values(ss, "probed_target_up")[probe]
			lost := values(ss, "probed_probes_lost_total")[probe] - lostBefore[probe]
			late := 0.0
			for _, s := range ss {
				if s.name == "probed_icmp_ignored_replies_total" && s.l("reason") == "late" {
					late += s.value
				}
			}
			if up == 1 && lost-(late-late1[from]) >= downAfter {
				t.Errorf("%v still up after %v probes lost to the outage (down_after %d)", probe, lost-(late-late1[from]), downAfter)
			}
			if up == 0 {
				if lost < downAfter {
					t.Errorf("%v down after %v lost probes, want down_after = %d", probe, lost, downAfter)
				}
				wentDown = now.Sub(down)
				return true
			}
			return false
		})

		// Leave it down a little so every affected series is down.
		time.Sleep(timeout + 2*interval)
		mid := scrapeAll(t, agents)
		for k, v := range values(mid, "probed_target_up") {
			if affected(k) && v != 0 {
				t.Errorf("%v still up while its path is down", k)
			}
			if !affected(k) && v != 1 {
				t.Errorf("%v went down with an unrelated path", k)
			}
		}
		restored := time.Now()
		setDown(false)
		var cameBack time.Duration
		lastPoll = restored
		waitAgents(t, watch, 10*time.Second, "target_up 1 again", func(ss []sample) bool {
			now := time.Now()
			pollGap, lastPoll = max(pollGap, now.Sub(lastPoll)), now
			if values(ss, "probed_target_up")[probe] == 1 {
				cameBack = now.Sub(restored)
				return true
			}
			return false
		})
		// A stalled machine sends late (the agent's scheduler lag says by
		// how much) and polls late (the test's own gaps say): the timing
		// bounds below stretch by that much, and no more.
		slack := lagBound(lag0, schedulerLagOf(t, agents[from])) + max(0, pollGap-100*time.Millisecond)
		after := scrapeAll(t, agents)
		late2 := lateReplies(t, agents)
		if d := droppedElsewhere() - dropped0; d != 0 {
			t.Errorf("the lab dropped %d packets on other links during the outage", d)
		}
		for k, v := range values(after, "probed_target_up") {
			if !affected(k) && v != 1 {
				t.Errorf("%v is down after an unrelated outage", k)
			}
		}
		// The lab delivered every other packet (checked above), so the
		// other series may lose only what the machine delivered late.
		unrelatedLost, unrelatedSent := 0.0, 0.0
		lostElsewhere := map[seriesKey]float64{}
		sentBefore, sentAfter := values(before, "probed_probes_sent_total"), values(after, "probed_probes_sent_total")
		for k, v := range values(after, "probed_probes_lost_total") {
			if !affected(k) {
				lostElsewhere[k] = v - lostBefore[k]
				unrelatedLost += v - lostBefore[k]
				unrelatedSent += sentAfter[k] - sentBefore[k]
			}
		}
		explainLoss(t, lostElsewhere, late1, late2, func(k seriesKey) string { return fmt.Sprint(reasons(after, k)) })
		// The verdict on a probe comes at its timeout: the first probe into
		// the dead path leaves within one interval, the down_after-th one
		// (down_after-1) intervals later, and is declared lost a timeout
		// after that; one more interval of slack as the issue asks.
		// 100 ms more for our polling (every 50 ms, plus the scrape).
		downBound := time.Duration(downAfter+1)*interval + timeout + 100*time.Millisecond
		// Back: the next probe leaves within an interval and its reply
		// takes one RTT (54 ms), inside two intervals; plus the polling.
		upBound := 2*interval + 100*time.Millisecond
		t.Logf("down: target_up 0 after %v (bound %v + %v of the machine's stalls); restored: 1 after %v (bound %v); probes lost by other series: %v of %v",
			wentDown, downBound, slack, cameBack, upBound, unrelatedLost, unrelatedSent)
		if wentDown > downBound+slack {
			t.Errorf("target_up took %v to drop, want <= %v + %v", wentDown, downBound, slack)
		}
		if cameBack > upBound+slack {
			t.Errorf("target_up took %v to recover, want <= %v + %v", cameBack, upBound, slack)
		}
	})
}

// reasons lists probed_probe_errors_total of one series by reason.
func reasons(ss []sample, k seriesKey) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		if s.name == "probed_probe_errors_total" && keyOf(s) == k {
			out[s.l("reason")] = s.value
		}
	}
	return out
}

// schedulerLagOf is the agent's probed_scheduler_lag_seconds buckets
// (cumulative counts by upper bound), for lagBound.
func schedulerLagOf(t *testing.T, a *agent) map[float64]float64 {
	t.Helper()
	ss, err := a.scrape()
	if err != nil {
		t.Fatalf("scraping an agent: %v", err)
	}
	out := map[float64]float64{}
	for _, s := range ss {
		if s.name == "probed_scheduler_lag_seconds_bucket" {
			le, err := strconv.ParseFloat(s.l("le"), 64)
			if err != nil {
				t.Fatalf("scheduler lag bucket le=%q", s.l("le"))
			}
			out[le] = s.value
		}
	}
	if len(out) == 0 {
		t.Fatal("the agent exports no probed_scheduler_lag_seconds buckets")
	}
	return out
}

// lateReplies is, per agent (by its site), the replies it counted late:
// answers that came after their probe's timeout.
func lateReplies(t *testing.T, agents map[string]*agent) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for site, a := range agents {
		ss, err := a.scrape()
		if err != nil {
			t.Fatalf("scraping the %s agent: %v", site, err)
		}
		for _, s := range ss {
			if s.name == "probed_icmp_ignored_replies_total" && s.l("reason") == "late" {
				out[site] += s.value
			}
		}
	}
	return out
}

// explainLoss checks the probes lost on paths the lab carried without
// loss (it dropped nothing, checked by the callers). A probe is lost there
// only when its answer came after the timeout: the shared test machine
// delivered it late (a lab or kernel thread starved). An ICMP probe's late
// answer is counted by its agent, so the agent's lost ICMP probes must be
// matched by late replies — otherwise the agent counted an answer that
// arrived in time as lost, which is its error. TCP has no such counter: a
// series may lose a probe per stall of the machine (two), more only on an
// agent that saw ICMP answers come late in the same window.
func explainLoss(t *testing.T, lost map[seriesKey]float64, late1, late2 map[string]float64, why func(seriesKey) string) {
	t.Helper()
	icmpLost, icmpSeries := map[string]float64{}, map[string]float64{}
	for k, l := range lost {
		if k.protocol == "icmp" {
			icmpLost[k.src] += l
			icmpSeries[k.src]++
		}
	}
	for site, l := range icmpLost {
		late := late2[site] - late1[site]
		// A probe lost just before the window ended may have its late
		// answer counted after it: one per series.
		if l > late+icmpSeries[site] {
			t.Errorf("agent %s: %v ICMP probes lost on lossless paths but only %v answers came late: it counted answers that arrived in time as lost", site, l, late)
		}
		if l > 0 {
			t.Logf("agent %s: %v ICMP probes lost, %v answers came late (the machine delivered them after the timeout)", site, l, late)
		}
	}
	for k, l := range lost {
		if l > 2 && late2[k.src]-late1[k.src] == 0 {
			t.Errorf("%v: %v probes lost on a lossless path without a late answer at that agent (errors by reason: %s)", k, l, why(k))
		}
	}
}
