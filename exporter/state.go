package exporter

import (
	"github.com/probed/probed/config"
	"github.com/probed/probed/watch"
)

// SetWatcher makes every probe series also report its verdicts to w (the
// event journal's per-target watchers and the history): one call per
// verdict, after the recorder's own accounting. Call it before the engine
// adds targets; series added earlier are not watched.
func (m *Metrics) SetWatcher(w *watch.Watcher) { m.watcher = w }

// TargetState is one probe series as /metrics shows it at this moment: the
// read-only view behind GET /api/v1/status.
type TargetState struct {
	// Spec is the job the series belongs to (its labels: LabelValues).
	Spec config.ProbeSpec
	// Guard: a segmentation guard (expect: unreachable); Violation is
	// probed_segmentation_violation.
	Guard, Violation bool
	// Sent and Lost are probed_probes_sent_total and probed_probes_lost_total.
	Sent, Lost uint64
	// LossRatio is probed_loss_ratio (HaveLossRatio: the window has a
	// finished probe).
	LossRatio     float64
	HaveLossRatio bool
	// Jitter is probed_jitter_seconds (HaveJitter: two answers so far).
	Jitter     float64
	HaveJitter bool
	// Up is probed_target_up: -1 before the first verdict, 0 down, 1 up.
	Up int8
	// Watch is the series' watcher (nil without SetWatcher): when Up last
	// changed, and the series' history.
	Watch *watch.Target
}

// Targets returns the state of every probe series, in label order, taken
// under each series' lock as a scrape does: the same numbers as /metrics.
func (m *Metrics) Targets() []TargetState {
	p, snaps := m.snapshots(false)
	defer snapPool.Put(p)
	out := make([]TargetState, len(snaps))
	for i := range snaps {
		s := &snaps[i]
		out[i] = TargetState{Spec: s.r.spec, Guard: s.guard, Violation: s.violating, Sent: s.sent, Lost: s.lost,
			LossRatio: s.ratio, HaveLossRatio: s.haveRatio, Jitter: s.jitter, HaveJitter: s.haveJitter, Up: s.up,
			Watch: s.r.watch}
		s.r = nil // the pooled buffer must not keep recorders alive
	}
	return out
}
