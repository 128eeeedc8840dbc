package stampmetrics

import (
	"github.com/probed/probed/config"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/stamp"
)

// Sink feeds Metrics from the engine's STAMP jobs (probe.SessionSink).
type Sink struct{ *Metrics }

var _ probe.SessionSink = Sink{}

// Session implements probe.SessionSink.
func (s Sink) Session(spec *config.ProbeSpec) stamp.Observer { return s.Metrics.Session(spec) }
