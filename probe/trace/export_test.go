package trace

import "os"

// The hop-RTT lab test's child process can be told to start RTTs at the
// wall clock read before the send system call instead of the kernel's
// transmit timestamp, to measure what the timestamp gains.
func init() {
	if os.Getenv("PROBED_TRACE_TEST_SENDCLOCK") == "user" {
		sendClock = userClock
	}
}
