package main

import (
	"bytes"
	"context"
	"fmt"
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
	promURL := c.Flag("prometheus.url", "Base URL of the Prometheus server holding the probed metrics.").Required().String()
	promCfg := c.Flag("prometheus.config.file", "HTTP client settings for Prometheus, in Prometheus' http_config format (basic_auth, authorization, tls_config, proxy_url, …).").ExistingFile()
	month := c.Flag("month", "Report month, YYYY-MM (UTC).").String()
	from := c.Flag("from", "Period start (2026-10-01, 2026-10-01T08:00 or RFC 3339; UTC).").String()
	to := c.Flag("to", "Period end, exclusive (default: now).").String()
	cfgFile := c.Flag("config.file", "Mesh file whose sla: section holds the objectives (default objectives without it).").ExistingFile()
	format := c.Flag("format", "Output format.").Default("markdown").Enum(sla.Formats...)
	output := c.Flag("output", "Output file (default: standard output).").Short('o').String()
	chunk := c.Flag("query.chunk", "Span of one range query: smaller chunks mean smaller answers.").Default("24h").Duration()
	timeout := c.Flag("query.timeout", "Timeout of one query.").Default("2m").Duration()
	match := c.Flag("query.match", `Extra label matchers for the probe series, e.g. source_site="us-east".`).String()

	return command{name: "sla", run: func(ctx context.Context) int {
		fail := func(code int, format string, a ...any) int {
			fmt.Fprintf(os.Stderr, "probed sla: "+format+"\n", a...)
			return code
		}
		start, end, err := sla.ParsePeriod(*month, *from, *to, time.Now())
		if err != nil {
			return fail(exitConfig, "%v", err)
		}
		var objectives *config.SLAConfig
		if *cfgFile != "" {
			cfg, err := config.Load(*cfgFile)
			if err != nil {
				return fail(exitConfig, "%v", err)
			}
			objectives = &cfg.SLA
		}
		hc, err := sla.NewHTTPClient(*promCfg)
		if err != nil {
			return fail(exitConfig, "%v", err)
		}
		hc.Timeout = *timeout
		client, err := sla.NewClient(*promURL, hc)
		if err != nil {
			return fail(exitConfig, "%v", err)
		}
		rep, err := sla.Build(ctx, client, sla.Options{From: start, To: end, Chunk: *chunk, Match: *match, SLA: objectives})
		if err != nil {
			return fail(1, "%v", err)
		}
		// Render fully before writing, so a failure never leaves half a file.
		var buf bytes.Buffer
		if err := sla.Render(&buf, rep, *format); err != nil {
			return fail(1, "rendering the report: %v", err)
		}
		if *output == "" || *output == "-" {
			if _, err := os.Stdout.Write(buf.Bytes()); err != nil {
				return fail(1, "writing the report: %v", err)
			}
			return 0
		}
		tmp := filepath.Join(filepath.Dir(*output), "."+filepath.Base(*output)+".tmp")
		if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
			return fail(1, "writing the report: %v", err)
		}
		if err := os.Rename(tmp, *output); err != nil {
			os.Remove(tmp)
			return fail(1, "writing the report: %v", err)
		}
		return 0
	}}
}
