package events

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// fill stores n events spread evenly over span ending at end, in a mix like
// a real agent's of the reference mesh: mostly probe transitions over 6
// target sites × 6 targets, some path and AWS changes, a few agent events.
func fill(tb testing.TB, j *Journal, n int, end time.Time, span time.Duration) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	sites := []string{"us-central", "us-west", "ap-tokyo", "ap-singapore", "ap-sydney", "eu-frankfurt"}
	paths := []struct{ path, prefix string }{{"sitelink", "10.77"}, {"mpls", "10.78"}}
	step := span / time.Duration(n)
	start := end.Add(-span)
	for i := range n {
		at := start.Add(time.Duration(i) * step)
		si := rng.IntN(len(sites))
		p := paths[rng.IntN(2)]
		seg, host := "prod", 1
		if rng.IntN(2) == 1 {
			seg, host = "dev", 65
		}
		l := Probe("us-east", sites[si], fmt.Sprintf("%s.%d.%d", p.prefix, si+2, host), p.path, seg, "icmp", "")
		aws := Labels{Site: sites[si], Segment: seg, Region: "ap-northeast-1", VIFID: fmt.Sprintf("dxvif-f%c%dk7x2q", seg[0], si+2)}
		var e Event
		switch r := rng.IntN(100); {
		case r < 20:
			e = NewTargetDown(at, l, 3)
		case r < 35:
			e = NewTargetUp(at, l, time.Duration(rng.IntN(600))*time.Second)
		case r < 50:
			e = NewLossStarted(at, l, 3, 20)
		case r < 62:
			e = NewLossEnded(at, l, at.Add(-time.Minute), 7, 60)
		case r < 72:
			e = NewLatencyShift(at, l, 71*time.Millisecond, 93*time.Millisecond, at.Add(90*time.Second))
		case r < 85:
			e = NewPathChanged(at, l, []string{"10.90.17.1", "10.90.17.5", l.Target}, []string{"10.90.17.1", "10.90.17.9", "10.90.17.2", l.Target})
		case r < 93:
			aws.BGPPeerID = "dxpeer-" + aws.VIFID[6:]
			e = NewBGPPeerChanged(at, aws, "169.254.100.1/30", "up", "down")
		case r < 97:
			e = NewDXVIFChanged(at, aws, "sitelink-"+seg, "available", "down")
		case r < 99:
			e = NewMTUChanged(at, l, 9001, 1500)
		default:
			e = NewConfigReloaded(at, "us-east", []string{l.Target}, nil, nil)
		}
		j.Emit(e)
	}
}

// BenchmarkEventsAPI measures GET /api/v1/events on a journal of 100,000
// events (30 days of them) through the real handler, and reports the
// storage cost per event.
func BenchmarkEventsAPI(b *testing.B) {
	const n = 100_000
	end := t0
	j, err := Open(Options{Dir: b.TempDir(), Now: func() time.Time { return end }})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	fill(b, j, n, end, 30*24*time.Hour)
	st := j.Stats()
	if st.Events != n {
		b.Fatalf("stored %d events", st.Events)
	}
	mux := http.NewServeMux()
	j.Register(mux)
	for _, c := range []struct{ name, q string }{
		{"newest100", ""},
		{"newest100_no_related", "related=false"},
		{"pair_last_6h", "source_site=us-east&target_site=ap-tokyo&since=6h"},
		{"kind_and_site_all_time", "kind=latency_shift&target_site=ap-tokyo&limit=1000"},
		{"rare_kind_full_scan", "kind=config_reloaded&limit=10"},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, PathEvents+"?"+c.q, nil)
			var size int
			for b.Loop() {
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size), "resp_bytes")
		})
	}
	b.ReportMetric(float64(st.Bytes)/float64(st.Events), "bytes/event")
	b.ReportMetric(float64(st.Segments), "segments")
}

// BenchmarkEmit is the cost of one Emit (encode + write(2)).
func BenchmarkEmit(b *testing.B) {
	j, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	e := NewTargetDown(t0, tokyo, 3)
	for b.Loop() {
		j.Emit(e)
	}
}
