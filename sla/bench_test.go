package sla

import (
	"fmt"
	"math/rand"
	"testing"
	"time"
)

// syntheticReport is a month for the reference mesh: 7 sites, every
// ordered pair, two paths and two segments (168 rows), a few breaches each.
func syntheticReport() *Report {
	rng := rand.New(rand.NewSource(1))
	sites := []string{"us-east", "us-central", "us-west", "ap-tokyo", "ap-singapore", "ap-sydney", "eu-frankfurt"}
	r := &Report{Prometheus: "http://prometheus:9090", From: monthFrom, To: monthTo, StepSeconds: 60, Definition: Definition, AWSState: true, AWSPaths: []string{"sitelink"}}
	for _, s := range sites {
		for _, t := range sites {
			if s == t {
				continue
			}
			for _, path := range []string{"sitelink", "mpls"} {
				for _, seg := range []string{"prod", "dev"} {
					p := &Pair{Source: s, Target: t, Path: path, Segment: seg, Objective: Objective{99.9, 1, 0.3}, status: make([]byte, monthMinutes), Status: "met"}
					for i := range p.status {
						p.status[i] = stGood
					}
					for k := 0; k < 5; k++ {
						start := rng.Intn(monthMinutes - 100)
						cause := []string{"unreachable", "loss", "latency"}[k%3]
						p.Breaches = append(p.Breaches, &Breach{Start: monthFrom.Add(time.Duration(start) * time.Minute), End: monthFrom.Add(time.Duration(start+30) * time.Minute),
							Minutes: 30, DurationSeconds: 1800, Cause: cause, Causes: []string{cause}})
					}
					p.AvailabilityPercent = Num(99.5 + rng.Float64()/2)
					for d := 0; d < 31; d++ {
						base := 0.05 + rng.Float64()*0.2
						p.Days = append(p.Days, &Day{Date: monthFrom.AddDate(0, 0, d).Format(time.DateOnly), Good: 1440,
							AvailabilityPercent: 100, RTT: RTT{P50: Num(base), P95: Num(base * 1.2), P99: Num(base * 1.4), Mean: Num(base)}})
					}
					r.Pairs = append(r.Pairs, p)
				}
			}
		}
	}
	for _, p := range r.Pairs {
		if p.Path == "sitelink" {
			c := &Comparison{Source: p.Source, Target: p.Target, Segment: p.Segment}
			for _, d := range p.Days {
				c.Days = append(c.Days, &CompareDay{Date: d.Date, SitelinkMeanSeconds: d.RTT.Mean, MPLSMeanSeconds: d.RTT.Mean * 1.15, DiffPercent: -13.04, Better: "sitelink"})
			}
			r.Comparisons = append(r.Comparisons, c)
		}
	}
	return r
}

// BenchmarkRender renders a month of the 7-site mesh (168 pair rows).
func BenchmarkRender(b *testing.B) {
	r := syntheticReport()
	for _, f := range Formats {
		b.Run(f, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				cw := &countWriter{}
				if err := Render(cw, r, f); err != nil {
					b.Fatal(err)
				}
				n = cw.n
			}
			b.ReportMetric(float64(n), "bytes/report")
		})
	}
}

type countWriter struct{ n int }

func (c *countWriter) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }

// BenchmarkQuantile is one percentile over a 20-bucket histogram.
func BenchmarkQuantile(b *testing.B) {
	bk := Buckets{}
	for i := 1; i <= 20; i++ {
		bk.addLe(fmt.Sprint(float64(i)/100), float64(i*i))
	}
	bk.addLe("+Inf", 500)
	b.ReportAllocs()
	for b.Loop() {
		_ = bk.Quantile(0.95)
	}
}
