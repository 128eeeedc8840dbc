package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"

	"github.com/alecthomas/kingpin/v2"
	"go.uber.org/zap"

	"github.com/probed/probed/agent"
	"github.com/probed/probed/config"
)

func newCheckConfigCommand(app *kingpin.Application) command {
	cmd := app.Command("check-config", "Validate a mesh file and print the resolved probe plan.")
	file := cmd.Flag("config.file", "Mesh file to check.").Default("probed.yaml").String()
	site := cmd.Flag("site", "The agent's site (overrides site: in the file; env PROBED_SITE).").Envar("PROBED_SITE").String()
	verbose := cmd.Flag("verbose", "List every probe, not only the totals.").Short('v').Bool()
	return command{name: "check-config", run: func(ctx context.Context) int {
		return checkConfig(ctx, os.Stdout, os.Stderr, *file, *site, *verbose)
	}}
}

func checkConfig(ctx context.Context, stdout, stderr io.Writer, file, site string, verbose bool) int {
	cfg, err := config.Load(file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	var found []config.Discovered
	if cfg.AWS != nil {
		found, err = agent.DiscoverTargets(ctx, cfg, site, zap.NewNop())
		if err != nil {
			fmt.Fprintf(stderr, "warning: AWS discovery: %v\n", err)
		}
	}
	plan, err := cfg.Plan(site, found...)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	printPlan(stdout, file, plan, verbose)
	return 0
}

func printPlan(w io.Writer, file string, plan *config.Plan, verbose bool) {
	s := plan.Summarize()
	fmt.Fprintf(w, "%s: OK\nsite %s: %d jobs, %.1f packets/s sent\n", file, s.Site, s.Total, s.TotalPPS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  KIND\tJOBS\tPACKETS/S")
	for _, k := range s.Kinds() {
		fmt.Fprintf(tw, "  %s\t%d\t%.2f\n", k, s.ByKind[k], s.PacketsPerS[k])
	}
	_ = tw.Flush() // to w, whose errors are the caller's
	fmt.Fprintln(w, "  (tcp: SYN, ACK and RST per probe; trace: about 18 TTLs × probes_per_hop per round; mtu: up to 14 sizes × (1+retries) per search)")
	if s.TraceCapped {
		fmt.Fprintf(w, "  trace rounds would send more than trace.pps allows: capped at %d packets/s, rounds take longer\n", plan.TracePPS)
	}
	discovered := 0
	for _, p := range plan.Probes {
		if p.Discovered {
			discovered++
		}
	}
	if discovered > 0 {
		fmt.Fprintf(w, "  of which discovered from AWS: %d\n", discovered)
	}
	fmt.Fprintf(w, "loss window: %d probes; down after %d consecutive losses\n", plan.LossWindow, plan.DownAfter)
	if !verbose && discovered == 0 {
		return
	}
	probes := append([]config.ProbeSpec(nil), plan.Probes...)
	sort.SliceStable(probes, func(i, j int) bool {
		a, b := &probes[i], &probes[j]
		if a.TargetSite != b.TargetSite {
			return a.TargetSite < b.TargetSite
		}
		return a.Key() < b.Key()
	})
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTARGET_SITE\tTARGET\tKIND\tPROTOCOL\tPORT\tPATH\tSEGMENT\tINTERVAL\tTIMEOUT\tORIGIN")
	for _, p := range probes {
		if !verbose && !p.Discovered {
			continue
		}
		origin := fmt.Sprintf("line %d", p.Line)
		if p.Discovered {
			origin = "discovered"
		}
		if p.Guard {
			origin += " (guard: expect unreachable)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.TargetSite, p.Target, p.Kind, p.Protocol, p.PortLabel(),
			p.Path, p.Segment, p.Interval, p.Timeout, origin)
	}
	_ = tw.Flush() // to w, whose errors are the caller's
}
