// Command probed is the synthetic network-monitoring agent: one per data
// center, probing every peer site and exporting the results for Prometheus.
//
// Subcommands: run (the daemon, default), check-config, sla. Each lives in
// its own file; this one only parses flags and dispatches.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitConfig is the exit status for a bad config file (any subcommand).
const exitConfig = 2

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	app := kingpin.New("probed", "Continuous synthetic network monitoring of a site mesh, for Prometheus.")
	app.Version(version)
	app.HelpFlag.Short('h')
	app.UsageWriter(os.Stdout)

	cmds := map[string]func(context.Context) int{}
	for _, c := range []command{newDaemonCommand(app), newCheckConfigCommand(app), newSLACommand(app)} {
		cmds[c.name] = c.run
	}
	chosen, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "probed: %v (see --help)\n", err)
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmds[chosen](ctx)
}

// command is one subcommand: its name and what runs it, returning the exit status.
type command struct {
	name string
	run  func(context.Context) int
}
