package events

import (
	"encoding/json"
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
			b.ReportMetric(float64(st.Bytes)/float64(st.Events), "stored_bytes/event")
		})
	}
	b.Logf("%d events in %d segments, %d bytes: %.0f bytes per event", st.Events, st.Segments, st.Bytes, float64(st.Bytes)/float64(st.Events))
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

// TestStorageBytesPerKind logs what one event of each kind costs on disk with
// the reference mesh's labels, the figures behind the storage estimate in
// docs/events.md, and guards against a kind growing out of bounds.
func TestStorageBytesPerKind(t *testing.T) {
	at := t0
	l := Probe("us-east", "ap-singapore", "10.77.5.1", "sitelink", "prod", "icmp", "")
	aws := Labels{Site: "us-east", Segment: "prod", Region: "us-east-1", VIFID: "dxvif-fp1k7x2q", BGPPeerID: "dxpeer-fp14k7x2q"}
	hops := []string{"10.90.17.1", "10.90.17.5", "10.90.18.2", "10.90.19.7", "10.77.5.1"}
	for _, e := range []Event{
		NewTargetDown(at, l, 3),
		NewTargetUp(at, l, 95*time.Second),
		NewLossStarted(at, l, 3, 20),
		NewLossEnded(at, l, at.Add(-time.Minute), 7, 60),
		NewLatencyShift(at, l, 191*time.Millisecond, 214*time.Millisecond, at.Add(100*time.Second)),
		NewPathChanged(at, l, hops, append([]string{"10.90.17.1", "10.90.17.9"}, hops[2:]...)),
		NewMTUChanged(at, l, 9001, 1500),
		NewSTAMPLossStarted(at, l, "forward", 5, 100),
		NewBGPPeerChanged(at, aws, "169.254.100.1/30", "up", "down"),
		NewDXVIFChanged(at, Labels{Site: "us-east", Segment: "prod", Region: "us-east-1", VIFID: "dxvif-fp1k7x2q", ConnectionID: "dxcon-fh1k7x2q"}, "sitelink-prod", "available", "down"),
		NewAWSPollFailed(at, Labels{Service: "directconnect", Region: "us-east-1", Site: "us-east"}, "", "api error ThrottlingException: Rate exceeded"),
		NewConfigReloaded(at, "us-east", []string{"us-east → eu-frankfurt 10.77.7.9 (sitelink/prod icmp)"}, nil, nil),
	} {
		b, err := json.Marshal(record{T: e.Time.UnixNano(), Kind: e.Kind, Summary: e.Summary, Labels: e.Labels, Details: e.Details})
		if err != nil {
			t.Fatal(err)
		}
		n := len(b) + 1
		t.Logf("%-24s %4d bytes", e.Kind, n)
		if n > 1024 {
			t.Errorf("%s takes %d bytes", e.Kind, n)
		}
	}
}
