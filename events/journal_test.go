package events

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

var tokyo = Probe("us-east", "ap-tokyo", "10.77.5.1", "sitelink", "prod", "icmp", "")

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func open(t *testing.T, o Options) *Journal {
	t.Helper()
	j, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

func query(t *testing.T, j *Journal, q Query) []Event {
	t.Helper()
	evs, err := j.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestEmitAndQueryFilters(t *testing.T) {
	reg := prometheus.NewRegistry()
	j := open(t, Options{Dir: t.TempDir(), Registerer: reg})
	frankfurt := Probe("us-east", "eu-frankfurt", "10.77.7.1", "sitelink", "prod", "tcp", "443")
	j.Emit(NewTargetDown(t0, tokyo, 3))
	j.Emit(NewTargetUp(t0.Add(2*time.Minute), tokyo, 2*time.Minute))
	j.Emit(NewPathChanged(t0.Add(time.Minute), frankfurt, []string{"10.90.17.1", "10.77.7.1"}, []string{"10.90.17.1", "10.90.17.9", "10.77.7.1"}))
	j.Emit(NewBGPPeerChanged(t0.Add(3*time.Minute), Labels{Site: "ap-tokyo", Segment: "prod", VIFID: "dxvif-fp5k7x2q", BGPPeerID: "dxpeer-fp54k7x2q"}, "169.254.5.1/30", "up", "down"))

	all := query(t, j, Query{})
	if len(all) != 4 {
		t.Fatalf("got %d events, want 4", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Time.After(all[i-1].Time) {
			t.Fatalf("not newest first: %v before %v", all[i-1].Time, all[i].Time)
		}
	}
	if all[0].Kind != BGPPeerChanged || all[3].Kind != TargetDown {
		t.Fatalf("order: %v … %v", all[0].Kind, all[3].Kind)
	}
	if got := all[0].Details["to"]; got != "down" {
		t.Errorf("details survive the disk: to=%v", got)
	}

	cases := []struct {
		name string
		q    Query
		want []Kind
	}{
		{"kind", Query{Kinds: []Kind{TargetDown, TargetUp}}, []Kind{TargetUp, TargetDown}},
		{"label", Query{Labels: map[string]string{"target_site": "eu-frankfurt"}}, []Kind{PathChanged}},
		{"label and kind", Query{Labels: map[string]string{"target_site": "ap-tokyo"}, Kinds: []Kind{TargetUp}}, []Kind{TargetUp}},
		{"port", Query{Labels: map[string]string{"port": "443"}}, []Kind{PathChanged}},
		{"aws label", Query{Labels: map[string]string{"vif_id": "dxvif-fp5k7x2q"}}, []Kind{BGPPeerChanged}},
		// site= must not match source_site/target_site of probe events.
		{"site", Query{Labels: map[string]string{"site": "ap-tokyo"}}, []Kind{BGPPeerChanged}},
		{"since", Query{Since: t0.Add(90 * time.Second)}, []Kind{BGPPeerChanged, TargetUp}},
		{"until", Query{Until: t0.Add(time.Minute)}, []Kind{PathChanged, TargetDown}},
		{"limit", Query{Limit: 2}, []Kind{BGPPeerChanged, TargetUp}},
		{"none", Query{Labels: map[string]string{"target_site": "nowhere"}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs := query(t, j, c.q)
			var got []Kind
			for _, e := range evs {
				got = append(got, e.Kind)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
	if v := promtest.ToFloat64(j.total.WithLabelValues(string(TargetDown))); v != 1 {
		t.Errorf("probed_events_total{kind=target_down} = %v, want 1", v)
	}
	if n, err := promtest.GatherAndCount(reg, "probed_events_total"); err != nil || n != len(Kinds()) {
		t.Errorf("probed_events_total has %d series (%v), want one per kind (%d)", n, err, len(Kinds()))
	}
}

func TestUnknownKindIsRefused(t *testing.T) {
	j := open(t, Options{Dir: t.TempDir()})
	j.Emit(Event{Time: t0, Kind: "bogus", Summary: "x"})
	if evs := query(t, j, Query{}); len(evs) != 0 {
		t.Fatalf("an unknown kind was stored: %v", evs)
	}
	if _, err := j.Query(context.Background(), Query{Kinds: []Kind{"bogus"}}); err == nil {
		t.Fatal("query with an unknown kind: no error")
	}
	if _, err := j.Query(context.Background(), Query{Labels: map[string]string{"colour": "x"}}); err == nil {
		t.Fatal("query with an unknown label: no error")
	}
}

func TestNilJournalIsANoOp(t *testing.T) {
	var j *Journal
	j.Emit(NewAgentStarted(t0, "us-east", "dev"))
	if evs, err := j.Query(context.Background(), Query{}); err != nil || evs != nil {
		t.Fatal(evs, err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		j.Emit(NewTargetDown(t0.Add(time.Duration(i)*time.Second), tokyo, i))
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j.Emit(NewAgentStopped(t0.Add(time.Hour), "us-east", "late")) // dropped, not a crash

	j2 := open(t, Options{Dir: dir})
	j2.Emit(NewAgentStarted(t0.Add(time.Minute), "us-east", "dev"))
	evs := query(t, j2, Query{})
	if len(evs) != 11 || evs[0].Kind != AgentStarted || evs[1].Details["lost_in_a_row"] != float64(9) {
		t.Fatalf("after restart: %d events, first %v", len(evs), evs[0])
	}
	if st := j2.Stats(); st.Segments != 1 || st.Events != 11 {
		t.Errorf("reopened journal appends to its segment: %+v", st)
	}
}

func TestTornLastWriteIsDropped(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	j.Emit(NewTargetDown(t0, tokyo, 3))
	j.Emit(NewTargetUp(t0.Add(time.Second), tokyo, time.Second))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if len(files) != 1 {
		t.Fatalf("segments: %v", files)
	}
	// What a crash in the middle of a write leaves: half a record.
	f, err := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"t":1764126000000000000,"kind":"target_do`)
	f.Close()

	j2 := open(t, Options{Dir: dir})
	j2.Emit(NewLossStarted(t0.Add(2*time.Second), tokyo, 5, 20))
	evs := query(t, j2, Query{})
	if len(evs) != 3 || evs[0].Kind != LossStarted || evs[2].Kind != TargetDown {
		t.Fatalf("after a torn write: %+v", evs)
	}
}

// TestSIGKILLLosesNothingEmitted kills a real process that is emitting
// events: every event whose Emit had returned is on disk.
func TestSIGKILLLosesNothingEmitted(t *testing.T) {
	if dir := os.Getenv("PROBED_EVENTS_CHILD_DIR"); dir != "" {
		childEmitForever(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILLLosesNothingEmitted$")
	cmd.Env = append(os.Environ(), "PROBED_EVENTS_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	acked := -1
	for sc.Scan() {
		if n, err := strconv.Atoi(sc.Text()); err == nil {
			acked = n
		}
		if acked >= 200 {
			break
		}
	}
	_ = cmd.Process.Kill() // SIGKILL: no Close, no flush
	_ = cmd.Wait()
	if acked < 200 {
		t.Fatalf("child acknowledged only %d events", acked)
	}
	j := open(t, Options{Dir: dir})
	evs := query(t, j, Query{Limit: MaxLimit, Related: false})
	seen := map[float64]bool{}
	for _, e := range evs {
		seen[e.Details["lost_in_a_row"].(float64)] = true
	}
	for i := 0; i <= acked; i++ {
		if !seen[float64(i)] {
			t.Fatalf("event %d was acknowledged before the kill but is missing (%d stored)", i, len(evs))
		}
	}
	t.Logf("%d events acknowledged, %d on disk after SIGKILL", acked+1, len(evs))
}

func childEmitForever(dir string) {
	j, err := Open(Options{Dir: dir, SegmentBytes: 16 << 10, MaxBytes: 1 << 30})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		j.Emit(NewTargetDown(t0.Add(time.Duration(i)*time.Millisecond), tokyo, i))
		fmt.Fprintln(w, i)
		w.Flush()
	}
}

func TestSizeCap(t *testing.T) {
	dir := t.TempDir()
	j := open(t, Options{Dir: dir, MaxBytes: 64 << 10, SegmentBytes: 8 << 10})
	n := 2000
	for i := range n {
		j.Emit(NewTargetDown(t0.Add(time.Duration(i)*time.Second), tokyo, i))
	}
	st := j.Stats()
	if st.Bytes > 64<<10 {
		t.Fatalf("journal holds %d bytes, cap %d", st.Bytes, 64<<10)
	}
	var onDisk int64
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		fi, _ := os.Stat(f)
		onDisk += fi.Size()
	}
	if onDisk != st.Bytes {
		t.Errorf("files hold %d bytes, journal thinks %d", onDisk, st.Bytes)
	}
	evs := query(t, j, Query{Limit: MaxLimit})
	// Deleting whole segments: what is kept is between the cap minus two
	// segments and the cap.
	if st.Bytes < 64<<10-2*(8<<10) {
		t.Errorf("journal keeps only %d bytes of its %d cap", st.Bytes, 64<<10)
	}
	if len(evs) != st.Events {
		t.Fatalf("kept %d events (stats %d) of %d", len(evs), st.Events, n)
	}
	if evs[0].Details["lost_in_a_row"] != float64(n-1) {
		t.Fatalf("newest event lost: %v", evs[0].Summary)
	}
	if evs[len(evs)-1].Details["lost_in_a_row"] == float64(0) {
		t.Fatal("the oldest event survived the size cap")
	}
}

func TestAgeRetention(t *testing.T) {
	clk := &clock{t: t0}
	dir := t.TempDir()
	j := open(t, Options{Dir: dir, Retention: 48 * time.Hour, Now: clk.Now})
	for i := range 5 * 24 {
		at := t0.Add(time.Duration(i) * time.Hour)
		clk.Set(at)
		j.Emit(NewTargetDown(at, tokyo, i))
	}
	// Segments span at most Retention/4 = 12 h, so what is kept is the
	// last 48 h plus at most one span.
	evs := query(t, j, Query{Limit: MaxLimit})
	oldest := evs[len(evs)-1].Time
	if age := clk.Now().Sub(oldest); age > 60*time.Hour || age < 48*time.Hour {
		t.Fatalf("oldest kept event is %v old, want 48..60 h", age)
	}
	// Nothing emitted for longer than the retention: everything goes at
	// the next emit, the active segment too.
	clk.Set(clk.Now().Add(100 * time.Hour))
	j.Emit(NewAgentStarted(clk.Now(), "us-east", "dev"))
	evs = query(t, j, Query{Limit: MaxLimit})
	if len(evs) != 1 || evs[0].Kind != AgentStarted {
		t.Fatalf("after a long silence: %d events", len(evs))
	}
	// And at open.
	j.Close()
	clk.Set(clk.Now().Add(49 * time.Hour))
	j2 := open(t, Options{Dir: dir, Retention: 48 * time.Hour, Now: clk.Now})
	if st := j2.Stats(); st.Events != 0 {
		t.Fatalf("expired events kept across a restart: %+v", st)
	}
}

func TestOutOfOrderTimes(t *testing.T) {
	// Small segments so the out-of-order event lands in an older segment
	// than newer-stamped ones.
	j := open(t, Options{Dir: t.TempDir(), MaxBytes: 1 << 20, SegmentBytes: 4096})
	for i := range 100 {
		j.Emit(NewTargetDown(t0.Add(time.Duration(i)*time.Minute), tokyo, i))
	}
	// A latency shift is stamped with its onset, detected minutes later.
	j.Emit(NewLatencyShift(t0.Add(95*time.Minute+30*time.Second), tokyo, 70*time.Millisecond, 90*time.Millisecond, t0.Add(99*time.Minute)))
	for i := 100; i < 130; i++ {
		j.Emit(NewTargetDown(t0.Add(time.Duration(i)*time.Minute), tokyo, i))
	}
	evs := query(t, j, Query{Limit: 40, Related: false})
	if len(evs) != 40 {
		t.Fatalf("got %d", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Time.After(evs[i-1].Time) {
			t.Fatalf("not newest first at %d", i)
		}
	}
	if evs[34].Kind != LatencyShift {
		t.Fatalf("the shift is not in its place by time: %v", evs[34].Summary)
	}
}

func TestRelated(t *testing.T) {
	j := open(t, Options{Dir: t.TempDir()})
	at := t0.Add(time.Hour)
	aws := func(site, seg, vif string) Labels {
		return Labels{Site: site, Segment: seg, VIFID: vif, BGPPeerID: "p-" + vif}
	}
	emit := func(e Event) Event { j.Emit(e); return e }
	mplsTokyo := tokyo
	mplsTokyo.Path, mplsTokyo.Target = "mpls", "10.78.5.1"
	want := []Event{
		emit(NewPathChanged(at.Add(-2*time.Minute), mplsTokyo, []string{"a"}, []string{"b"})),           // same pair
		emit(NewBGPPeerChanged(at.Add(-time.Minute), aws("ap-tokyo", "prod", "v1"), "x", "up", "down")), // target site, same segment
		emit(NewBGPPeerChanged(at.Add(time.Minute), aws("us-east", "", "v9"), "x", "up", "down")),       // source site, no segment
		emit(NewConfigReloaded(at.Add(-9*time.Minute), "us-east", []string{"x"}, nil, nil)),             // agent-wide
	}
	notWant := []Event{
		emit(NewBGPPeerChanged(at.Add(-time.Minute), aws("ap-tokyo", "dev", "v2"), "x", "up", "down")),                                      // other segment
		emit(NewBGPPeerChanged(at.Add(-time.Minute), aws("eu-frankfurt", "prod", "v3"), "x", "up", "down")),                                 // other site
		emit(NewPathChanged(at.Add(-time.Minute), Probe("us-east", "eu-frankfurt", "10.77.7.1", "sitelink", "prod", "icmp", ""), nil, nil)), // other pair
		emit(NewPathChanged(at.Add(-11*time.Minute), tokyo, []string{"a"}, []string{"b"})),                                                  // too early
	}
	_ = notWant
	emit(NewTargetDown(at, tokyo, 3))

	evs := query(t, j, Query{Kinds: []Kind{TargetDown}, Related: true})
	if len(evs) != 1 {
		t.Fatalf("got %d anchors", len(evs))
	}
	got := map[string]bool{}
	for _, r := range evs[0].Related {
		got[r.Summary] = true
		if len(r.Related) != 0 {
			t.Error("related events carry no related list of their own")
		}
	}
	for _, w := range want {
		if !got[w.Summary] {
			t.Errorf("missing related: %s", w.Summary)
		}
	}
	if len(evs[0].Related) != len(want) {
		for _, r := range evs[0].Related {
			t.Logf("related: %s", r.Summary)
		}
		t.Fatalf("%d related, want %d", len(evs[0].Related), len(want))
	}
	for i := 1; i < len(evs[0].Related); i++ {
		if evs[0].Related[i].Time.After(evs[0].Related[i-1].Time) {
			t.Fatal("related not newest first")
		}
	}
	// A path change is no anchor: no related list.
	pc := query(t, j, Query{Kinds: []Kind{PathChanged}, Related: true})
	for _, e := range pc {
		if len(e.Related) != 0 {
			t.Fatalf("non-anchor %s got related events", e.Kind)
		}
	}
	// Without related=true nothing is computed.
	if evs := query(t, j, Query{Kinds: []Kind{TargetDown}}); len(evs[0].Related) != 0 {
		t.Fatal("related filled without being asked")
	}
}

func TestConcurrentEmitAndQuery(t *testing.T) {
	j := open(t, Options{Dir: t.TempDir(), MaxBytes: 256 << 10, SegmentBytes: 16 << 10})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				j.Emit(NewTargetDown(t0.Add(time.Duration(w*1000+i)*time.Millisecond), tokyo, i))
			}
		}()
	}
	stop := make(chan struct{})
	var qerr error
	var qwg sync.WaitGroup
	qwg.Add(1)
	go func() {
		defer qwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := j.Query(context.Background(), Query{Related: true, Limit: 50}); err != nil {
				qerr = err
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	qwg.Wait()
	if qerr != nil {
		t.Fatal(qerr)
	}
	if st := j.Stats(); st.Events == 0 || st.Bytes > 256<<10 {
		t.Fatalf("%+v", st)
	}
}
