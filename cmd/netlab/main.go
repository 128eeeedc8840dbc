// Command netlab runs the user-space WAN lab (internal/netlab) and changes
// it at run time:
//
//	netlab up                       the 7-site lab, until Ctrl-C
//	netlab demo                     the lab plus one probed per site and Prometheus
//	netlab set --from us-east --to eu-frankfurt --path sitelink --delay 40ms --loss 1%
//	netlab show                     every path with its parameters and counters
//	netlab set --from us-east --to eu-frankfurt --path sitelink --members 4
//	netlab set --from us-east --to eu-frankfurt --path sitelink --member 2 --loss 30% --hops 10.90.17.1,10.90.17.32
//	netlab block --from us-east --addr 10.77.3.65 [--open]
//	netlab clean                    remove namespaces left by a crashed lab
//
// up and demo serve a control API on a unix socket; set, show and block
// talk to it. See docs/lab.md.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/probed/probed/internal/netlab"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	app := kingpin.New("netlab", "User-space WAN lab: one namespace per site, delay/loss/jitter/hops/MTU per path.")
	app.HelpFlag.Short('h')
	control := app.Flag("control", "Control socket of the running lab.").Default(netlab.DefaultControlSocket).String()

	up := app.Command("up", "Run the lab until Ctrl-C.")
	upSites := up.Flag("sites", "Comma-separated subset of the reference sites (default: all seven).").String()
	upPrefix := up.Flag("prefix", "Namespace name prefix (must start with "+netlab.NSPrefix+").").Default(netlab.NSPrefix).String()

	demo := app.Command("demo", "Run the lab with one probed per site (and Prometheus if installed) until Ctrl-C.")
	df := demoFlags{}
	demo.Flag("probed", "probed binary (default: build ./cmd/probed).").StringVar(&df.probed)
	demo.Flag("mesh", "Mesh file the agents load.").Default("configs/example-mesh.yaml").StringVar(&df.mesh)
	demo.Flag("prometheus", "Prometheus binary; empty or missing: no Prometheus.").Default("prometheus").StringVar(&df.prometheus)
	demo.Flag("prometheus.listen", "Where the demo's Prometheus listens.").Default("127.0.0.1:9490").StringVar(&df.promListen)
	demo.Flag("metrics.base-port", "Agent n is forwarded to 127.0.0.1:<base+n>.").Default("19440").IntVar(&df.basePort)
	demo.Flag("aws", "Start the AWS test server (internal/awstest) and let the agents poll it.").Default("true").BoolVar(&df.aws)
	demo.Flag("aws.listen", "Where the AWS test server listens on the host.").Default("127.0.0.1:4599").StringVar(&df.awsListen)

	set := app.Command("set", "Change paths of the running lab (only the flags given).")
	sf := setFlags{}
	set.Flag("from", "Source site (default: every site).").StringVar(&sf.from)
	set.Flag("to", "Destination site (default: every site).").StringVar(&sf.to)
	set.Flag("path", "Path: sitelink, mpls, ... (default: every path).").StringVar(&sf.path)
	set.Flag("both", "Also the return direction.").BoolVar(&sf.both)
	set.Flag("delay", "One-way delay, e.g. 40ms.").StringVar(&sf.delay)
	set.Flag("jitter", "Uniform jitter ±, e.g. 2ms.").StringVar(&sf.jitter)
	set.Flag("reorder", "Let jitter reorder packets (--no-reorder keeps order).").IsSetByUser(&sf.reorderSet).BoolVar(&sf.reorder)
	set.Flag("loss", "Random loss: 1% or 0.01.").StringVar(&sf.loss)
	set.Flag("down", "Blackhole the path (--no-down brings it back).").IsSetByUser(&sf.downSet).BoolVar(&sf.down)
	set.Flag("hops", "Intermediate hop addresses, comma-separated (\"\" for none).").IsSetByUser(&sf.hopsSet).StringVar(&sf.hops)
	set.Flag("mtu", "Path MTU in bytes (0: none).").IsSetByUser(&sf.mtuSet).IntVar(&sf.mtu)
	set.Flag("mtu-blackhole", "Drop too-big packets silently.").IsSetByUser(&sf.bhSet).BoolVar(&sf.blackhole)
	set.Flag("dscp", "Rewrite DSCP to this value (0-63), or \"none\".").StringVar(&sf.dscp)
	set.Flag("members", "Make the path an ECMP group / LAG of N member paths, chosen per flow by a 5-tuple hash (0: single path).").IsSetByUser(&sf.membersSet).IntVar(&sf.members)
	set.Flag("member", "Apply --delay, --jitter, --loss, --down, --hops to this member (0-based) instead of the path; delay and jitter add to the path's.").IsSetByUser(&sf.memberSet).IntVar(&sf.member)

	show := app.Command("show", "Show every path with its parameters and counters (and each member path's).")
	var shf showFilter
	show.Flag("from", "Only paths from this site.").StringVar(&shf.from)
	show.Flag("to", "Only paths to this site.").StringVar(&shf.to)
	show.Flag("path", "Only this path.").StringVar(&shf.path)
	show.Flag("json", "Print the control API's JSON (parameters, counters, members) instead of a table.").BoolVar(&shf.json)

	block := app.Command("block", "Close (or --open) a segmentation boundary: drop traffic from a site to one address.")
	blockFrom := block.Flag("from", "Source site.").Required().String()
	blockAddr := block.Flag("addr", "Destination address.").Required().String()
	blockOpen := block.Flag("open", "Open the boundary again.").Bool()

	clean := app.Command("clean", "Remove lab namespaces left by a crashed lab (only "+netlab.NSPrefix+"* names whose owner is gone).")

	cmd, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "netlab: %v (see --help)\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case up.FullCommand():
		err = runUp(ctx, *control, *upSites, *upPrefix)
	case demo.FullCommand():
		err = runDemo(ctx, *control, df)
	case set.FullCommand():
		err = runSet(ctx, *control, sf)
	case show.FullCommand():
		err = runShow(ctx, *control, shf)
	case block.FullCommand():
		err = runBlock(ctx, *control, *blockFrom, *blockAddr, !*blockOpen)
	case clean.FullCommand():
		var removed []string
		removed, err = netlab.CleanStale()
		for _, n := range removed {
			fmt.Println("removed", n)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "netlab: %v\n", err)
		return 1
	}
	return 0
}

// topology returns the reference topology or a subset of it.
func topology(sites, prefix string) (netlab.Topology, error) {
	t := netlab.DefaultTopology()
	t.Prefix = prefix
	if sites == "" {
		return t, nil
	}
	return t.Subset(strings.Split(sites, ",")...)
}

func runUp(ctx context.Context, control, sites, prefix string) error {
	topo, err := topology(sites, prefix)
	if err != nil {
		return err
	}
	lab, err := netlab.Start(ctx, topo)
	if err != nil {
		return err
	}
	defer func() { _ = lab.Close() }()
	errc := make(chan error, 1)
	go func() { errc <- lab.ServeControl(ctx, control) }()
	printSites(lab)
	fmt.Printf("\ncontrol socket: %s (netlab set/show/block)\nCtrl-C stops the lab and removes its namespaces.\n", control)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil {
			return err
		}
	}
	return lab.Close()
}

func printSites(lab *netlab.Lab) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SITE\tNAMESPACE\tADDRESSES")
	for _, s := range lab.Sites() {
		var as []string
		for _, a := range s.Addrs() {
			as = append(as, a.Addr.String()+"("+a.Path+")")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", s.Name(), s.NetNS(), strings.Join(as, " "))
	}
	_ = w.Flush() // stdout
}

type setFlags struct {
	from, to, path, delay, jitter, loss, hops, dscp string
	both, reorder, down, blackhole                  bool
	mtu, members, member                            int
	reorderSet, downSet, hopsSet, mtuSet, bhSet     bool
	membersSet, memberSet                           bool
}

// patch turns the flags into a PathPatch; only flags given change anything.
func (f setFlags) patch() (netlab.PathPatch, error) {
	pp := netlab.PathPatch{From: f.from, To: f.to, Path: f.path, Both: f.both}
	dur := func(name, s string) (*netlab.Duration, error) {
		if s == "" {
			return nil, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("--%s %q: want a duration such as 40ms", name, s)
		}
		v := netlab.Duration(d)
		return &v, nil
	}
	var err error
	if pp.Delay, err = dur("delay", f.delay); err != nil {
		return pp, err
	}
	if pp.Jitter, err = dur("jitter", f.jitter); err != nil {
		return pp, err
	}
	if f.loss != "" {
		s, pct := strings.CutSuffix(f.loss, "%")
		v, err := strconv.ParseFloat(s, 64)
		if pct {
			v /= 100
		}
		if err != nil || v < 0 || v > 1 {
			return pp, fmt.Errorf("--loss %q: want a percentage such as 1%% or a probability such as 0.01", f.loss)
		}
		pp.Loss = &v
	}
	if f.reorderSet {
		pp.Reorder = &f.reorder
	}
	if f.downSet {
		pp.Down = &f.down
	}
	if f.bhSet {
		pp.MTUBlackhole = &f.blackhole
	}
	if f.mtuSet {
		pp.MTU = &f.mtu
	}
	if f.hopsSet {
		hops := []netip.Addr{}
		for _, h := range strings.Split(f.hops, ",") {
			if h = strings.TrimSpace(h); h == "" {
				continue
			}
			a, err := netip.ParseAddr(h)
			if err != nil {
				return pp, fmt.Errorf("--hops: %q is not an IP address", h)
			}
			hops = append(hops, a)
		}
		pp.Hops = &hops
	}
	if f.dscp != "" {
		v := -1
		if f.dscp != "none" {
			n, err := strconv.Atoi(f.dscp)
			if err != nil || n < 0 || n > 63 {
				return pp, fmt.Errorf("--dscp %q: want 0..63 or none", f.dscp)
			}
			v = n
		}
		pp.DSCP = &v
	}
	if f.membersSet {
		if f.members < 0 || f.members > netlab.MaxMembers {
			return pp, fmt.Errorf("--members %d: want 0..%d", f.members, netlab.MaxMembers)
		}
		pp.Members = &f.members
	}
	if f.memberSet {
		if f.member < 0 || f.member >= netlab.MaxMembers {
			return pp, fmt.Errorf("--member %d: want 0..%d", f.member, netlab.MaxMembers-1)
		}
		if pp.Reorder != nil || pp.MTU != nil || pp.MTUBlackhole != nil || pp.DSCP != nil {
			return pp, fmt.Errorf("--member: --reorder, --mtu, --mtu-blackhole and --dscp belong to the path, not to a member")
		}
		pp.Member = &f.member
	}
	return pp, nil
}

func runSet(ctx context.Context, control string, f setFlags) error {
	pp, err := f.patch()
	if err != nil {
		return err
	}
	keys, err := netlab.NewClient(control).Patch(ctx, pp)
	if err != nil {
		return err
	}
	for _, k := range keys {
		fmt.Println("set", k)
	}
	return nil
}

type showFilter struct {
	from, to, path string
	json           bool
}

func (f showFilter) keep(l netlab.LinkState) bool {
	return (f.from == "" || f.from == l.From) && (f.to == "" || f.to == l.To) && (f.path == "" || f.path == l.Path)
}

func runShow(ctx context.Context, control string, f showFilter) error {
	all, err := netlab.NewClient(control).Links(ctx)
	if err != nil {
		return err
	}
	var links []netlab.LinkState
	for _, l := range all {
		if f.keep(l) {
			links = append(links, l)
		}
	}
	if f.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(links)
	}
	return showTable(os.Stdout, links)
}

// showTable prints one row per path and, under a path with members, one
// row per member: what it adds to the path, its hops and its counters.
func showTable(out io.Writer, links []netlab.LinkState) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FROM\tTO\tPATH\tDELAY\tJITTER\tLOSS\tDOWN\tMTU\tDSCP\tHOPS\tPACKETS\tDELIVERED\tLOST\tDROPPED\tTTL-EXPIRED")
	for _, l := range links {
		mtu, dscp := "-", "-"
		if l.MTU > 0 {
			mtu = strconv.Itoa(l.MTU)
			if l.MTUBlackhole {
				mtu += " (black hole)"
			}
		}
		if l.DSCP != nil {
			dscp = strconv.Itoa(int(*l.DSCP))
		}
		jit := time.Duration(l.Jitter).String()
		if l.Reorder {
			jit += " reorder"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%g%%\t%v\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", l.From, l.To, l.Path, time.Duration(l.Delay), jit,
			l.Loss*100, l.Down, mtu, dscp, len(l.Hops), l.Stats.Packets, l.Stats.Delivered, l.Stats.Lost,
			l.Stats.Down+l.Stats.Blocked+l.Stats.MTUDropped, l.Stats.TTLExpired)
		for i, m := range l.Members {
			hops := "path's"
			if len(m.Hops) > 0 {
				var hs []string
				for _, h := range m.Hops {
					hs = append(hs, h.String())
				}
				hops = strings.Join(hs, ",")
			}
			fmt.Fprintf(w, "\t  member %d\t\t+%v\t+%v\t%g%%\t%v\t\t\t%s\t%d\t%d\t%d\t%d\t%d\n", i, time.Duration(m.Delay), time.Duration(m.Jitter),
				m.Loss*100, m.Down, hops, m.Stats.Packets, m.Stats.Delivered, m.Stats.Lost, m.Stats.Down+m.Stats.MTUDropped, m.Stats.TTLExpired)
		}
	}
	return w.Flush()
}

func runBlock(ctx context.Context, control, from, addr string, blocked bool) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("--addr %q is not an IP address", addr)
	}
	if err := netlab.NewClient(control).Block(ctx, netlab.BlockRequest{From: from, Addr: a, Blocked: blocked}); err != nil {
		return err
	}
	state := "blocked"
	if !blocked {
		state = "open"
	}
	fmt.Printf("%s -> %v: %s\n", from, a, state)
	return nil
}
