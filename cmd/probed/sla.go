package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
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
	c.Flag("events.url", "An agent whose event journal names the events in the breach windows, e.g. http://10.79.1.1:9447 (repeat for several).").StringsVar(&f.eventURLs)
	c.Flag("events.from-config", "Read the events of every sites[].agent of --config.file (with --events.scheme and --events.port).").BoolVar(&f.eventsFromConfig)
	c.Flag("events.scheme", "Scheme of the agents for --events.from-config: http or https.").Default("http").StringVar(&f.eventScheme)
	c.Flag("events.port", "Web port of the agents for --events.from-config.").Default("9447").IntVar(&f.eventPort)
	c.Flag("events.http-config.file", "HTTP client settings for the agents, in Prometheus' http_config format (basic_auth, tls_config, …).").ExistingFileVar(&f.eventHTTPCfg)
	return command{name: "sla", run: func(ctx context.Context) int {
		return slaReport(ctx, os.Stdout, os.Stderr, f, time.Now())
	}}
}

type slaFlags struct {
	promURL, promCfg, month, from, to, cfgFile, format, output, match string
	chunk, timeout                                                    time.Duration

	eventURLs        []string
	eventsFromConfig bool
	eventScheme      string
	eventPort        int
	eventHTTPCfg     string
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
	var cfg *config.Config
	if f.cfgFile != "" {
		var err error
		if cfg, err = config.Load(f.cfgFile); err != nil {
			return fail(exitConfig, "%v", err)
		}
		objectives = &cfg.SLA
	}
	agents, err := f.eventAgents(cfg)
	if err != nil {
		return fail(exitConfig, "%v", err)
	}
	var eventsClient *http.Client
	if len(agents) > 0 {
		if eventsClient, err = sla.NewHTTPClient(f.eventHTTPCfg); err != nil {
			return fail(exitConfig, "--events.http-config.file: %v", err)
		}
		eventsClient.Timeout = f.timeout
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
	if len(agents) > 0 {
		srcs, evs := sla.FetchEvents(ctx, eventsClient, agents, rep.From, rep.To)
		for _, s := range srcs {
			if s.Error != "" {
				fmt.Fprintf(stderr, "probed sla: events of %s: %s (the report says so)\n", s.URL, s.Error)
			}
		}
		sla.AttachEvents(rep, srcs, evs)
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

// eventAgents lists the agents whose journals the report reads: the
// --events.url flags, and with --events.from-config every sites[].agent of
// the mesh file.
func (f *slaFlags) eventAgents(cfg *config.Config) ([]string, error) {
	var out []string
	for _, u := range f.eventURLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("--events.url=%q: want http:// or https:// and the agent's address, e.g. http://10.79.1.1:9447", u)
		}
		out = append(out, u)
	}
	if !f.eventsFromConfig {
		return out, nil
	}
	if cfg == nil {
		return nil, fmt.Errorf("--events.from-config needs --config.file (the mesh file with sites[].agent)")
	}
	if f.eventScheme != "http" && f.eventScheme != "https" {
		return nil, fmt.Errorf("--events.scheme=%q: want http or https", f.eventScheme)
	}
	if f.eventPort < 1 || f.eventPort > 65535 {
		return nil, fmt.Errorf("--events.port=%d: not a port", f.eventPort)
	}
	n := len(out)
	for _, s := range cfg.Sites {
		if s.Agent != "" {
			out = append(out, f.eventScheme+"://"+net.JoinHostPort(s.Agent, strconv.Itoa(f.eventPort)))
		}
	}
	if len(out) == n {
		return nil, fmt.Errorf("--events.from-config: %s names no sites[].agent", f.cfgFile)
	}
	return out, nil
}
