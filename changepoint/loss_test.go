package changepoint

import (
	"math/rand/v2"
	"testing"
	"time"
)

// feed runs outcomes ('.' answered, 'x' lost) at 1/s and returns the events
// with the probe index they came at.
func feed(l *Loss, outcomes string) (evs []LossEvent, at []int) {
	for i, c := range outcomes {
		if ev, ok := l.Add(t0.Add(time.Duration(i)*time.Second), c == 'x'); ok {
			evs = append(evs, ev)
			at = append(at, i)
		}
	}
	return evs, at
}

func rep(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func TestLossEpisode(t *testing.T) {
	l := NewLoss(DefaultLossParams())
	// Background: one loss every 30 probes is no episode. Then 3 losses
	// in 10 probes start one at the first of them; 20 answered end it.
	bg := rep(rep(".", 29)+"x", 4) + rep(".", 20)
	seq := bg + "..x...x...x" + rep(".", 5) + "x" + rep(".", 25)
	evs, at := feed(l, seq)
	if len(evs) != 2 {
		t.Fatalf("%d events: %+v", len(evs), evs)
	}
	first := len(bg) + 2
	if s := evs[0]; !s.Started || !s.Start.Equal(t0.Add(time.Duration(first)*time.Second)) || s.WindowLost != 3 || s.Window != 20 || at[0] != len(bg)+10 {
		t.Fatalf("start: %+v at %d", s, at[0])
	}
	last := len(bg) + 11 + 5
	e := evs[1]
	if e.Started || !e.Start.Equal(evs[0].Start) || !e.End.Equal(t0.Add(time.Duration(last)*time.Second)) {
		t.Fatalf("end: %+v", e)
	}
	if e.Lost != 4 || e.Sent != last-first+1 {
		t.Fatalf("end counts: lost %d sent %d, want 4 and %d", e.Lost, e.Sent, last-first+1)
	}
	if at[1] != last+20 || l.Active() {
		t.Fatalf("ended at %d (want %d), active %v", at[1], last+20, l.Active())
	}
}

func TestLossOutageIsOneEpisode(t *testing.T) {
	l := NewLoss(DefaultLossParams())
	evs, _ := feed(l, rep(".", 50)+rep("x", 300)+rep(".", 19)+"x"+rep(".", 40))
	if len(evs) != 2 || evs[1].Lost != 301 || evs[1].Sent != 320 {
		t.Fatalf("%+v", evs)
	}
}

// Random background loss of 1 % (the normal state of a WAN path) starts
// episodes rarely: measured, not assumed.
func TestLossBackgroundIsQuiet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	l := NewLoss(DefaultLossParams())
	starts := 0
	for i := range 24 * 3600 {
		if ev, ok := l.Add(t0.Add(time.Duration(i)*time.Second), rng.Float64() < 0.01); ok && ev.Started {
			starts++
		}
	}
	// P(≥3 of 20 lost at 1 %) ≈ 0.1 %: a day at 1/s sees a few dozen
	// triggering windows at most, and episodes are merged by the quiet
	// rule.
	if starts > 60 {
		t.Fatalf("%d episodes in a day of 1 %% random loss", starts)
	}
	t.Logf("%d episodes in a day of 1%% random loss", starts)
}

func TestLossAddDoesNotAllocate(t *testing.T) {
	l := NewLoss(DefaultLossParams())
	i := 0
	if a := testing.AllocsPerRun(10000, func() { l.Add(t0.Add(time.Duration(i)*time.Second), i%7 == 0); i++ }); a != 0 {
		t.Fatalf("%v allocs", a)
	}
}

func TestLossParamsValidate(t *testing.T) {
	for _, p := range []LossParams{{Window: 0, MinLost: 1, Quiet: 1}, {Window: 65, MinLost: 1, Quiet: 1}, {Window: 10, MinLost: 11, Quiet: 1}, {Window: 10, MinLost: 1}} {
		if p.Validate() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}
