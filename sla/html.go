package sla

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// The HTML report is one file: inline CSS and SVG, no scripts, no fonts, no
// external references, so it can be mailed or archived as it is.

var causeColor = map[string]string{"unreachable": "#c62828", "loss": "#ef6c00", "latency": "#6a1b9a"}

const (
	chartW   = 900.0
	labelW   = 300.0
	plotLeft = labelW + 10
	plotW    = chartW - plotLeft - 80 // room on the right for values
)

// availabilityChart draws one bar per pair on a scale that starts low
// enough to show the lowest value, with the objective as a tick.
func availabilityChart(r *Report) template.HTML {
	lo := 100.0
	for _, p := range r.Pairs {
		lo = math.Min(lo, p.Objective.AvailabilityPercent)
		if p.AvailabilityPercent.Valid() {
			lo = math.Min(lo, float64(p.AvailabilityPercent))
		}
	}
	floor := 0.0
	for _, f := range []float64{99.9, 99.5, 99, 98, 95, 90, 80, 50} {
		if lo > f {
			floor = f
			break
		}
	}
	x := func(v float64) float64 { return plotLeft + (math.Max(v, floor)-floor)/(100-floor)*plotW }
	const rowH = 28.0
	h := 30 + rowH*float64(len(r.Pairs)) + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart chart-availability" xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="Availability per pair against its objective">`, chartW, h, chartW, h)
	for i := 0; i <= 4; i++ {
		v := floor + (100-floor)*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="20" x2="%.1f" y2="%.1f" class="grid"/><text x="%.1f" y="%.1f" class="axis" text-anchor="middle">%s %%</text>`,
			x(v), x(v), h-25, x(v), h-8, trimFloat(v))
	}
	for i, p := range r.Pairs {
		y := 25 + rowH*float64(i)
		color := "#2e7d32"
		if p.Status == "breached" {
			color = "#c62828"
		}
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" class="label" text-anchor="end">%s</text>`, labelW, y+15, html.EscapeString(p.Name()))
		if p.AvailabilityPercent.Valid() {
			fmt.Fprintf(&b, `<rect class="bar" data-pair="%s" x="%g" y="%.1f" width="%.1f" height="%g" fill="%s"><title>%s: %s (objective %g %%)</title></rect>`,
				html.EscapeString(p.Name()), plotLeft, y, x(float64(p.AvailabilityPercent))-plotLeft, rowH-8, color,
				html.EscapeString(p.Name()), fmtPct(p.AvailabilityPercent, 4), p.Objective.AvailabilityPercent)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="value">%s</text>`, plotLeft+plotW+6, y+14, fmtPct(p.AvailabilityPercent, 3))
		} else {
			fmt.Fprintf(&b, `<text x="%g" y="%.1f" class="value">no data</text>`, plotLeft+4, y+14)
		}
		ox := x(p.Objective.AvailabilityPercent)
		fmt.Fprintf(&b, `<line class="objective" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"><title>objective %g %%</title></line>`, ox, y-3, ox, y+rowH-5, p.Objective.AvailabilityPercent)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// rttChart draws a pair's daily p50/p95/p99 with its p95 objective.
func rttChart(p *Pair) template.HTML {
	const h, top, bottom, left = 220.0, 15.0, 30.0, 60.0
	w := chartW - left - 20
	maxV := p.Objective.RTTP95Seconds
	for _, d := range p.Days {
		for _, v := range []Num{d.RTT.P50, d.RTT.P95, d.RTT.P99} {
			if v.Valid() {
				maxV = math.Max(maxV, float64(v))
			}
		}
	}
	maxV = niceCeil(maxV * 1.1)
	n := len(p.Days)
	x := func(i int) float64 {
		if n <= 1 {
			return left + w/2
		}
		return left + w*float64(i)/float64(n-1)
	}
	y := func(v float64) float64 { return top + (h-top-bottom)*(1-v/maxV) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart chart-rtt" data-pair="%s" xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="Daily RTT percentiles of %s">`,
		html.EscapeString(p.Name()), chartW, h, chartW, h, html.EscapeString(p.Name()))
	for i := 0; i <= 4; i++ {
		v := maxV * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" class="grid"/><text x="%g" y="%.1f" class="axis" text-anchor="end">%s ms</text>`,
			left, y(v), left+w, y(v), left-5, y(v)+4, trimFloat(v*1000))
	}
	for i, d := range p.Days {
		if i%7 == 0 || i == n-1 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%g" class="axis" text-anchor="middle">%s</text>`, x(i), h-10, d.Date[5:])
		}
	}
	oy := y(p.Objective.RTTP95Seconds)
	fmt.Fprintf(&b, `<line class="objective" x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke-dasharray="6 4"><title>p95 objective %g ms</title></line>`, left, oy, left+w, oy, p.Objective.RTTP95Seconds*1000)
	for _, s := range []struct {
		name, color string
		get         func(d *Day) Num
	}{
		{"p50", "#1565c0", func(d *Day) Num { return d.RTT.P50 }},
		{"p95", "#ef6c00", func(d *Day) Num { return d.RTT.P95 }},
		{"p99", "#c62828", func(d *Day) Num { return d.RTT.P99 }},
	} {
		var pts []string
		for i, d := range p.Days {
			if v := s.get(d); v.Valid() {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(float64(v))))
			}
		}
		fmt.Fprintf(&b, `<polyline class="series series-%s" fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>`, s.name, s.color, strings.Join(pts, " "), s.name)
	}
	fmt.Fprintf(&b, `<text x="%g" y="12" class="legend"><tspan fill="#1565c0">■ p50</tspan> <tspan fill="#ef6c00">■ p95</tspan> <tspan fill="#c62828">■ p99</tspan> <tspan fill="#444">┄ p95 objective</tspan></text>`, left+w-260)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// timelineChart draws every pair's breach windows (by cause) and no-data
// stretches over the period.
func timelineChart(r *Report) template.HTML {
	const rowH = 22.0
	h := 20 + rowH*float64(len(r.Pairs)) + 30
	span := r.To.Sub(r.From).Seconds()
	x := func(t time.Time) float64 { return plotLeft + t.Sub(r.From).Seconds()/span*plotW }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart chart-timeline" xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="Breach timeline">`, chartW, h, chartW, h)
	days := int(math.Ceil(span / 86400))
	for d := 0; d <= days; d += max(1, days/6) {
		t := r.From.Add(time.Duration(d) * 24 * time.Hour)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="15" x2="%.1f" y2="%.1f" class="grid"/><text x="%.1f" y="%.1f" class="axis" text-anchor="middle">%s</text>`,
			x(t), x(t), h-25, x(t), h-8, t.Format("01-02"))
	}
	for i, p := range r.Pairs {
		y := 20 + rowH*float64(i)
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" class="label" text-anchor="end">%s</text><rect x="%g" y="%.1f" width="%g" height="%g" class="lane"/>`,
			labelW, y+13, html.EscapeString(p.Name()), plotLeft, y, plotW, rowH-6)
		for _, run := range p.noDataRuns(r) {
			fmt.Fprintf(&b, `<rect class="nodata" x="%.1f" y="%.1f" width="%.1f" height="%g"><title>no data %s – %s</title></rect>`,
				x(run[0]), y, math.Max(1.5, x(run[1])-x(run[0])), rowH-6, fmtTime(run[0]), fmtTime(run[1]))
		}
		for _, br := range p.Breaches {
			fmt.Fprintf(&b, `<rect class="breach" data-cause="%s" x="%.1f" y="%.1f" width="%.1f" height="%g" fill="%s"><title>%s – %s %s (%s)</title></rect>`,
				br.Cause, x(br.Start), y, math.Max(1.5, x(br.End)-x(br.Start)), rowH-6, causeColor[br.Cause],
				fmtTime(br.Start), fmtTime(br.End), br.Cause, fmtDur(br.DurationSeconds))
			if br.AWSChanged {
				fmt.Fprintf(&b, `<path class="aws-mark" d="M%.1f %.1f l4 -6 l-8 0 z" fill="#000"><title>AWS state changed</title></path>`, x(br.Start), y)
			}
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// noDataRuns lists the stretches of minutes without data.
func (p *Pair) noDataRuns(r *Report) [][2]time.Time {
	step := time.Duration(r.StepSeconds * float64(time.Second))
	var out [][2]time.Time
	for i := 0; i < len(p.status); i++ {
		if p.status[i] != stNoData {
			continue
		}
		j := i
		for j < len(p.status) && p.status[j] == stNoData {
			j++
		}
		out = append(out, [2]time.Time{r.From.Add(time.Duration(i) * step), r.From.Add(time.Duration(j) * step)})
		i = j
	}
	return out
}

// compareChart draws sitelink's daily difference from mpls (below the
// line: sitelink faster).
func compareChart(c *Comparison) template.HTML {
	const h, top, bottom, left = 180.0, 10.0, 25.0, 60.0
	w := chartW - left - 20
	m := 1.0
	for _, d := range c.Days {
		if d.DiffPercent.Valid() {
			m = math.Max(m, math.Abs(float64(d.DiffPercent)))
		}
	}
	m = niceCeil(m * 1.1)
	mid := top + (h-top-bottom)/2
	y := func(v float64) float64 { return mid - v/m*(h-top-bottom)/2 }
	bw := w / float64(max(1, len(c.Days)))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart chart-compare" xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" viewBox="0 0 %g %g" role="img" aria-label="Daily latency difference sitelink vs mpls">`, chartW, h, chartW, h)
	for _, v := range []float64{-m, 0, m} {
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" class="grid"/><text x="%g" y="%.1f" class="axis" text-anchor="end">%+g %%</text>`, left, y(v), left+w, y(v), left-5, y(v)+4, v)
	}
	for i, d := range c.Days {
		if !d.DiffPercent.Valid() {
			continue
		}
		v := float64(d.DiffPercent)
		color := "#2e7d32"
		if v > 0 {
			color = "#c62828"
		}
		top := math.Min(y(v), mid)
		fmt.Fprintf(&b, `<rect class="diff" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %s (%s better)</title></rect>`,
			left+bw*float64(i)+1, top, math.Max(1, bw-2), math.Max(0.5, math.Abs(y(v)-mid)), color, d.Date, fmtSigned(d.DiffPercent), d.Better)
		if i%7 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%g" class="axis" text-anchor="middle">%s</text>`, left+bw*(float64(i)+0.5), h-6, d.Date[5:])
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms": fmtMs, "pct": fmtPct, "signed": fmtSigned, "time": fmtTime, "dur": fmtDur, "objective": objectiveText,
	"availabilityChart": availabilityChart, "rttChart": rttChart, "timelineChart": timelineChart, "compareChart": compareChart,
	"aws":      func(b *Breach, r *Report, p *Pair) string { return awsText(b, r.AWSState, p.awsPath(r)) },
	"color":    func(c string) template.CSS { return template.CSS("color:" + causeColor[c]) },
	"join":     strings.Join,
	"evtime":   func(t time.Time) string { return t.UTC().Format("15:04:05") },
	"headline": pathHeadline,
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SLA report {{time .R.From}} – {{time .R.To}} UTC</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.85em}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.met{color:#2e7d32;font-weight:600}.breached{color:#c62828;font-weight:600}
.def{background:#f8f8f8;border-left:4px solid #999;padding:.5em 1em;font-size:.9em}
svg.chart{display:block;margin:.5em 0;max-width:100%;height:auto}
svg .grid{stroke:#e0e0e0;stroke-width:1}svg .axis{font-size:11px;fill:#666}svg .label{font-size:12px;fill:#222}
svg .value{font-size:11px;fill:#222}svg .objective{stroke:#222;stroke-width:2}svg .lane{fill:#e8f5e9}svg .nodata{fill:#bdbdbd}
svg .legend{font-size:12px}details{margin:.3em 0}td.events ul{margin:0;padding-left:1.2em}
</style></head><body>
<h1>SLA report {{time .R.From}} – {{time .R.To}} UTC</h1>
<p>Source: Prometheus at <code>{{.R.Prometheus}}</code>, generated {{time .R.Generated}} UTC, one judgement per {{.Step}}.</p>
<p class="def"><b>Definition.</b> {{.R.Definition}}</p>
<p class="def"><b>RTT resolution.</b> {{.R.RTTResolution}}.</p>

<h2>Availability against objective</h2>
{{availabilityChart .R}}
<table><tr><th class="l">Pair</th><th class="l">Objective</th><th>Availability</th><th class="l">Status</th><th>Good</th><th>Bad</th><th>No data</th><th>Error budget used</th><th>p50</th><th>p95</th><th>p99</th><th>Mean loss</th><th>Jitter</th><th>Breaches</th></tr>
{{range .R.Pairs}}<tr><td class="l">{{.Name}}</td><td class="l">{{objective .Objective}}</td><td>{{pct .AvailabilityPercent 4}}</td><td class="l {{if eq .Status "met"}}met{{else if eq .Status "breached"}}breached{{end}}">{{.Status}}</td><td>{{.Minutes.Good}}</td><td>{{.Minutes.Bad}}</td><td>{{.Minutes.NoData}}</td><td>{{pct .ErrorBudgetUsedPercent 1}}</td><td>{{ms .RTT.P50}}</td><td>{{ms .RTT.P95}}</td><td>{{ms .RTT.P99}}</td><td>{{pct .LossPercent 4}}</td><td>{{ms .JitterSeconds}}</td><td>{{len .Breaches}}</td></tr>
{{end}}</table>
<p>{{.NoData}} minutes had no data and are counted neither good nor bad.</p>

<h2>Breach timeline</h2>
<p><span style="color:#c62828">■ unreachable</span> <span style="color:#ef6c00">■ loss</span> <span style="color:#6a1b9a">■ latency</span> <span style="color:#9e9e9e">■ no data</span> ▼ AWS state changed</p>
{{timelineChart .R}}

<h2>Daily RTT percentiles</h2>
{{range .R.Pairs}}<h3>{{.Name}}</h3>
{{rttChart .}}{{end}}

{{if .R.Comparisons}}<h2>Path comparison: sitelink vs mpls</h2>
<p>Mean RTT per path; the difference is sitelink against mpls (negative: sitelink is faster).</p>
<table><tr><th class="l">Pair</th><th class="l">Segment</th><th>sitelink mean</th><th>mpls mean</th><th>Difference</th><th class="l">Better</th><th>Days sitelink better</th><th>Days mpls better</th></tr>
{{range .R.Comparisons}}<tr><td class="l">{{.Source}} → {{.Target}}</td><td class="l">{{.Segment}}</td><td>{{ms .SitelinkMeanSeconds}}</td><td>{{ms .MPLSMeanSeconds}}</td><td>{{signed .DiffPercent}}</td><td class="l">{{.Better}}</td><td>{{.DaysSitelinkBetter}}</td><td>{{.DaysMPLSBetter}}</td></tr>
{{end}}</table>
<p class="headline">{{headline .R}}</p>
{{range .R.Comparisons}}<h3>{{.Source}} → {{.Target}} {{.Segment}}: daily difference</h3>
{{compareChart .}}
<details><summary>Per day</summary><table><tr><th class="l">Date</th><th>sitelink</th><th>mpls</th><th>Difference</th><th class="l">Better</th></tr>
{{range .Days}}<tr><td class="l">{{.Date}}</td><td>{{ms .SitelinkMeanSeconds}}</td><td>{{ms .MPLSMeanSeconds}}</td><td>{{signed .DiffPercent}}</td><td class="l">{{.Better}}</td></tr>
{{end}}</table></details>{{end}}{{end}}

<h2>Breach windows</h2>
{{$r := .R}}{{range .R.Pairs}}{{$p := .}}<h3>{{.Name}}</h3>
{{if .Breaches}}<table><tr><th class="l">Start</th><th class="l">End</th><th>Duration</th><th class="l">Cause</th><th class="l">AWS state changed</th>{{if $r.EventSources}}<th class="l">Events</th>{{end}}</tr>
{{range .Breaches}}<tr class="breach-row"><td class="l">{{time .Start}}</td><td class="l">{{time .End}}</td><td>{{dur .DurationSeconds}}</td><td class="l" style="{{color .Cause}}">{{.Cause}}{{if gt (len .Causes) 1}} ({{join .Causes ", "}}){{end}}</td><td class="l">{{aws . $r $p}}</td>{{if $r.EventSources}}<td class="l events">{{if .Events}}<ul>{{range .Events}}<li data-kind="{{.Kind}}"><code>{{evtime .Time}}</code> <b>{{.Kind}}</b> {{.Summary}}</li>{{end}}</ul>{{else}}none recorded{{end}}</td>{{end}}</tr>
{{end}}</table>{{else}}<p>No breach.</p>{{end}}{{end}}

<h2>Daily figures</h2>
{{range .R.Pairs}}<details><summary>{{.Name}}</summary><table><tr><th class="l">Date</th><th>Availability</th><th>Good</th><th>Bad</th><th>No data</th><th>p50</th><th>p95</th><th>p99</th><th>Mean</th><th>Loss</th></tr>
{{range .Days}}<tr><td class="l">{{.Date}}</td><td>{{pct .AvailabilityPercent 4}}</td><td>{{.Good}}</td><td>{{.Bad}}</td><td>{{.NoData}}</td><td>{{ms .RTT.P50}}</td><td>{{ms .RTT.P95}}</td><td>{{ms .RTT.P99}}</td><td>{{ms .RTT.Mean}}</td><td>{{pct .LossPercent 4}}</td></tr>
{{end}}</table></details>
{{end}}
{{if .R.Notes}}<h2>Notes</h2><ul>{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
</body></html>
`))

func renderHTML(w io.Writer, r *Report) error {
	noData := 0
	for _, p := range r.Pairs {
		noData += p.Minutes.NoData
	}
	return htmlTmpl.Execute(w, struct {
		R      *Report
		Step   string
		NoData int
	}{r, stepText(r), noData})
}
