package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"go.uber.org/zap"

	"github.com/probed/probed/agent"
	"github.com/probed/probed/config"
	"github.com/probed/probed/exporter"
	"github.com/probed/probed/probe/ecmp"
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
	printFlows(w, plan)
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
		if p.Flows > 1 && (p.Kind == config.KindICMP || p.Kind == config.KindTCP) {
			origin += fmt.Sprintf(" (%d flows)", p.Flows)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.TargetSite, p.Target, p.Kind, p.Protocol, p.PortLabel(),
			p.Path, p.Segment, p.Interval, p.Timeout, origin)
	}
	_ = tw.Flush() // to w, whose errors are the caller's
}

// flowMembers are the ECMP/LAG widths check-config shows coverage for: the
// mesh file does not say how many member paths a path has.
var flowMembers = []int{2, 4, 8}

// printFlows shows what the jobs with flows: N > 1 cost and buy
// (docs/ecmp.md): the packet rate is unchanged, each flow is probed every
// interval × N, the flow window holds so many probes per flow; the chance
// that an ECMP group or LAG of M members has a member no flow takes (and
// that one given member, the bad one, has none), and the smallest loss on
// a member carrying its share of the flows that one window flags.
func printFlows(w io.Writer, plan *config.Plan) {
	type row struct {
		flows    int
		interval time.Duration
	}
	jobs := map[row]int{}
	var kinds [config.NumKinds]int
	var traceMax, tracePer int
	for i := range plan.Probes {
		p := &plan.Probes[i]
		if p.Flows <= 1 || (p.Kind != config.KindICMP && p.Kind != config.KindTCP) {
			continue
		}
		jobs[row{p.Flows, p.Interval}]++
		kinds[p.Kind]++
		traceMax, tracePer = p.TraceOpts.MaxTTL, p.TraceOpts.ProbesPerHop
	}
	if len(jobs) == 0 {
		return
	}
	rows := make([]row, 0, len(jobs))
	for r := range jobs {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].flows != rows[j].flows {
			return rows[i].flows < rows[j].flows
		}
		return rows[i].interval < rows[j].interval
	})
	fmt.Fprintf(w, "flows: %d ICMP and %d TCP jobs probe over several flows; their packet rate is unchanged (the flows take turns)\n",
		kinds[config.KindICMP], kinds[config.KindTCP])
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FLOWS\tINTERVAL\tJOBS\tFLOW_INTERVAL\tWINDOW\tPROBES/FLOW\tTRACE_PACKETS/ROUND")
	for _, r := range rows {
		win := exporter.FlowWindowFor(r.flows, r.interval)
		c := ecmp.CostOf(r.flows, 2, r.interval, win, ecmp.DefaultOptions())
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%s\t%.0f\t~%d\n", r.flows, r.interval, jobs[r], c.FlowInterval, win, c.ProbesPerFlow,
			r.flows*min(18, traceMax)*tracePer)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "  (member-path traces: every flow once at start, hourly, and when loss concentrates, within trace.pps)")
	cost := func(r row, m int) ecmp.Cost {
		return ecmp.CostOf(r.flows, m, r.interval, exporter.FlowWindowFor(r.flows, r.interval), ecmp.DefaultOptions())
	}
	table := func(title string, cell func(r row, c ecmp.Cost) string) {
		fmt.Fprintln(w, title)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		head := "  FLOWS\tINTERVAL"
		for _, m := range flowMembers {
			head += fmt.Sprintf("\tM=%d", m)
		}
		fmt.Fprintln(tw, head)
		for _, r := range rows {
			line := fmt.Sprintf("  %d\t%s", r.flows, r.interval)
			for _, m := range flowMembers {
				line += "\t" + cell(r, cost(r, m))
			}
			fmt.Fprintln(tw, line)
		}
		_ = tw.Flush()
	}
	table("  coverage of a path of M members (the mesh file does not say M): chance that some member gets no flow (that one given member gets none)",
		func(_ row, c ecmp.Cost) string { return prob(c.MissAny) + " (" + prob(c.MissOne) + ")" })
	table("  smallest loss on one member (carrying flows/M of the flows) that one window flags (docs/ecmp.md)",
		func(_ row, c ecmp.Cost) string {
			if c.MinLossMember == 0 {
				return "not in one window"
			}
			return fmt.Sprintf("%.0f%%", 100*c.MinLossMember)
		})
}

// prob prints a probability: a percentage down to 0.1%, then a power of ten.
func prob(p float64) string {
	switch {
	case p == 0:
		return "0"
	case p >= 0.001:
		return fmt.Sprintf("%.3g%%", 100*p)
	}
	return fmt.Sprintf("%.0e", p)
}
