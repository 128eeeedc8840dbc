package probe

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/probed/probed/config"
)

// These tests run every kind of job — ICMP, TCP, STAMP, trace, MTU —
// through the engine on fake sockets (no root): reload, DNS changes and
// interfaces that appear late or are re-created.

var allKinds = []config.Kind{config.KindICMP, config.KindTCP, config.KindSTAMP, config.KindTrace, config.KindMTU}

// jobsFor is one job of every kind for target, bound to iface if set.
func jobsFor(target, iface string, interval time.Duration) []config.ProbeSpec {
	base := config.ProbeSpec{SourceSite: "a", TargetSite: "b", Target: target, Path: "p", Segment: "s",
		Interval: interval, Timeout: interval, Size: 56, Interface: iface}
	var out []config.ProbeSpec
	for _, k := range allKinds {
		s := base
		s.Kind, s.Protocol = k, config.ProtoICMP
		switch k {
		case config.KindTCP:
			s.Protocol, s.Port = config.ProtoTCP, 443
		case config.KindSTAMP:
			s.Protocol, s.Port = config.ProtoSTAMP, 862
		case config.KindTrace:
			s.TraceOpts = config.TraceJob{Method: "icmp", MaxTTL: 4, ProbesPerHop: 1}
		}
		out = append(out, s)
	}
	return out
}

type jobEnv struct {
	e     *Engine
	net   *fakeNet
	dns   *fakeDNS
	sinks *kindSinks
	stop  func()
}

func newJobEnv(t *testing.T) *jobEnv {
	j := &jobEnv{net: newFakeNet(), dns: &fakeDNS{names: map[string]netip.Addr{}}, sinks: newKindSinks()}
	j.e = New(Options{Log: zaptest.NewLogger(t), Sink: j.sinks, Sessions: j.sinks, Paths: j.sinks, Sockets: j.net, Resolver: j.dns})
	return j
}

func (j *jobEnv) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.e.Run(ctx) }()
	j.stop = func() { cancel(); <-done }
	t.Cleanup(j.stop)
}

func (j *jobEnv) update(t *testing.T, resolve time.Duration, specs ...[]config.ProbeSpec) {
	t.Helper()
	var all []config.ProbeSpec
	for _, s := range specs {
		all = append(all, s...)
	}
	_, _ = j.e.Update(&config.Plan{Site: "a", Probes: all, LossWindow: 100, DownAfter: 3, ResolveInterval: resolve})
}

// progress is how far a job got: answered ICMP probes, TCP connects,
// STAMP packets sent, trace or MTU results.
func (j *jobEnv) progress(s config.ProbeSpec) int {
	switch s.Kind {
	case config.KindICMP, config.KindTCP:
		r := j.rec(s.Key())
		if r == nil {
			return 0
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if s.Kind == config.KindICMP {
			return len(r.rtts)
		}
		return r.sent
	case config.KindSTAMP:
		j.sinks.mu.Lock()
		o := j.sinks.sessions[s.Key()]
		j.sinks.mu.Unlock()
		if o == nil {
			return 0
		}
		n, _ := o.get()
		return n
	}
	n, _ := j.sinks.pathResults(s.Key())
	return n
}

// unsent is how many slots of the job were reported unsent for r.
func (j *jobEnv) unsent(s config.ProbeSpec, r Reason) int {
	switch s.Kind {
	case config.KindICMP, config.KindTCP:
		rec := j.rec(s.Key())
		if rec == nil {
			return 0
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, x := range rec.unsent {
			if x == r {
				n++
			}
		}
		return n
	case config.KindSTAMP:
		j.sinks.mu.Lock()
		o := j.sinks.sessions[s.Key()]
		j.sinks.mu.Unlock()
		if o == nil {
			return 0
		}
		return o.errs(r.String())
	}
	_, f := j.sinks.pathResults(s.Key())
	return f[r]
}

func (j *jobEnv) rec(key string) *countingRec {
	j.sinks.countingSink.mu.Lock()
	defer j.sinks.countingSink.mu.Unlock()
	for _, r := range j.sinks.recs {
		if r.spec != nil && r.spec.Key() == key {
			return r
		}
	}
	return nil
}

// waitAll waits until cond holds for every spec.
func waitAll(t *testing.T, what string, specs []config.ProbeSpec, cond func(config.ProbeSpec) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var missing []string
		for _, s := range specs {
			if !cond(s) {
				missing = append(missing, s.Kind.String()+" "+s.Target)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not for %s", what, strings.Join(missing, ", "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type targetState struct {
	t     *target
	rec   Recorder
	phase int64
}

func (j *jobEnv) state() map[string]targetState {
	j.e.mu.Lock()
	defer j.e.mu.Unlock()
	m := map[string]targetState{}
	for _, t := range j.e.targets {
		m[t.key] = targetState{t: t, rec: t.rec, phase: t.next % t.interval}
	}
	return m
}

// A reload that keeps a job keeps it running as it was — the same job,
// counters going on, the same phase; one whose settings change restarts
// and keeps its series; one removed stops, its series go, and its socket
// closes with it.
func TestReloadKeepsEveryKindOfJob(t *testing.T) {
	j := newJobEnv(t)
	j.dns.set("peer.test", netip.MustParseAddr("192.0.2.2"))
	lit, name := jobsFor("192.0.2.1", "", 50*time.Millisecond), jobsFor("peer.test", "", 50*time.Millisecond)
	v6 := jobsFor("2001:db8::1", "", 50*time.Millisecond)[:1] // ICMP on its own (IPv6) socket
	j.update(t, time.Minute, lit, name, v6)
	j.run(t)
	all := append(append(append([]config.ProbeSpec{}, lit...), name...), v6...)
	waitAll(t, "three rounds of every job", all, func(s config.ProbeSpec) bool { return j.progress(s) >= 3 })
	before := j.state()
	progress := map[string]int{}
	for _, s := range all {
		progress[s.Key()] = j.progress(s)
	}
	recs, sessions := len(j.sinks.recs), len(j.sinks.sessions)

	// The same plan again (and one more job): nothing restarts.
	extra := jobsFor("192.0.2.9", "", 50*time.Millisecond)[:1]
	j.update(t, time.Minute, lit, name, v6, extra)
	after := j.state()
	for _, s := range all {
		b, a := before[s.Key()], after[s.Key()]
		if a.t != b.t || a.rec != b.rec {
			t.Errorf("%s %s: restarted by a reload that did not change it", s.Kind, s.Target)
		}
		if s.Kind != config.KindTrace && s.Kind != config.KindMTU && a.phase != b.phase {
			t.Errorf("%s %s: phase moved from %v to %v", s.Kind, s.Target, time.Duration(b.phase), time.Duration(a.phase))
		}
	}
	if len(j.sinks.recs) != recs+1 || len(j.sinks.sessions) != sessions {
		t.Errorf("recorders %d -> %d, sessions %d -> %d: want only the added job's", recs, len(j.sinks.recs), sessions, len(j.sinks.sessions))
	}
	waitAll(t, "every job going on", all, func(s config.ProbeSpec) bool { return j.progress(s) >= progress[s.Key()]+2 })

	// Other settings: every job restarts on them, with its series.
	slower := func(in []config.ProbeSpec) []config.ProbeSpec {
		out := append([]config.ProbeSpec{}, in...)
		for i := range out {
			out[i].Interval = 60 * time.Millisecond
		}
		return out
	}
	j.update(t, time.Minute, slower(lit), name, v6, extra)
	restarted := j.state()
	for _, s := range lit {
		b, a := after[s.Key()], restarted[s.Key()]
		if a.t == b.t || a.t.interval != int64(60*time.Millisecond) || a.rec != b.rec {
			t.Errorf("%s %s: not restarted with the new interval, or lost its recorder", s.Kind, s.Target)
		}
	}
	if len(j.sinks.recs) != recs+1 || len(j.sinks.sessions) != sessions {
		t.Errorf("a restart made new series: recorders %d, sessions %d", len(j.sinks.recs), len(j.sinks.sessions))
	}
	for _, s := range lit {
		progress[s.Key()] = j.progress(s)
	}
	waitAll(t, "restarted jobs going on", lit, func(s config.ProbeSpec) bool { return j.progress(s) >= progress[s.Key()]+2 })

	// Removed: the name's jobs and the IPv6 one. Their series are
	// forgotten, the IPv6 socket closes with its last job, and no
	// in-flight slot keeps a removed job alive.
	j.update(t, time.Minute, slower(lit), extra)
	j.sinks.mu.Lock()
	forgot := strings.Join(j.sinks.forgot, "\n")
	j.sinks.mu.Unlock()
	for _, s := range append(append([]config.ProbeSpec{}, name...), v6...) {
		switch s.Kind {
		case config.KindICMP, config.KindTCP:
			if !j.sinks.removed(s.Key()) {
				t.Errorf("%s %s: not removed from the sink", s.Kind, s.Target)
			}
		default:
			if !strings.Contains(forgot, s.Key()) {
				t.Errorf("%s %s: series not forgotten", s.Kind, s.Target)
			}
		}
	}
	j.net.mu.Lock()
	closed := j.net.closed
	j.net.mu.Unlock()
	if closed != 1 {
		t.Errorf("%d ICMP sockets closed, want the IPv6 one", closed)
	}
	for _, c := range *j.e.icmp.list.Load() {
		c.mu.Lock()
		for i := range c.slots {
			if tg := c.slots[i].t; tg != nil && (tg.spec.Target == "peer.test" || tg.spec.Target == "2001:db8::1") {
				t.Errorf("slot %d still holds removed job %s %s", i, tg.spec.Kind, tg.spec.Target)
			}
		}
		c.mu.Unlock()
	}
}

// A name's jobs follow its address; a name that stops resolving is probed
// at its last address (the failure counted); one that never resolves
// reports its slots unsent and keeps the agent from being ready.
func TestJobsFollowDNS(t *testing.T) {
	j := newJobEnv(t)
	a, b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	j.dns.set("peer.test", a)
	jobs := jobsFor("peer.test", "", 50*time.Millisecond)
	j.update(t, 100*time.Millisecond, jobs)
	j.run(t)
	sentTo := func(addr netip.Addr) func(config.ProbeSpec) bool {
		return func(s config.ProbeSpec) bool { return j.net.count(s.Kind.String(), addr) >= 2 }
	}
	waitAll(t, "probes to the first address", jobs, sentTo(a))
	j.dns.set("peer.test", b)
	waitAll(t, "probes to the new address", jobs, sentTo(b))

	j.dns.set("peer.test", netip.Addr{})
	at := map[config.Kind]int{}
	for _, s := range jobs {
		at[s.Kind] = j.net.count(s.Kind.String(), b)
	}
	waitAll(t, "the last address still probed while the name fails", jobs, func(s config.ProbeSpec) bool {
		return j.net.count(s.Kind.String(), b) >= at[s.Kind]+3
	})
	for _, s := range jobs[:2] {
		r := j.rec(s.Key())
		r.mu.Lock()
		fails := r.resolveFails
		r.mu.Unlock()
		if fails == 0 {
			t.Errorf("%s: failed re-resolution not counted", s.Kind)
		}
	}
	if ok, why := j.e.Status(); !ok {
		t.Errorf("not ready while probing the last address: %s", why)
	}

	typo := jobsFor("typo.test", "", 50*time.Millisecond)
	j.update(t, 100*time.Millisecond, jobs, typo)
	waitAll(t, "slots of a name that never resolves reported unsent", typo, func(s config.ProbeSpec) bool {
		return j.unsent(s, ReasonResolve) >= 1
	})
	if ok, why := j.e.Status(); ok || !strings.Contains(why, "5 unresolvable names") {
		t.Errorf("ready = %v (%s) with a name that never resolved", ok, why)
	}
}

// Jobs bound to an interface that does not exist yet (boot order) report
// their slots unsent and start once it appears; after the interface is
// deleted and re-created (a new index) they recover — without a reload.
func TestJobsFollowTheirInterface(t *testing.T) {
	j := newJobEnv(t)
	jobs := append(jobsFor("192.0.2.20", "lab9", 50*time.Millisecond), jobsFor("2001:db8::20", "lab9", 50*time.Millisecond)[:1]...)
	j.update(t, time.Minute, jobs)
	j.run(t)
	waitAll(t, "slots reported unsent for the missing interface", jobs, func(s config.ProbeSpec) bool {
		return j.unsent(s, ReasonBind) >= 2
	})
	if ok, why := j.e.Status(); ok || !strings.Contains(why, "lab9") {
		t.Errorf("ready = %v (%s) with the interface missing", ok, why)
	}
	for _, s := range jobs {
		if n := j.progress(s); n != 0 {
			t.Errorf("%s: %d results without an interface", s.Kind, n)
		}
	}

	j.net.setIface("lab9", 7)
	waitAll(t, "every job running once the interface exists", jobs, func(s config.ProbeSpec) bool { return j.progress(s) >= 3 })
	waitUntil(t, "ready", func() bool { ok, _ := j.e.Status(); return ok })

	// Deleted and re-created: the old sockets are bound to index 7.
	at := map[string]int{}
	for _, s := range jobs {
		at[s.Key()] = j.progress(s)
	}
	j.net.setIface("lab9", 8)
	waitAll(t, "every job running again after the interface was re-created", jobs, func(s config.ProbeSpec) bool {
		return j.progress(s) >= at[s.Key()]+5
	})
	j.net.mu.Lock()
	defer j.net.mu.Unlock()
	for k, n := range j.net.opened {
		if n < 2 {
			t.Errorf("ICMP socket %s opened %d times, want again after the re-creation", k, n)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
