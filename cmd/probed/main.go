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

	cmds := map[string]command{}
	for _, c := range []command{newDaemonCommand(app), newCheckConfigCommand(app), newSLACommand(app)} {
		cmds[c.name] = c
	}
	// probed --help describes the default command's flags too: they are
	// what most users are looking for.
	app.HelpFlag.PreAction(func(pc *kingpin.ParseContext) error {
		if pc.SelectedCommand == nil {
			app.Writer(os.Stdout)
			_ = app.UsageForContext(pc)
			fmt.Fprintln(os.Stdout, "\nFlags of the default command, run:")
			rc, _ := app.ParseContext([]string{"run"})
			_ = app.UsageForContextWithTemplate(rc, 2, runFlagsTemplate)
			os.Exit(0)
		}
		return nil
	})
	chosen, err := app.Parse(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "probed: %v (see --help)\n", err)
		return exitConfig
	}
	c := cmds[chosen]
	ctx := context.Background()
	if c.signals {
		// The daemon stops cleanly on SIGINT and SIGTERM; the other
		// commands keep the default disposition and die at once.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	return c.run(ctx)
}

// runFlagsTemplate lists only the flags of a command.
const runFlagsTemplate = `{{define "FormatFlags"}}{{range .Flags}}{{if not .Hidden}}  {{if .Short}}-{{.Short|Char}}, {{end}}--{{.Name}}{{if not .IsBoolFlag}}={{.FormatPlaceHolder}}{{end}}
        {{.Help}}
{{end}}{{end}}{{end}}{{template "FormatFlags" .Context.SelectedCommand.Model.FlagGroupModel}}`

// command is one subcommand: its name, whether it handles SIGINT/SIGTERM
// itself, and what runs it, returning the exit status.
type command struct {
	name    string
	signals bool
	run     func(context.Context) int
}
