package netlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/probed/probed/internal/awstest"
)

// The event timeline end to end: three real probed binaries in the WAN lab,
// polling the AWS test server, each with its own journal.
//
// The test's parameters are short so that it runs in about two minutes:
// probes every 100 ms (the latency-shift detector counts probes, not
// seconds: its 30-bucket reference of 10 probes each fills in 30 s instead
// of 5 minutes at 1 probe/s, and a shift is confirmed about 130 probes —
// 13 s — after the step), traces every 2 s, AWS polled every 10 s (the
// least aws.interval allows), down after 3 lost probes.
const (
	evInterval      = 100 * time.Millisecond
	evTraceInterval = 2 * time.Second
	evAWSInterval   = 10 * time.Second
	// evBucket is the latency-shift detector's resolution in time: its
	// onset is the start of the 10-probe bucket that first shows the new
	// level (changepoint.ShiftParams.BucketSize).
	evBucket = 10 * evInterval
)

const eventsLabMesh = `probe:
  interval: 100ms
  timeout: 500ms
  down_after: 3
trace:
  interval: 2s
  max_ttl: 8
sites:
  - name: us-east
    region: us-east-1
    location: EqDC2
    agent: 10.77.1.1
    targets:
      - {address: 10.77.1.1, path: sitelink, segment: prod, mtu: false}
      - {address: 10.78.1.1, path: mpls, segment: prod}
  - name: us-central
    region: us-east-2
    location: EqDA2
    agent: 10.77.2.1
    targets:
      - {address: 10.77.2.1, path: sitelink, segment: prod, trace: true, mtu: false}
      - {address: 10.78.2.1, path: mpls, segment: prod}
  - name: us-west
    region: us-west-1
    location: EqSV5
    agent: 10.77.3.1
    targets:
      - {address: 10.77.3.1, path: sitelink, segment: prod, mtu: false}
      - {address: 10.78.3.1, path: mpls, segment: prod}
aws:
  interval: 10s
  timeout: 5s
  cloudwatch: false
  nsm: false
`

// evAgent is one probed of the events test, restartable.
type evAgent struct {
	t       *testing.T
	site    *Site
	bin     string
	args    []string
	env     []string
	logFile string
	client  *http.Client
	base    string
	cmd     *exec.Cmd
	done    chan struct{}
}

func (a *evAgent) start() {
	t := a.t
	t.Helper()
	lf, err := os.OpenFile(a.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := a.site.Command(context.Background(), a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), a.env...)
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting probed in %s: %v", a.site.Name(), err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); lf.Close(); close(done) }()
	a.cmd, a.done = cmd, done
}

// stop sends SIGTERM and waits for a clean exit.
func (a *evAgent) stop() {
	a.t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		a.t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		a.t.Fatalf("probed in %s did not stop within 30 s of SIGTERM", a.site.Name())
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		a.t.Fatalf("probed in %s exited with %d after SIGTERM:\n%s", a.site.Name(), code, logTail(a.logFile))
	}
}

func (a *evAgent) get(path string, v any) error {
	resp, err := a.client.Get(a.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// evEvent is an event as GET /api/v1/events answers it.
type evEvent struct {
	Time    time.Time         `json:"time"`
	Kind    string            `json:"kind"`
	Summary string            `json:"summary"`
	Labels  map[string]string `json:"labels"`
	Details map[string]any    `json:"details"`
	Related []evEvent         `json:"related"`
}

func (e evEvent) String() string {
	return fmt.Sprintf("%s %s %s", e.Time.UTC().Format("15:04:05.000"), e.Kind, e.Summary)
}

// events queries the agent's timeline.
func (a *evAgent) events(q url.Values) []evEvent {
	a.t.Helper()
	var r struct {
		Events []evEvent `json:"events"`
	}
	if err := a.get("/api/v1/events?"+q.Encode(), &r); err != nil {
		a.t.Fatalf("events of %s: %v", a.site.Name(), err)
	}
	return r.Events
}

// waitEvent waits until a query lists at least one event and returns them.
func (a *evAgent) waitEvent(what string, timeout time.Duration, q url.Values) []evEvent {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-a.done:
			a.t.Fatalf("probed in %s exited:\n%s", a.site.Name(), logTail(a.logFile))
		default:
		}
		if evs := a.events(q); len(evs) > 0 {
			return evs
		}
		if time.Now().After(deadline) {
			all := a.events(url.Values{"limit": {"1000"}, "related": {"false"}})
			a.t.Fatalf("%s: no event within %v; %s's timeline:\n%s", what, timeout, a.site.Name(), evList(all))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func evList(evs []evEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %v\n", e, e.Labels)
	}
	return b.String()
}

// evStatus is the part of GET /api/v1/status the test reads.
type evStatus struct {
	Targets []struct {
		TargetSite string `json:"target_site"`
		Target     string `json:"target"`
		Path       string `json:"path"`
		Up         *bool  `json:"up"`
		Sent       uint64 `json:"sent"`
		Trace      *struct {
			Hops []string `json:"hops"`
		} `json:"trace"`
	} `json:"targets"`
	AWS *struct {
		VIFs []struct {
			ID string `json:"vif_id"`
		} `json:"vifs"`
	} `json:"aws"`
}

func (a *evAgent) status() evStatus {
	a.t.Helper()
	var st evStatus
	if err := a.get("/api/v1/status", &st); err != nil {
		a.t.Fatalf("status of %s: %v", a.site.Name(), err)
	}
	return st
}

func (a *evAgent) waitStatus(what string, timeout time.Duration, cond func(evStatus) bool) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			a.t.Fatalf("probed in %s exited:\n%s", a.site.Name(), logTail(a.logFile))
		default:
		}
		var st evStatus
		if lastErr = a.get("/api/v1/status", &st); lastErr == nil && cond(st) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.t.Fatalf("%s: %s not within %v (last error: %v)", a.site.Name(), what, timeout, lastErr)
}

// within fails unless at lies in [from, to].
// schedulerLag is the agent's probed_scheduler_lag_seconds buckets:
// cumulative counts by upper bound (+Inf as math.Inf(1)).
func (a *evAgent) schedulerLag() map[float64]float64 {
	a.t.Helper()
	resp, err := a.client.Get(a.base + "/metrics")
	if err != nil {
		a.t.Fatalf("scraping %s: %v", a.site.Name(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("scraping %s: %v", a.site.Name(), err)
	}
	out := map[float64]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, `probed_scheduler_lag_seconds_bucket{le="`)
		if !ok {
			continue
		}
		le, count, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		bound, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(count, 64)
		if err1 != nil || err2 != nil {
			a.t.Fatalf("scheduler lag bucket %q", line)
		}
		out[bound] = n
	}
	if len(out) == 0 {
		a.t.Fatalf("%s exports no probed_scheduler_lag_seconds buckets", a.site.Name())
	}
	return out
}

// lagBound is the largest scheduler lag between two readings of the
// buckets: the upper bound of the highest bucket that gained probes (a
// minute for +Inf: the test then says nothing about timing).
func lagBound(before, after map[float64]float64) time.Duration {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	worst, prev := 0.0, 0.0
	for _, b := range bounds {
		n := after[b] - before[b]
		if n > prev {
			worst = b
		}
		prev = n
	}
	if math.IsInf(worst, 1) {
		return time.Minute
	}
	return time.Duration(worst * float64(time.Second))
}

func within(t *testing.T, what string, at, from, to time.Time) {
	t.Helper()
	if at.Before(from) || at.After(to) {
		t.Errorf("%s at %s, want within [%s, %s] (%+.3fs / %+.3fs)", what, at.UTC().Format("15:04:05.000"),
			from.UTC().Format("15:04:05.000"), to.UTC().Format("15:04:05.000"), at.Sub(from).Seconds(), at.Sub(to).Seconds())
	}
}

func checkLabels(t *testing.T, e evEvent, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if e.Labels[k] != v {
			t.Errorf("%s: label %s=%q, want %q (labels %v)", e.Kind, k, e.Labels[k], v, e.Labels)
		}
	}
}

func q(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// TestEventTimelineLab injects, in order, a latency step on one pair, a
// path change on another, a BGP session down and up in AWS, and an outage
// of the path-changed pair, and reads each back from the agent's timeline
// with its kind, labels and time; a jittery but stationary path meanwhile
// records no latency shift; the outage lists the path and BGP events near
// it; and after SIGTERM and a restart the timeline is still there.
func TestEventTimelineLab(t *testing.T) {
	topo, err := DefaultTopology().Subset("us-east", "us-central", "us-west")
	if err != nil {
		t.Fatal(err)
	}
	lab := StartT(t, topo)
	bin := probedBinary(t)
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mesh, []byte(eventsLabMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	update := func(from, to, path string, f func(*PathParams)) {
		t.Helper()
		if err := lab.UpdatePath(from, to, path, f); err != nil {
			t.Fatal(err)
		}
	}
	// The traced pair's routers; the jittery pair: ±8 ms each way on a
	// ~60 ms round trip, stationary.
	update("us-east", "us-central", PathSiteLink, func(p *PathParams) { p.Hops = []netip.Addr{a("10.90.12.1"), a("10.90.12.2")} })
	for _, d := range [][2]string{{"us-east", "us-west"}, {"us-west", "us-east"}} {
		update(d[0], d[1], PathMPLS, func(p *PathParams) { p.Jitter = 8 * time.Millisecond })
	}

	// The AWS test server answers on 127.0.0.1:4599 inside every site.
	aws := awstest.New(nil)
	for _, s := range lab.Sites() {
		ln, err := s.Listen("tcp", "127.0.0.1:4599")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: aws, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		t.Cleanup(func() { hs.Close() })
	}
	env := []string{"AWS_ENDPOINT_URL=http://127.0.0.1:4599", "AWS_ACCESS_KEY_ID=AKIDEVENTSLAB", "AWS_SECRET_ACCESS_KEY=events-lab",
		"AWS_SESSION_TOKEN=", "AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}

	agents := map[string]*evAgent{}
	for _, s := range lab.Sites() {
		addr, _ := s.Addr(PathSiteLink, false)
		listen := fmt.Sprintf("%s:9447", addr)
		ag := &evAgent{t: t, site: s, bin: bin, env: env, logFile: filepath.Join(dir, s.Name()+".log"),
			client: s.keepAliveClient(), base: "http://" + listen,
			args: []string{"--config.file=" + mesh, "--site=" + s.Name(), "--web.listen-address=" + listen, "--log.level=warn",
				"--storage.path=" + filepath.Join(dir, s.Name())}}
		ag.start()
		t.Cleanup(func() {
			if ag.cmd.ProcessState == nil {
				_ = ag.cmd.Process.Kill()
				<-ag.done
			}
			if t.Failed() {
				t.Logf("probed log of %s (tail):\n%s", s.Name(), logTail(ag.logFile))
			}
		})
		agents[s.Name()] = ag
	}
	east := agents["us-east"]
	start := time.Now()

	// Ready: every target up, the traced path known, AWS polled once (the
	// starting state: no AWS events for it).
	east.waitStatus("targets up, first path, AWS polled", 60*time.Second, func(st evStatus) bool {
		if st.AWS == nil || len(st.AWS.VIFs) == 0 || len(st.Targets) != 4 {
			return false
		}
		for _, tg := range st.Targets {
			if tg.Up == nil || !*tg.Up {
				return false
			}
			if tg.Target == "10.77.2.1" && (tg.Trace == nil || len(tg.Trace.Hops) != 3) {
				return false
			}
		}
		return true
	})
	if evs := east.events(q("kind", "dx_connection_changed,dx_vif_changed,bgp_peer_changed,macsec_changed,aws_poll_failed")); len(evs) > 0 {
		t.Errorf("AWS events for the starting state:\n%s", evList(evs))
	}

	// 1. A latency step on us-east -> us-west sitelink, once the detector
	// has its reference (300 answered probes; 400 to be sure).
	east.waitStatus("the step pair's reference", 120*time.Second, func(st evStatus) bool {
		for _, tg := range st.Targets {
			if tg.TargetSite == "us-west" && tg.Path == "sitelink" {
				return tg.Sent >= 400
			}
		}
		return false
	})
	stepFrom := time.Now()
	update("us-east", "us-west", PathSiteLink, func(p *PathParams) { p.Delay += 20 * time.Millisecond })
	stepTo := time.Now()
	shifts := east.waitEvent("latency_shift after the step", 10*time.Minute,
		q("kind", "latency_shift", "target_site", "us-west", "path", "sitelink", "related", "false"))
	shift := shifts[0]
	checkLabels(t, shift, map[string]string{"source_site": "us-east", "target_site": "us-west", "target": "10.77.3.1",
		"path": "sitelink", "segment": "prod", "protocol": "icmp"})
	within(t, "latency_shift onset", shift.Time, stepFrom.Add(-evBucket), stepTo.Add(evBucket))
	detected, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(shift.Details["detected"]))
	t.Logf("latency step +20 ms: onset %+.2fs from the step, detected %.1fs after it (%s)",
		shift.Time.Sub(stepFrom).Seconds(), detected.Sub(stepFrom).Seconds(), shift.Summary)
	if d := detected.Sub(stepFrom); d > 10*time.Minute || d < 0 {
		t.Errorf("latency shift detected %v after the step, want within 10 minutes", d)
	}
	if b, af := shift.Details["before_seconds"].(float64), shift.Details["after_seconds"].(float64); af-b < 0.015 || af-b > 0.025 {
		t.Errorf("latency shift %.1f ms -> %.1f ms, want a step of about +20 ms", b*1000, af*1000)
	}

	// 2. A path change on us-east -> us-central sitelink, right after a
	// trace (so none straddles it).
	lastTrace := func() time.Time {
		var r struct {
			Paths []struct {
				Target    string     `json:"target"`
				LastTrace *time.Time `json:"last_trace"`
			} `json:"paths"`
		}
		if err := east.get("/paths", &r); err != nil {
			t.Fatal(err)
		}
		for _, p := range r.Paths {
			if p.Target == "10.77.2.1" && p.LastTrace != nil {
				return *p.LastTrace
			}
		}
		return time.Time{}
	}
	prev := lastTrace()
	for deadline := time.Now().Add(30 * time.Second); !lastTrace().After(prev); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no new trace within 30 s")
		}
	}
	pathFrom := time.Now()
	update("us-east", "us-central", PathSiteLink, func(p *PathParams) {
		p.Hops = []netip.Addr{a("10.90.12.1"), a("10.90.12.9"), a("10.90.12.2")}
	})
	pathTo := time.Now()
	pc := east.waitEvent("path_changed", 60*time.Second, q("kind", "path_changed", "related", "false"))
	if len(pc) != 1 {
		t.Errorf("%d path changes, want 1:\n%s", len(pc), evList(pc))
	}
	checkLabels(t, pc[0], map[string]string{"source_site": "us-east", "target_site": "us-central", "target": "10.77.2.1",
		"path": "sitelink", "segment": "prod", "protocol": "icmp"})
	within(t, "path_changed", pc[0].Time, pathFrom, pathTo.Add(evTraceInterval+time.Second))
	if !strings.Contains(pc[0].Summary, "10.90.12.1,10.90.12.2,10.77.2.1 → 10.90.12.1,10.90.12.9,10.90.12.2,10.77.2.1") {
		t.Errorf("path change summary: %s", pc[0].Summary)
	}

	// 3. us-east's prod BGP session (IPv4) down in AWS, then up.
	const vif, peer = "dxvif-fp1k7x2q", "dxpeer-fp14k7x2q"
	bgp := func(status string) evEvent {
		t.Helper()
		from := time.Now()
		if err := aws.SetBGPStatus(vif, peer, status); err != nil {
			t.Fatal(err)
		}
		evs := east.waitEvent("bgp_peer_changed to "+status, 3*evAWSInterval,
			url.Values{"kind": {"bgp_peer_changed"}, "bgp_peer_id": {peer}, "related": {"false"}})
		e := evs[0]
		if e.Details["to"] != status {
			evs = east.waitEvent("bgp_peer_changed to "+status, 3*evAWSInterval,
				url.Values{"kind": {"bgp_peer_changed"}, "bgp_peer_id": {peer}, "since": {from.UTC().Format(time.RFC3339Nano)}, "related": {"false"}})
			e = evs[0]
		}
		checkLabels(t, e, map[string]string{"vif_id": vif, "bgp_peer_id": peer, "site": "us-east", "segment": "prod", "region": "us-east-1"})
		if e.Details["to"] != status {
			t.Errorf("BGP event %s, want to=%s", e, status)
		}
		// Seen by the next poll: within one (jittered, ±10 %) interval
		// plus the round itself.
		within(t, "bgp_peer_changed to "+status, e.Time, from, from.Add(evAWSInterval*11/10+2*time.Second))
		return e
	}
	bgpDown := bgp("down")
	bgpUp := bgp("up")
	if bgpDown.Details["from"] != "up" || bgpUp.Details["from"] != "down" {
		t.Errorf("BGP transitions: %s; %s", bgpDown, bgpUp)
	}

	// 4. An outage of us-east -> us-central sitelink.
	lag0 := east.schedulerLag()
	outFrom := time.Now()
	update("us-east", "us-central", PathSiteLink, func(p *PathParams) { p.Down = true })
	outTo := time.Now()
	downs := east.waitEvent("target_down", 30*time.Second, q("kind", "target_down", "target", "10.77.2.1"))
	time.Sleep(2 * time.Second)
	upFrom := time.Now()
	update("us-east", "us-central", PathSiteLink, func(p *PathParams) { p.Down = false })
	upTo := time.Now()
	ups := east.waitEvent("target_up", 30*time.Second, q("kind", "target_up", "target", "10.77.2.1", "related", "false"))
	down, up := downs[0], ups[0]
	for _, e := range []evEvent{down, up} {
		checkLabels(t, e, map[string]string{"source_site": "us-east", "target_site": "us-central", "target": "10.77.2.1",
			"path": "sitelink", "segment": "prod", "protocol": "icmp"})
	}
	// target_down is stamped with the first lost probe, target_up with
	// the first answered one: sent within an interval of the change, plus
	// the 2 ms batching of sends and however late the agent's scheduler
	// was meanwhile (its own histogram says; a stalled machine sends late).
	late := lagBound(lag0, east.schedulerLag()) + 2*time.Millisecond
	within(t, "target_down", down.Time, outFrom.Add(-evInterval), outTo.Add(evInterval+late))
	within(t, "target_up", up.Time, upFrom.Add(-evInterval), upTo.Add(evInterval+late))
	// What changed nearby: the path change of the pair and the BGP
	// session of the source site's prod VIF.
	near := map[string]int{}
	for _, r := range down.Related {
		near[r.Kind]++
	}
	if near["path_changed"] != 1 || near["bgp_peer_changed"] != 2 {
		t.Errorf("the outage lists %v nearby, want the path change and both BGP transitions:\n%s", near, evList(down.Related))
	}

	// The jittery, stationary pair (both directions) shifted nowhere.
	var jitterSent uint64
	for _, tg := range east.status().Targets {
		if tg.TargetSite == "us-west" && tg.Path == "mpls" {
			jitterSent = tg.Sent
		}
	}
	for name, ag := range map[string]*evAgent{"us-east": east, "us-west": agents["us-west"]} {
		other := map[string]string{"us-east": "us-west", "us-west": "us-east"}[name]
		if evs := ag.events(q("kind", "latency_shift", "target_site", other, "path", "mpls", "related", "false")); len(evs) > 0 {
			t.Errorf("latency shift on the jittery but stationary path %s -> %s:\n%s", name, other, evList(evs))
		}
	}
	t.Logf("jittery pair: %d probes (%.0f minutes at 1 probe/s) without a shift; test time so far %v",
		jitterSent, float64(jitterSent)/60, time.Since(start).Round(time.Second))

	// 5. SIGTERM and restart: the timeline is still there.
	before := east.events(q("limit", "10000", "related", "false"))
	east.stop()
	east.start()
	east.waitStatus("answering after the restart", 60*time.Second, func(st evStatus) bool { return len(st.Targets) == 4 })
	after := east.events(q("limit", "10000", "related", "false"))
	key := func(e evEvent) string { return e.Time.UTC().Format(time.RFC3339Nano) + " " + e.Kind + " " + e.Summary }
	have := map[string]bool{}
	for _, e := range after {
		have[key(e)] = true
	}
	for _, e := range before {
		if !have[key(e)] {
			t.Errorf("lost across the restart: %s", e)
		}
	}
	kinds := map[string][]evEvent{}
	for _, e := range after {
		kinds[e.Kind] = append(kinds[e.Kind], e)
	}
	if st := kinds["agent_stopped"]; len(st) != 1 || st[0].Details["reason"] != "SIGTERM" {
		t.Errorf("agent_stopped after SIGTERM: %v", st)
	}
	if n := len(kinds["agent_started"]); n != 2 {
		t.Errorf("%d agent_started, want 2 (start and restart)", n)
	}
	for _, k := range []string{"latency_shift", "path_changed", "bgp_peer_changed", "target_down", "target_up"} {
		if !slices.ContainsFunc(after, func(e evEvent) bool { return e.Kind == k }) {
			t.Errorf("no %s after the restart", k)
		}
	}
	t.Logf("us-east's timeline after the restart (%d events):\n%s", len(after), evList(after))

	// What these real events cost on disk, per kind (the storage estimate
	// of docs/events.md).
	files, _ := filepath.Glob(filepath.Join(dir, "us-east", "events", "*.jsonl"))
	size, count := map[string]int{}, map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			var r struct {
				Kind string `json:"kind"`
			}
			if json.Unmarshal([]byte(line), &r) == nil {
				size[r.Kind] += len(line) + 1
				count[r.Kind]++
			}
		}
	}
	var sizes []string
	for k, n := range count {
		sizes = append(sizes, fmt.Sprintf("%s %d B", k, size[k]/n))
	}
	slices.Sort(sizes)
	t.Logf("bytes per event on disk: %s", strings.Join(sizes, ", "))
}
