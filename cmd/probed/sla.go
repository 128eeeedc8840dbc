package main

import (
	"context"
	"fmt"
	"os"

	"github.com/alecthomas/kingpin/v2"
)

// newSLACommand registers `probed sla` (the SLA-report feature replaces this stub).
func newSLACommand(app *kingpin.Application) command {
	app.Command("sla", "Write the monthly SLA report from Prometheus data.")
	return command{name: "sla", run: func(context.Context) int {
		fmt.Fprintln(os.Stderr, "probed sla: not implemented yet")
		return 1
	}}
}
