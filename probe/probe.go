// Package probe is the probing engine. Every job of the plan — ICMP echo,
// TCP connect, STAMP session, Paris traceroute, path MTU search — runs here
// the same way: reconciled by key on reload, its name resolved by one
// resolver, its sockets bound (and re-bound when an interface comes back),
// and scheduled at a stable phase of its interval. ICMP echo and TCP
// connect decide each probe's fate exactly once: a valid reply within the
// timeout, or lost.
//
// The engine knows nothing about Prometheus. It reports to sinks, which the
// exporter implements.
package probe

import (
	"time"

	"github.com/probed/probed/config"
	"github.com/probed/probed/probe/pmtu"
	"github.com/probed/probed/probe/stamp"
	"github.com/probed/probed/probe/trace"
)

// Reason says why a probe failed. Every lost probe has exactly one.
type Reason uint8

const (
	ReasonTimeout         Reason = iota // no reply before the deadline
	ReasonNetUnreachable                // ICMP network unreachable / no route
	ReasonHostUnreachable               // ICMP host or address unreachable
	ReasonPortUnreachable               // ICMP port unreachable
	ReasonAdminProhibited               // ICMP communication administratively prohibited
	ReasonUnreachable                   // other destination-unreachable codes
	ReasonPacketTooBig                  // fragmentation needed / packet too big
	ReasonTTLExceeded                   // time exceeded in transit
	ReasonParamProblem                  // parameter problem
	ReasonRefused                       // TCP connection refused (RST)
	ReasonSendError                     // the local send failed
	ReasonConnectError                  // other TCP connect failures
	// Reasons no probe left at a slot (Recorder.Unsent).
	ReasonResolve // the target's name did not resolve
	ReasonBind    // the socket could not be opened or bound (missing interface or source address)
	NumReasons
)

var reasonNames = [NumReasons]string{
	"timeout", "net_unreachable", "host_unreachable", "port_unreachable", "admin_prohibited",
	"unreachable", "packet_too_big", "ttl_exceeded", "parameter_problem", "refused", "send_error", "connect_error",
	"resolve", "bind",
}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Ignored says why a received packet was not taken as a reply.
type Ignored uint8

const (
	IgnoredForeign    Ignored = iota // an echo reply for another program (identifier differs)
	IgnoredForged                    // our identifier but a token, serial or source that doesn't match a probe we sent
	IgnoredLate                      // a reply to a probe already counted as lost
	IgnoredDuplicate                 // a second reply to a probe already answered
	IgnoredMalformed                 // too short or unparsable
	IgnoredStrayError                // an ICMP error about a packet we did not send
	NumIgnored
)

var ignoredNames = [NumIgnored]string{"foreign", "forged", "late", "duplicate", "malformed", "stray_error"}

func (i Ignored) String() string {
	if i < NumIgnored {
		return ignoredNames[i]
	}
	return "unknown"
}

// Probe is what identifies one probe in its outcome: when it left (wall
// clock, for events and histories stamped with the probe's own time) and
// over which of its job's flows.
type Probe struct {
	Sent time.Time
	Flow int
}

// Recorder receives the outcomes of one ICMP or TCP job. Calls come from
// several goroutines; implementations must be safe for that and must not
// block.
type Recorder interface {
	// Sent is called when a probe has left the agent.
	Sent()
	// Succeeded is called once for a probe answered within its timeout.
	Succeeded(p Probe, rtt time.Duration)
	// Failed is called once for a probe that got no valid reply.
	Failed(p Probe, r Reason)
	// Unsent is called for a slot at which no probe could leave: the name
	// does not resolve (ReasonResolve) or the socket cannot be opened or
	// bound (ReasonBind). It is not a network loss.
	Unsent(r Reason)
	// Resolved is called after every lookup of a hostname target's name:
	// ok false means it failed (the job goes on probing its last address,
	// if it ever had one).
	Resolved(ok bool)
}

// Sink is where the engine reports ICMP and TCP jobs; the exporter
// implements it.
type Sink interface {
	// Add is called when a job starts and returns its recorder.
	Add(spec *config.ProbeSpec) Recorder
	// Remove is called when a job leaves the plan.
	Remove(spec *config.ProbeSpec, rec Recorder)
	// Ignored counts a received packet that was not a valid reply.
	Ignored(i Ignored)
	// SchedulerLag records how late a probe left compared to its slot.
	SchedulerLag(d time.Duration)
	// SocketDrops adds packets the kernel dropped for a full receive buffer.
	SocketDrops(n uint64)
}

// SessionSink receives the measurements of STAMP jobs.
type SessionSink interface {
	// Session is called when a STAMP job starts; the observer is kept
	// while the job's key stays (a restarted session continues it).
	Session(spec *config.ProbeSpec) stamp.Observer
	// Forget is called when the job leaves the plan.
	Forget(spec *config.ProbeSpec)
}

// PathSink receives the results of trace and MTU jobs.
type PathSink interface {
	ObserveTrace(spec *config.ProbeSpec, p *trace.Path)
	ObserveMTU(spec *config.ProbeSpec, r pmtu.Result)
	// Failed reports a round that produced no result, and why.
	Failed(spec *config.ProbeSpec, r Reason, err error)
	// Forget is called when the job leaves the plan.
	Forget(spec *config.ProbeSpec)
}
