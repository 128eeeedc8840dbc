package probe

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/probed/probed/config"
)

// recordingProber notes when each target was sent to.
type recordingProber struct {
	sends map[*target][]int64
	now   *int64
}

func (p *recordingProber) fire(t *target, _ *binding) {
	p.sends[t] = append(p.sends[t], *p.now)
}
func (p *recordingProber) bind(*target, netip.Addr) (*binding, error) { return nil, nil }
func (p *recordingProber) unbind(*target, *binding)                   {}
func (p *recordingProber) unsent(*target, Reason)                     {}
func (p *recordingProber) stop(*target)                               {}

// 10,000 targets at 1 s must be spread over the interval, not burst at
// second 0: count sends per scheduler tick over a simulated 10 s.
func TestSchedulerSpreadsEvenly(t *testing.T) {
	const n = 10000
	e := New(Options{Log: zap.NewNop(), Sink: nopSink{}})
	var now int64
	rp := &recordingProber{sends: map[*target][]int64{}, now: &now}
	wall := time.Now().UnixNano()
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("icmp|peer|10.%d.%d.%d|0|sitelink|prod||||", i>>16, (i>>8)&255, i&255)
		tg := &target{key: k, spec: &config.ProbeSpec{Protocol: "icmp", Target: fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)}, job: rp, interval: int64(time.Second), timeout: int64(time.Second), rec: nopRec{}}
		tg.bound.Store(&binding{ip: netip.MustParseAddr("10.0.0.1")})
		tg.next = firstSlot(k, tg.interval, 0, wall)
		e.targets[tg.spec.ID()] = tg
		e.sched.push(tg)
	}
	perTick := map[int64]int{}
	for now = 0; now < int64(10*time.Second); now += int64(tick) {
		before := 0
		for _, s := range rp.sends {
			before += len(s)
		}
		e.sendDue(now)
		after := 0
		for _, s := range rp.sends {
			after += len(s)
		}
		perTick[now] = after - before
	}
	max, total := 0, 0
	for _, c := range perTick {
		total += c
		if c > max {
			max = c
		}
	}
	if total < 10*n-n/100 || total > 10*n+n/100 {
		t.Fatalf("%d sends in 10 s for %d targets at 1/s", total, n)
	}
	// Hash phases are uniform: n·tick/interval per tick on average; seven
	// standard deviations above that (Poisson) is never reached by chance.
	mean := float64(n) * float64(tick) / float64(time.Second)
	limit := int(mean + 7*math.Sqrt(mean))
	if max > limit {
		t.Fatalf("burst of %d probes in one %v tick (mean %.0f, limit %d)", max, tick, mean, limit)
	}
	// Each target keeps a stable phase: exactly one interval between sends.
	for tg, s := range rp.sends {
		for i := 1; i < len(s); i++ {
			if d := s[i] - s[i-1]; d < int64(time.Second)-int64(tick) || d > int64(time.Second)+int64(tick) {
				t.Fatalf("target %s: %v between sends", tg.key, time.Duration(d))
			}
		}
	}
	t.Logf("10,000 targets at 1 s: at most %d probes per %v tick (mean %.0f)", max, tick, mean)
}

// The phase depends only on the key: a reload, a restart or another agent
// with the same target list picks the same slot.
func TestPhaseIsStable(t *testing.T) {
	const iv = int64(time.Second)
	wall := int64(1_800_000_000_123_456_789)
	a := firstSlot("k1", iv, 0, wall)
	b := firstSlot("k1", iv, 5_000, wall+5_000)
	if a != b {
		t.Fatalf("slot moved: %d vs %d", a, b)
	}
	if a < 0 || a >= iv {
		t.Fatalf("first slot %d outside one interval", a)
	}
	if firstSlot("k2", iv, 0, wall) == a {
		t.Fatal("two keys share a phase (hash collision unlikely)")
	}
}

// A target whose interval changes on reload keeps its recorder (its
// series); one added gets a new one; one removed leaves the schedule.
func TestUpdateKeepsTargets(t *testing.T) {
	sink := &countingSink{}
	e := New(Options{Log: zap.NewNop(), Sink: sink})
	s := config.ProbeSpec{Kind: config.KindTCP, TargetSite: "b", Target: "192.0.2.1", Protocol: config.ProtoTCP, Port: 22, Interval: time.Second, Timeout: time.Second}
	if _, err := e.Update(&config.Plan{Probes: []config.ProbeSpec{s}}); err != nil {
		t.Fatal(err)
	}
	s.Interval = 2 * time.Second
	s2 := s
	s2.Port = 23
	e.Update(&config.Plan{Probes: []config.ProbeSpec{s, s2}})
	if len(sink.recs) != 2 {
		t.Fatalf("%d recorders created, want 2 (one kept, one added)", len(sink.recs))
	}
	if got := e.targets[s.ID()]; got.interval != int64(2*time.Second) || got.rec != sink.recs[0] {
		t.Fatalf("interval not updated (%v) or recorder not kept", time.Duration(got.interval))
	}
	e.Update(&config.Plan{Probes: []config.ProbeSpec{s2}})
	if len(e.targets) != 1 || len(e.sched) != 1 {
		t.Fatalf("removal: %d targets, %d scheduled", len(e.targets), len(e.sched))
	}
}
