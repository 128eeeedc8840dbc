package stamp

import "time"

// Reply is what one reflected packet measured. The sender reuses it: an
// Observer must copy what it keeps.
type Reply struct {
	Seq uint32
	// RTT is the round trip with the reflector's dwell time (T3-T2)
	// subtracted: (T4-T1) - (T3-T2).
	RTT   time.Duration
	Dwell time.Duration
	// Forward (T2-T1) and Reverse (T4-T3) one-way delays. They include the
	// offset between the two clocks and mean something only when Synced.
	Forward, Reverse time.Duration
	// Synced is true when both ends flagged their clocks synchronised (the S
	// bit of the Error Estimate at T1, T3 and T4).
	Synced bool
	// ForwardVariation and ReverseVariation are the one-way delays minus
	// their minimum over the variation window (RFC 5481 PDV): the clock
	// offset cancels, so they are valid without synchronisation.
	ForwardVariation, ReverseVariation time.Duration
	// ErrorBound is the sum of both ends' Error Estimates.
	ErrorBound time.Duration

	// Class of service. HasForwardDSCP is set when the reflector reported
	// the DSCP it received (CoS TLV); HasReverseDSCP when the kernel gave
	// the traffic class of the reply and the reflector honoured DSCP1.
	SentDSCP                         uint8
	ReflectorDSCP                    uint8
	HasForwardDSCP                   bool
	RequestedDSCP, ReceivedDSCP      uint8
	HasReverseDSCP                   bool
	ForwardRemarked, ReverseRemarked bool

	// SenderTTL is the TTL/hop limit the reflector saw (0 when it did not
	// say); senders use 255, so 255-SenderTTL is the forward hop count.
	SenderTTL uint8

	// Stateless is set while the reflector looks stateless: every reply
	// so far copied the sender's sequence number and none carried Direct
	// Measurement counters. Its losses cannot be split by direction and
	// are reported with LostUnknownDirection.
	Stateless bool
}

// Observer receives a sender's measurements. Methods are called from the
// sender's goroutines one at a time, in order.
type Observer interface {
	// Sent is called for every test packet sent.
	Sent()
	// Reply is called for every in-time reply.
	Reply(r *Reply)
	// Lost attributes lost packets to a direction, once a later reply has
	// told how many of them reached the reflector.
	Lost(forward, reverse int)
	// LostUnknownDirection counts lost packets whose direction cannot be
	// known: the reflector is stateless (Reply.Stateless).
	LostUnknownDirection(n int)
	// Unattributed is the number of packets lost since the last reply,
	// whose direction is not known yet (e.g. during an outage).
	Unattributed(n int)
	// Duplicate is called for a second reply to the same packet.
	Duplicate()
	// Reordered is called for a reply that arrives after a reply to a
	// later packet.
	Reordered()
	// Late is called for a reply that arrives after its packet was
	// declared lost (or that matches no packet in flight).
	Late()
	// Error counts a failure by reason: send, receive, refused, malformed,
	// auth (a reply's base packet failed HMAC verification: dropped),
	// integrity (the TLVs of a reply failed verification, or the
	// reflector flagged ours with I: the TLVs are ignored, the reply
	// counts), foreign_session.
	Error(reason string)
}

// NopObserver ignores everything (embed it to implement part of Observer).
type NopObserver struct{}

func (NopObserver) Sent()         {}
func (NopObserver) Reply(*Reply)  {}
func (NopObserver) Lost(int, int) {}

// LostUnknownDirection implements Observer.
func (NopObserver) LostUnknownDirection(int) {}
func (NopObserver) Unattributed(int)         {}
func (NopObserver) Duplicate()               {}
func (NopObserver) Reordered()               {}
func (NopObserver) Late()                    {}
func (NopObserver) Error(string)             {}
