package sla

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// Formats lists the output formats Render accepts.
var Formats = []string{"markdown", "csv", "json", "html"}

// Render writes the report in one format.
func Render(w io.Writer, r *Report, format string) error {
	switch format {
	case "markdown", "md":
		return renderMarkdown(w, r)
	case "csv":
		return renderCSV(w, r)
	case "json":
		// Lists are [] when empty, never null: readers iterate them.
		c := *r
		if c.Notes == nil {
			c.Notes = []string{}
		}
		if c.Pairs == nil {
			c.Pairs = []*Pair{}
		}
		if c.AWSPaths == nil {
			c.AWSPaths = []string{}
		}
		if c.Comparisons == nil {
			c.Comparisons = []*Comparison{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(&c)
	case "html":
		return renderHTML(w, r)
	}
	return fmt.Errorf("unknown report format %q (use one of %s)", format, strings.Join(Formats, ", "))
}

// Text helpers shared by the renderers.

func fmtMs(n Num) string {
	if !n.Valid() {
		return "–"
	}
	return strconv.FormatFloat(float64(n)*1000, 'f', 2, 64) + " ms"
}

func fmtPct(n Num, digits int) string {
	switch {
	case math.IsInf(float64(n), 1):
		return "∞"
	case !n.Valid():
		return "–"
	}
	return strconv.FormatFloat(float64(n), 'f', digits, 64) + " %"
}

func fmtSigned(n Num) string {
	if !n.Valid() {
		return "–"
	}
	return fmt.Sprintf("%+.2f %%", float64(n))
}

func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") }

func fmtDur(s float64) string {
	d := time.Duration(s) * time.Second
	h, m := int(d.Hours()), int(d.Minutes())%60
	if h > 0 {
		return fmt.Sprintf("%dh%02dm", h, m)
	}
	return fmt.Sprintf("%dm", m)
}

func objectiveText(o Objective) string {
	return fmt.Sprintf("≥ %g %%, loss ≤ %g %%, p95 ≤ %g ms", o.AvailabilityPercent, o.LossPercent, o.RTTP95Seconds*1000)
}

func awsText(b *Breach, awsState bool, awsPath bool) string {
	switch {
	case !awsState || !awsPath:
		return "n/a"
	case !b.AWSChanged:
		return "no"
	}
	parts := make([]string, len(b.AWSChanges))
	for i, c := range b.AWSChanges {
		parts[i] = fmt.Sprintf("%s %s: %s → %s", c.Time.UTC().Format("15:04"), c.Resource, c.From, c.To)
	}
	return "yes: " + strings.Join(parts, "; ")
}

// pathHeadline answers "did the move to SiteLink deliver?" in one sentence.
func pathHeadline(r *Report) string {
	d := r.PathDiffPercent
	over := fmt.Sprintf("Over the %d compared pairs", len(r.Comparisons))
	if len(r.Comparisons) == 1 {
		over = "For the one compared pair"
	}
	switch {
	case !d.Valid():
		return "No pair had RTT data on both paths."
	case d < 0:
		return fmt.Sprintf("%s, sitelink's mean RTT was %.2f %% lower than mpls (average of the pairs' differences).", over, -float64(d))
	case d > 0:
		return fmt.Sprintf("%s, sitelink's mean RTT was %.2f %% higher than mpls (average of the pairs' differences).", over, float64(d))
	}
	return over + ", sitelink and mpls had the same mean RTT."
}

// stepText prints the judged interval as "1m" rather than "1m0s".
func stepText(r *Report) string {
	s := (time.Duration(r.StepSeconds) * time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func periodText(r *Report) string {
	return fmt.Sprintf("%s – %s UTC", fmtTime(r.From), fmtTime(r.To))
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func renderMarkdown(w io.Writer, r *Report) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# SLA report %s\n\n", periodText(r))
	p("Source: Prometheus at %s, generated %s UTC, one judgement per %s.\n\n", r.Prometheus, fmtTime(r.Generated), stepText(r))
	p("**Definition.** %s\n\n", r.Definition)
	p("**RTT resolution.** %s.\n\n", r.RTTResolution)
	p("## Summary\n\n")
	p("| Pair | Path | Segment | Objective | Availability | Status | Good min | Bad min | No-data min | Error budget used | RTT p50 | RTT p95 | RTT p99 | Mean loss | Jitter | Breaches |\n")
	p("|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Pairs {
		p("| %s → %s | %s | %s | %s | %s | %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %d |\n",
			x.Source, x.Target, x.Path, x.Segment, objectiveText(x.Objective), fmtPct(x.AvailabilityPercent, 4), x.Status,
			x.Minutes.Good, x.Minutes.Bad, x.Minutes.NoData, fmtPct(x.ErrorBudgetUsedPercent, 1),
			fmtMs(x.RTT.P50), fmtMs(x.RTT.P95), fmtMs(x.RTT.P99), fmtPct(x.LossPercent, 4), fmtMs(x.JitterSeconds), len(x.Breaches))
	}
	noData := 0
	for _, x := range r.Pairs {
		noData += x.Minutes.NoData
	}
	p("\n%d minutes had no data (counted neither good nor bad).\n\n", noData)

	if len(r.Comparisons) > 0 {
		p("## Path comparison: sitelink vs mpls\n\n")
		p("Mean RTT per path; the difference is sitelink against mpls (negative: sitelink is faster).\n\n")
		p("| Pair | Segment | sitelink mean | mpls mean | Difference | Better | Days sitelink better | Days mpls better |\n")
		p("|---|---|---:|---:|---:|---|---:|---:|\n")
		for _, c := range r.Comparisons {
			p("| %s → %s | %s | %s | %s | %s | %s | %d | %d |\n", c.Source, c.Target, c.Segment, fmtMs(c.SitelinkMeanSeconds), fmtMs(c.MPLSMeanSeconds),
				fmtSigned(c.DiffPercent), c.Better, c.DaysSitelinkBetter, c.DaysMPLSBetter)
		}
		p("\n%s\n", pathHeadline(r))
		for _, c := range r.Comparisons {
			p("\n### %s → %s %s, per day\n\n| Date | sitelink mean | mpls mean | Difference | Better |\n|---|---:|---:|---:|---|\n", c.Source, c.Target, c.Segment)
			for _, d := range c.Days {
				p("| %s | %s | %s | %s | %s |\n", d.Date, fmtMs(d.SitelinkMeanSeconds), fmtMs(d.MPLSMeanSeconds), fmtSigned(d.DiffPercent), d.Better)
			}
		}
		p("\n")
	}

	p("## Breach windows\n\n")
	for _, x := range r.Pairs {
		p("### %s\n\n", mdEscape(x.Name()))
		if len(x.Breaches) == 0 {
			p("No breach.\n\n")
			continue
		}
		p("| Start | End | Duration | Cause | AWS state changed |\n|---|---|---:|---|---|\n")
		for _, br := range x.Breaches {
			cause := br.Cause
			if len(br.Causes) > 1 {
				cause += " (" + strings.Join(br.Causes, ", ") + ")"
			}
			p("| %s | %s | %s | %s | %s |\n", fmtTime(br.Start), fmtTime(br.End), fmtDur(br.DurationSeconds), cause, mdEscape(awsText(br, r.AWSState, x.awsPath(r))))
		}
		p("\n")
		if len(r.EventSources) > 0 {
			p("Events in these windows (from the agents' journals):\n\n")
			for _, br := range x.Breaches {
				if len(br.Events) == 0 {
					p("- %s – %s: no event recorded\n", fmtTime(br.Start), fmtTime(br.End))
					continue
				}
				p("- %s – %s:\n", fmtTime(br.Start), fmtTime(br.End))
				for _, e := range br.Events {
					p("  - %s `%s` %s\n", e.Time.Format("2006-01-02 15:04:05"), e.Kind, mdEscape(e.Summary))
				}
			}
			p("\n")
		}
	}

	p("## Daily figures\n\n")
	for _, x := range r.Pairs {
		p("### %s\n\n| Date | Availability | Good | Bad | No data | RTT p50 | RTT p95 | RTT p99 | Mean RTT | Loss |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n", mdEscape(x.Name()))
		for _, d := range x.Days {
			p("| %s | %s | %d | %d | %d | %s | %s | %s | %s | %s |\n", d.Date, fmtPct(d.AvailabilityPercent, 4), d.Good, d.Bad, d.NoData,
				fmtMs(d.RTT.P50), fmtMs(d.RTT.P95), fmtMs(d.RTT.P99), fmtMs(d.RTT.Mean), fmtPct(d.LossPercent, 4))
		}
		p("\n")
	}
	if len(r.Notes) > 0 {
		p("## Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// awsPath reports whether the pair's breach windows were checked against
// AWS state: only paths listed in sla.aws_paths are.
func (p *Pair) awsPath(r *Report) bool {
	for _, path := range r.AWSPaths {
		if path == p.Path {
			return true
		}
	}
	return false
}

// csvNum writes 10 significant digits: enough for any figure here, and it
// hides the float noise of summed counter increases (0.08999999999990299).
func csvNum(n Num) string {
	if !n.Valid() {
		return ""
	}
	return strconv.FormatFloat(float64(n), 'g', 10, 64)
}

// renderCSV writes four sections (pair, breach, day, comparison_day; and
// breach_event between breach and day when the agents' journals were read), each
// with its own header row; the first column names the section so a
// spreadsheet filter separates them.
func renderCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	i := strconv.Itoa
	rows := [][]string{{"section", "source_site", "target_site", "path", "segment", "objective_availability_percent", "objective_loss_percent", "objective_rtt_p95_seconds",
		"availability_percent", "status", "good_minutes", "bad_minutes", "no_data_minutes", "unreachable_minutes", "loss_minutes", "latency_minutes",
		"error_budget_used_percent", "rtt_p50_seconds", "rtt_p95_seconds", "rtt_p99_seconds", "rtt_mean_seconds", "loss_percent", "jitter_seconds", "breaches"}}
	for _, p := range r.Pairs {
		m := p.Minutes
		rows = append(rows, []string{"pair", p.Source, p.Target, p.Path, p.Segment, f(p.Objective.AvailabilityPercent), f(p.Objective.LossPercent), f(p.Objective.RTTP95Seconds),
			csvNum(p.AvailabilityPercent), p.Status, i(m.Good), i(m.Bad), i(m.NoData), i(m.Unreachable), i(m.Loss), i(m.Latency),
			csvNum(p.ErrorBudgetUsedPercent), csvNum(p.RTT.P50), csvNum(p.RTT.P95), csvNum(p.RTT.P99), csvNum(p.RTT.Mean), csvNum(p.LossPercent), csvNum(p.JitterSeconds), i(len(p.Breaches))})
	}
	rows = append(rows, nil, []string{"section", "source_site", "target_site", "path", "segment", "start", "end", "duration_seconds", "cause", "causes", "aws_state_changed", "aws_changes"})
	for _, p := range r.Pairs {
		for _, b := range p.Breaches {
			var ch []string
			for _, c := range b.AWSChanges {
				ch = append(ch, fmt.Sprintf("%s %s %s->%s", c.Time.UTC().Format(time.RFC3339), c.Resource, c.From, c.To))
			}
			rows = append(rows, []string{"breach", p.Source, p.Target, p.Path, p.Segment, b.Start.UTC().Format(time.RFC3339), b.End.UTC().Format(time.RFC3339),
				f(b.DurationSeconds), b.Cause, strings.Join(b.Causes, " "), strconv.FormatBool(b.AWSChanged), strings.Join(ch, "; ")})
		}
	}
	if len(r.EventSources) > 0 {
		rows = append(rows, nil, []string{"section", "source_site", "target_site", "path", "segment", "breach_start", "time", "kind", "summary", "agent"})
		for _, p := range r.Pairs {
			for _, b := range p.Breaches {
				for _, e := range b.Events {
					rows = append(rows, []string{"breach_event", p.Source, p.Target, p.Path, p.Segment, b.Start.UTC().Format(time.RFC3339),
						e.Time.UTC().Format(time.RFC3339Nano), e.Kind, e.Summary, e.Agent})
				}
			}
		}
	}
	rows = append(rows, nil, []string{"section", "source_site", "target_site", "path", "segment", "date", "availability_percent", "good_minutes", "bad_minutes", "no_data_minutes",
		"rtt_p50_seconds", "rtt_p95_seconds", "rtt_p99_seconds", "rtt_mean_seconds", "loss_percent"})
	for _, p := range r.Pairs {
		for _, d := range p.Days {
			rows = append(rows, []string{"day", p.Source, p.Target, p.Path, p.Segment, d.Date, csvNum(d.AvailabilityPercent), i(d.Good), i(d.Bad), i(d.NoData),
				csvNum(d.RTT.P50), csvNum(d.RTT.P95), csvNum(d.RTT.P99), csvNum(d.RTT.Mean), csvNum(d.LossPercent)})
		}
	}
	rows = append(rows, nil, []string{"section", "source_site", "target_site", "segment", "date", "sitelink_mean_seconds", "mpls_mean_seconds", "difference_percent", "better"})
	for _, c := range r.Comparisons {
		rows = append(rows, []string{"comparison", c.Source, c.Target, c.Segment, "period", csvNum(c.SitelinkMeanSeconds), csvNum(c.MPLSMeanSeconds), csvNum(c.DiffPercent), c.Better})
		for _, d := range c.Days {
			rows = append(rows, []string{"comparison_day", c.Source, c.Target, c.Segment, d.Date, csvNum(d.SitelinkMeanSeconds), csvNum(d.MPLSMeanSeconds), csvNum(d.DiffPercent), d.Better})
		}
	}
	if len(r.Comparisons) > 0 {
		rows = append(rows, []string{"comparison_all", "", "", "", "period", "", "", csvNum(r.PathDiffPercent), ""})
	}
	for _, row := range rows {
		if row == nil {
			if err := cw.Write([]string{}); err != nil {
				return err
			}
			continue
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
