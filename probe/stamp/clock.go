package stamp

import (
	"time"

	"golang.org/x/sys/unix"
)

// ClockState tells whether the local clock is synchronised and how far off
// it may be. The kernel's NTP state (KernelClock) is the real one; tests
// inject their own to mark both ends synchronised.
type ClockState interface {
	ErrorEstimate() ErrorEstimate
}

// KernelClock reads the clock discipline state with adjtimex(2), which is
// what chrony, ntpd and systemd-timesyncd maintain: STA_UNSYNC clear means
// synchronised, maxerror (µs) is the bound on the error.
type KernelClock struct{}

// ErrorEstimate implements ClockState. A read-only adjtimex (modes 0) needs
// no privilege.
func (KernelClock) ErrorEstimate() ErrorEstimate {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return NewErrorEstimate(false, 16*time.Second)
	}
	return errorEstimateFromTimex(state, tx.Status, tx.Maxerror)
}

// errorEstimateFromTimex is the pure part of KernelClock, testable with
// any kernel state.
func errorEstimateFromTimex(state int, status int32, maxerrorMicros int64) ErrorEstimate {
	synced := state != unix.TIME_ERROR && status&unix.STA_UNSYNC == 0
	maxErr := time.Duration(maxerrorMicros) * time.Microsecond
	if maxErr <= 0 {
		maxErr = time.Microsecond
	}
	return NewErrorEstimate(synced, maxErr)
}

// FixedClock reports a constant state (tests; or a deployment that knows
// better than the kernel, e.g. PTP-disciplined hardware clocks).
type FixedClock struct {
	Synced bool
	MaxErr time.Duration
}

// ErrorEstimate implements ClockState.
func (c FixedClock) ErrorEstimate() ErrorEstimate { return NewErrorEstimate(c.Synced, c.MaxErr) }
