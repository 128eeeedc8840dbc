package sla

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"
)

// The planted month: October 2026, one sample a minute, four series groups
// over three site pairs, with known outages, loss bursts, a latency
// excursion, a latency step, an agent restart with a missing-data gap, a
// BGP peer going down and a MACsec blip. The tests assert the report
// against numbers derived by hand from this plan.

var (
	monthFrom = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	monthTo   = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
)

const (
	monthMinutes = 31 * 1440
	probesPerMin = 60
)

var testBuckets = []float64{0.025, 0.05, 0.075, 0.1, 0.2, 0.5, math.Inf(1)}

// at is the index of the minute starting on October day at hh:mm.
func at(day, hh, mm int) int { return (day-1)*1440 + hh*60 + mm }

// minuteOf says what one group's agent saw in minute k.
type minuteOf struct {
	sent, lost int
	rtt        float64 // every answered probe took this long
	jitter     float64
	// replies, when set, overrides sent - lost: the agent decides a loss
	// at the probe's timeout, so losses can be counted a minute late.
	replies    int
	setReplies bool
}

type group struct {
	source, target, addr, path, segment string
	minute                              func(k int) minuteOf
	// missing says a sample (taken at the end of minute k-1) was not
	// scraped; restart says the counters start again from zero at sample s.
	missing func(s int) bool
	restart int
}

func in(k, start, n int) bool { return k >= start && k < start+n }

var scenario = []group{
	{
		source: "us-east", target: "us-west", addr: "10.77.3.1", path: "sitelink", segment: "prod",
		minute: func(k int) minuteOf {
			m := minuteOf{sent: 60, rtt: 0.06, jitter: 0.002}
			switch {
			case in(k, at(10, 10, 0), 120): // latency excursion above the 100ms objective
				m.rtt = 0.19
			case k >= at(20, 12, 0): // latency step, still under the objective
				m.rtt = 0.09
			}
			return m
		},
	},
	{
		source: "us-east", target: "us-west", addr: "10.78.3.1", path: "mpls", segment: "prod",
		minute: func(k int) minuteOf { return minuteOf{sent: 60, rtt: 0.07, jitter: 0.003} },
	},
	{
		source: "us-east", target: "ap-tokyo", addr: "10.77.4.1", path: "sitelink", segment: "prod",
		minute: func(k int) minuteOf {
			m := minuteOf{sent: 60, rtt: 0.16, jitter: 0.004}
			switch {
			case k == at(5, 3, 0): // outage starts: no reply, but two losses are decided next minute
				m.lost, m.jitter, m.setReplies = 58, 0.01, true
			case k == at(5, 3, 1):
				m.lost, m.jitter, m.setReplies = 62, 0.01, true
			case in(k, at(5, 3, 0), 45): // outage
				m.lost, m.jitter = 60, 0.01
			case in(k, at(5, 3, 45), 5): // heavy loss right after it: same window
				m.lost, m.jitter = 18, 0.01
			case in(k, at(15, 8, 0), 30): // loss burst, 10%
				m.lost, m.jitter = 6, 0.01
			}
			return m
		},
	},
	{
		source: "ap-sydney", target: "eu-frankfurt", addr: "10.77.7.65", path: "sitelink", segment: "dev",
		minute: func(k int) minuteOf {
			m := minuteOf{sent: 60, rtt: 0.28, jitter: 0.005}
			switch {
			case in(k, at(12, 14, 0), 20): // outage while the BGP peer is down
				m.lost = 60
			case in(k, at(18, 9, 0), 10): // 50% loss
				m.lost = 30
			case in(k, at(25, 0, 0), 6*60): // agent down
				m.sent = 0
			}
			return m
		},
		missing: func(s int) bool { return s > at(25, 0, 0) && s <= at(25, 6, 0) },
		restart: at(25, 6, 0) + 1,
	},
}

// awsSeries are the AWS-state series: value at sample s.
var awsScenario = []struct {
	name, labels string
	value        func(s int) float64
}{
	{"probed_dx_bgp_peer_up", `vif_id="dxvif-fra-dev",bgp_peer_id="dxpeer-fra-dev-v4",address_family="ipv4",peer_address="169.254.77.1/30",site="eu-frankfurt",segment="dev"`,
		func(s int) float64 {
			if s >= at(12, 14, 2) && s <= at(12, 14, 18) {
				return 0
			}
			return 1
		}},
	{"probed_dx_vif_up", `vif_id="dxvif-fra-dev",vif_name="fra-dev",region="eu-central-1",site="eu-frankfurt",segment="dev"`, func(int) float64 { return 1 }},
	{"probed_dx_connection_up", `connection_id="dxcon-fra1",connection_name="fra-1",region="eu-central-1",location="FRA6",site="eu-frankfurt"`, func(int) float64 { return 1 }},
	{"probed_dx_connection_up", `connection_id="dxcon-iad1",connection_name="iad-1",region="us-east-1",location="EqDC2",site="us-east"`, func(int) float64 { return 1 }},
	{"probed_dx_connection_macsec_up", `connection_id="dxcon-fra1",encryption_mode="must_encrypt"`, func(int) float64 { return 1 }},
	{"probed_dx_connection_macsec_up", `connection_id="dxcon-iad1",encryption_mode="must_encrypt"`,
		func(s int) float64 {
			if s >= at(15, 8, 10) && s <= at(15, 8, 12) {
				return 0
			}
			return 1
		}},
}

// cumulative is one group's counters at every sample s (taken at
// monthFrom + s minutes, covering minutes before s).
type cumulative struct {
	sent, lost, count, sum []float64
	buckets                [][]float64
	jitter                 []float64
}

func (g *group) cumulative() *cumulative {
	n := monthMinutes + 1
	c := &cumulative{sent: make([]float64, n), lost: make([]float64, n), count: make([]float64, n), sum: make([]float64, n), jitter: make([]float64, n)}
	c.buckets = make([][]float64, len(testBuckets))
	for i := range c.buckets {
		c.buckets[i] = make([]float64, n)
	}
	c.jitter[0] = g.minute(0).jitter
	for s := 1; s < n; s++ {
		m := g.minute(s - 1)
		prev := s - 1
		reset := s == g.restart && g.restart > 0
		get := func(a []float64) float64 {
			if reset {
				return 0
			}
			return a[prev]
		}
		answered := float64(m.sent - m.lost)
		if m.setReplies {
			answered = float64(m.replies)
		}
		c.sent[s] = get(c.sent) + float64(m.sent)
		c.lost[s] = get(c.lost) + float64(m.lost)
		c.count[s] = get(c.count) + answered
		c.sum[s] = get(c.sum) + answered*m.rtt
		for i, le := range testBuckets {
			c.buckets[i][s] = get(c.buckets[i])
			if m.rtt <= le {
				c.buckets[i][s] += answered
			}
		}
		c.jitter[s] = m.jitter
	}
	return c
}

// fileSamples is the number of samples per OpenMetrics file. Debian's
// promtool (2.42) has no --max-block-duration: it writes two-hour blocks and
// re-reads its whole input for each, while every run costs ~0.2s CPU to
// start. Twelve-hour files (6 blocks each) balance the two: ~30s CPU for
// the month, measured on this 2-core machine.
const fileSamples = 720

// writeOpenMetrics writes the scenario as OpenMetrics text for promtool,
// one file per twelve hours, and returns the file names.
func writeOpenMetrics(dir string) ([]string, error) {
	cs := make([]*cumulative, len(scenario))
	for i := range scenario {
		cs[i] = scenario[i].cumulative()
	}
	var files []string
	for first := 0; first <= monthMinutes; first += fileSamples {
		file := fmt.Sprintf("%s/part-%03d.om", dir, first/fileSamples)
		if err := writeWindow(file, cs, first, min(first+fileSamples, monthMinutes+1)); err != nil {
			return nil, fmt.Errorf("writing %s: %w", file, err)
		}
		files = append(files, file)
	}
	return files, nil
}

// writeWindow writes samples first..end-1 of every series.
func writeWindow(file string, cs []*cumulative, first, end int) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	labels := func(g *group) string {
		return fmt.Sprintf(`source_site="%s",target_site="%s",target="%s",path="%s",segment="%s",protocol="icmp"`, g.source, g.target, g.addr, g.path, g.segment)
	}
	var buf []byte
	series := func(name, lbl string, g *group, v func(s int) float64) {
		prefix := name + "{" + lbl + "} "
		for s := first; s < end; s++ {
			if g != nil && g.missing != nil && g.missing(s) {
				continue
			}
			buf = append(buf[:0], prefix...)
			buf = strconv.AppendFloat(buf, v(s), 'g', -1, 64)
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, monthFrom.Unix()+int64(s)*60, 10)
			buf = append(buf, '\n')
			w.Write(buf)
		}
	}
	for _, fam := range []struct {
		name, typ string
		pick      func(c *cumulative) []float64
	}{
		{"probed_probes_sent", "counter", func(c *cumulative) []float64 { return c.sent }},
		{"probed_probes_lost", "counter", func(c *cumulative) []float64 { return c.lost }},
		{"probed_jitter_seconds", "gauge", func(c *cumulative) []float64 { return c.jitter }},
	} {
		fmt.Fprintf(w, "# TYPE %s %s\n", fam.name, fam.typ)
		name := fam.name
		if fam.typ == "counter" {
			name += "_total"
		}
		for i := range scenario {
			a := fam.pick(cs[i])
			series(name, labels(&scenario[i]), &scenario[i], func(s int) float64 { return a[s] })
		}
	}
	fmt.Fprintf(w, "# TYPE probed_rtt_seconds histogram\n")
	for i := range scenario {
		g, c := &scenario[i], cs[i]
		for j, le := range testBuckets {
			a := c.buckets[j]
			series("probed_rtt_seconds_bucket", labels(g)+fmt.Sprintf(`,le="%s"`, leString(le)), g, func(s int) float64 { return a[s] })
		}
		series("probed_rtt_seconds_count", labels(g), g, func(s int) float64 { return c.count[s] })
		series("probed_rtt_seconds_sum", labels(g), g, func(s int) float64 { return c.sum[s] })
	}
	last := ""
	for _, a := range awsScenario {
		if a.name != last {
			fmt.Fprintf(w, "# TYPE %s gauge\n", a.name)
			last = a.name
		}
		series(a.name, a.labels, nil, a.value)
	}
	fmt.Fprintf(w, "# EOF\n")
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func leString(le float64) string {
	if math.IsInf(le, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(le, 'g', -1, 64)
}
