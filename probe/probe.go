// Package probe is the probing engine: a scheduler that spreads every
// target's probes evenly over its interval, and the probers (ICMP echo over
// shared sockets, TCP connect) that send them and decide each probe's fate
// exactly once: a valid reply within the timeout, or lost.
//
// The engine knows nothing about Prometheus. It reports to a Sink, which the
// exporter implements.
package probe

import (
	"time"

	"github.com/probed/probed/config"
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
	NumReasons
)

var reasonNames = [NumReasons]string{
	"timeout", "net_unreachable", "host_unreachable", "port_unreachable", "admin_prohibited",
	"unreachable", "packet_too_big", "ttl_exceeded", "parameter_problem", "refused", "send_error", "connect_error",
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

// Recorder receives the outcomes of one probe spec. Calls come from several
// goroutines; implementations must be safe for that and must not block.
type Recorder interface {
	// Sent is called when a probe has left the agent.
	Sent()
	// Succeeded is called once for a probe answered within its timeout.
	Succeeded(rtt time.Duration)
	// Failed is called once for a probe that got no valid reply.
	Failed(r Reason)
	// ResolveFailed counts a failed resolution of the target's hostname
	// (no probe was sent).
	ResolveFailed()
}

// Sink is where the engine reports; the exporter implements it.
type Sink interface {
	// Add is called when a spec starts being probed and returns its recorder.
	Add(spec *config.ProbeSpec) Recorder
	// Remove is called when a spec stops being probed (reload).
	Remove(spec *config.ProbeSpec, rec Recorder)
	// Ignored counts a received packet that was not a valid reply.
	Ignored(i Ignored)
	// SchedulerLag records how late a probe left compared to its slot.
	SchedulerLag(d time.Duration)
	// SocketDrops adds packets the kernel dropped for a full receive buffer.
	SocketDrops(n uint64)
}
