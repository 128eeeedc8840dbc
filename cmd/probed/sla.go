package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/probed/probed/config"
	"github.com/probed/probed/sla"
)

// newSLACommand registers `probed sla`: read Prometheus, write the SLA
// report for a month or a period. Exit 2 for bad flags or config, 1 when
// Prometheus cannot answer.
func newSLACommand(app *kingpin.Application) command {
	c := app.Command("sla", "Write the SLA report (availability, latency, loss, breach windows, path comparison) from Prometheus data.")
	f := &slaFlags{}
	c.Flag("prometheus.url", "Base URL of the Prometheus server holding the probed metrics.").Required().StringVar(&f.promURL)
	c.Flag("prometheus.config.file", "HTTP client settings for Prometheus, in Prometheus' http_config format (basic_auth, authorization, tls_config, proxy_url, …).").ExistingFileVar(&f.promCfg)
	c.Flag("month", "Report month, YYYY-MM (UTC).").StringVar(&f.month)
	c.Flag("from", "Period start (2026-10-01, 2026-10-01T08:00 or RFC 3339; UTC).").StringVar(&f.from)
	c.Flag("to", "Period end, exclusive (default: now).").StringVar(&f.to)
	c.Flag("config.file", "Mesh file whose sla: section holds the objectives (default objectives without it).").ExistingFileVar(&f.cfgFile)
	c.Flag("format", "Output format.").Default("markdown").EnumVar(&f.format, sla.Formats...)
	c.Flag("output", "Output file (default: standard output).").Short('o').StringVar(&f.output)
	c.Flag("query.chunk", "Span of one range query: smaller chunks mean smaller answers.").Default("24h").DurationVar(&f.chunk)
	c.Flag("query.timeout", "Timeout of one query.").Default("2m").DurationVar(&f.timeout)
	c.Flag("query.match", `Extra label matchers for the probe series, e.g. source_site="us-east".`).StringVar(&f.match)
	return command{name: "sla", run: func(ctx context.Context) int {
		return slaReport(ctx, os.Stdout, os.Stderr, f, time.Now())
	}}
}

type slaFlags struct {
	promURL, promCfg, month, from, to, cfgFile, format, output, match string
	chunk, timeout                                                    time.Duration
}

// slaReport builds and writes the report; the exit status is 2 for bad
// flags or files, 1 when Prometheus cannot answer.
func slaReport(ctx context.Context, stdout, stderr io.Writer, f *slaFlags, now time.Time) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "probed sla: "+format+"\n", a...)
		return code
	}
	start, end, err := sla.ParsePeriod(f.month, f.from, f.to, now)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	if err := sla.ValidateMatch(f.match); err != nil {
		return fail(exitConfig, "%v", err)
	}
	var objectives *config.SLAConfig
	if f.cfgFile != "" {
		cfg, err := config.Load(f.cfgFile)
		if err != nil {
			return fail(exitConfig, "%v", err)
		}
		objectives = &cfg.SLA
	}
	if f.format == "" {
		f.format = "markdown"
	}
	hc, err := sla.NewHTTPClient(f.promCfg)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	hc.Timeout = f.timeout
	client, err := sla.NewClient(f.promURL, hc)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	rep, err := sla.Build(ctx, client, sla.Options{From: start, To: end, Chunk: f.chunk, Match: f.match, SLA: objectives, Now: now})
	if err != nil {
		return fail(1, "%v", err)
	}
	// Render fully before writing, so a failure never leaves half a file.
	var buf bytes.Buffer
	if err := sla.Render(&buf, rep, f.format); err != nil {
		return fail(exitConfig, "rendering the report: %v", err)
	}
	if f.output == "" || f.output == "-" {
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			return fail(1, "writing the report: %v", err)
		}
		return 0
	}
	tmp := filepath.Join(filepath.Dir(f.output), "."+filepath.Base(f.output)+".tmp")
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fail(1, "writing the report: %v", err)
	}
	if err := os.Rename(tmp, f.output); err != nil {
		os.Remove(tmp)
		return fail(1, "writing the report: %v", err)
	}
	return 0
}
