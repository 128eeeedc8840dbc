package sla

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// knownLookback is how far before the period Build looks for pairs that
// were probed: at least a month, or the period's own length.
const knownLookback = 31 * 24 * time.Hour

// knownPairs adds every pair that had probe series in the period or in the
// lookback before it. A pair whose agent was down (or not scraped) for the
// whole period has no sample in it; it must show as "no data", not vanish
// from the report.
func (b *builder) knownPairs(ctx context.Context) error {
	look := max(b.o.To.Sub(b.o.From), knownLookback)
	sets, err := b.c.SeriesLabels(ctx, b.sel(metricSent), b.o.From.Add(-look), b.o.To)
	if err != nil {
		return fmt.Errorf("listing the probe series of the period and the %d days before it: %w", int(look.Hours()/24), err)
	}
	for _, m := range sets {
		b.pair(m)
	}
	return nil
}

// ValidateMatch checks --query.match: label matchers as they go between
// the braces of a selector (source_site="us-east",path=~"sitelink|mpls").
// An error is a flag error, found before any query is sent.
func ValidateMatch(match string) error {
	if strings.TrimSpace(match) == "" {
		return nil
	}
	if _, err := parser.NewParser(parser.Options{}).ParseMetricSelector("{" + match + "}"); err != nil {
		return fmt.Errorf("--query.match %q is not a list of label matchers (%v); write them as between the braces of a selector, e.g. source_site=\"us-east\",path=~\"sitelink|mpls\"", match, err)
	}
	return nil
}
