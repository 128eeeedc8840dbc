package awsstate

import (
	"context"
	"testing"

	"github.com/probed/probed/internal/awstest"
)

// BenchmarkPollOwnSite measures one agent's poll round (API + CloudWatch)
// against the emulator without forced pagination, and reports the API calls
// it costs: the budget seven agents spend per interval.
func BenchmarkPollOwnSite(b *testing.B) {
	benchPoll(b, "  poll_all: false\n")
}

// BenchmarkPollAll is the same for one agent polling all seven sites.
func BenchmarkPollAll(b *testing.B) {
	benchPoll(b, "  poll_all: true\n")
}

func benchPoll(b *testing.B, yaml string) {
	f := setupB(b, "us-east", yaml, awstest.WithoutForcedPagination())
	ctx := context.Background()
	f.poller.PollOnce(ctx)
	before := total(f.srv)
	n := 0
	for b.Loop() {
		f.poller.PollOnce(ctx)
		n++
	}
	b.ReportMetric(float64(total(f.srv)-before)/float64(n), "calls/poll")
}

func total(s *awstest.Server) int {
	n := 0
	for _, v := range s.RequestCounts() {
		n += v
	}
	return n
}

// BenchmarkSnapshot is the per-scrape cost of taking a snapshot of all
// seven sites.
func BenchmarkSnapshot(b *testing.B) {
	f := setupB(b, "us-east", "  poll_all: true\n")
	f.poller.PollOnce(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		if s := f.poller.Snapshot(); len(s.VIFs) != 14 {
			b.Fatalf("%d VIFs", len(s.VIFs))
		}
	}
}
