package stampmetrics

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/probed/probed/events"
	"github.com/probed/probed/probe/stamp"
)

// A session's facts: DSCP re-marked and restored per direction (a remark
// seen on the first reply is news), and the onset of loss in one
// direction — once per episode, and packets lost forward say nothing of
// the reverse direction.
func TestSessionEvents(t *testing.T) {
	var mu sync.Mutex
	var got []events.Event
	m := New(prometheus.NewRegistry())
	m.SetEmit(func(e events.Event) { mu.Lock(); got = append(got, e); mu.Unlock() })
	s := m.Session(&spec)
	take := func() []events.Event {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		return out
	}
	ok := func() *stamp.Reply {
		return &stamp.Reply{HasForwardDSCP: true, HasReverseDSCP: true, SentDSCP: 46, ReflectorDSCP: 46, RequestedDSCP: 46, ReceivedDSCP: 46}
	}
	r := ok()
	r.ForwardRemarked, r.ReflectorDSCP = true, 0
	s.Reply(r)
	evs := take()
	if len(evs) != 1 || evs[0].Kind != events.DSCPRemarked || evs[0].Details["direction"] != Forward ||
		evs[0].Details["sent_dscp"] != 46 || evs[0].Details["received_dscp"] != 0 ||
		evs[0].Labels != events.Probe("us-east", "eu-frankfurt", "10.79.7.1", "sitelink", "prod", "stamp", "862") {
		t.Fatalf("remarked forward on the first reply: %v", evs)
	}
	s.Reply(r) // still re-marked: nothing new
	s.Reply(ok())
	if evs := take(); len(evs) != 1 || evs[0].Kind != events.DSCPRestored || evs[0].Details["direction"] != Forward {
		t.Fatalf("restored: %v", evs)
	}
	r = ok()
	r.ReverseRemarked, r.ReceivedDSCP = true, 10
	s.Reply(r)
	if evs := take(); len(evs) != 1 || evs[0].Kind != events.DSCPRemarked || evs[0].Details["direction"] != Reverse || evs[0].Details["received_dscp"] != 10 {
		t.Fatalf("remarked reverse: %v", evs)
	}
	s.Reply(ok())
	take()

	// Forward loss: 3 of 20 packets lost on the way out start an episode
	// in that direction only; more loss in the same episode is no news.
	for range 20 {
		s.Reply(ok())
	}
	s.Lost(2, 0)
	s.Reply(ok())
	if evs := take(); len(evs) != 0 {
		t.Fatalf("2 lost: %v", evs)
	}
	s.Lost(1, 0)
	evs = take()
	if len(evs) != 1 || evs[0].Kind != events.STAMPLossStarted || evs[0].Details["direction"] != Forward ||
		evs[0].Details["lost"] != 3 || evs[0].Details["sent"] != 20 {
		t.Fatalf("forward loss onset: %v", evs)
	}
	s.Lost(5, 0)
	if evs := take(); len(evs) != 0 {
		t.Fatalf("the same episode: %v", evs)
	}
	// Reverse loss while forward still recovers: its own onset.
	s.Lost(0, 3)
	evs = take()
	if len(evs) != 1 || evs[0].Details["direction"] != Reverse {
		t.Fatalf("reverse loss onset: %v", evs)
	}

	// Without SetEmit, sessions carry no event state.
	if New(prometheus.NewRegistry()).Session(&spec).ev != nil {
		t.Error("a session without an emitter tracks events")
	}
}
