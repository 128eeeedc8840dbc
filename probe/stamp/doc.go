// Package stamp implements the Simple Two-way Active Measurement Protocol
// (STAMP, RFC 8762) with the optional extensions of RFC 8972: the packet
// codec (unauthenticated and HMAC-SHA-256 authenticated modes, TLVs), a
// stateful session-reflector and a session-sender that splits packet loss
// into the forward and the reverse direction.
//
// The package knows nothing about Prometheus: the sender reports what it
// measures to an Observer (exporter/stampmetrics implements one).
package stamp
