package main

import (
	"context"
	"fmt"
	"os"

	"github.com/alecthomas/kingpin/v2"
)

// newDaemonCommand registers the default `run` command (being written).
func newDaemonCommand(app *kingpin.Application) command {
	app.Command("run", "Run the agent (default).").Default()
	return command{name: "run", run: func(ctx context.Context) int {
		fmt.Fprintln(os.Stderr, "probed run: not implemented yet")
		return 1
	}}
}
