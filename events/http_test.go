package events

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, j *Journal) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	j.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, u string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestListAPI(t *testing.T) {
	clk := &clock{t: t0.Add(time.Hour)}
	j := open(t, Options{Dir: t.TempDir(), Now: clk.Now})
	j.Emit(NewPathChanged(t0.Add(-time.Minute), tokyo, []string{"a", "b"}, []string{"a", "c", "b"}))
	j.Emit(NewTargetDown(t0, tokyo, 3))
	j.Emit(NewAgentStarted(t0.Add(-2*time.Hour), "us-east", "dev"))
	srv := serve(t, j)

	code, body := get(t, srv.URL+PathEvents+"?target_site=ap-tokyo&since=2h")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	// The documented shape, key by key.
	var raw struct {
		Events []map[string]json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Events) != 2 {
		t.Fatalf("%s", body)
	}
	for _, e := range raw.Events {
		for _, k := range []string{"time", "kind", "summary", "labels", "details", "related"} {
			if _, ok := e[k]; !ok {
				t.Errorf("event without %q: %s", k, body)
			}
		}
		if len(e) != 6 {
			t.Errorf("event has extra keys: %s", body)
		}
	}
	var resp ListResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	down := resp.Events[0]
	if down.Kind != TargetDown || !down.Time.Equal(t0) || down.Labels != tokyo {
		t.Fatalf("%+v", down)
	}
	if len(down.Related) != 1 || down.Related[0].Kind != PathChanged {
		t.Fatalf("the outage does not list the path change nearby: %s", body)
	}
	if !strings.Contains(string(body), `"labels":{"source_site":"us-east","target_site":"ap-tokyo","target":"10.77.5.1","path":"sitelink","segment":"prod","protocol":"icmp"}`) {
		t.Errorf("labels not as on /metrics (empty port left out): %s", body)
	}

	// since as RFC 3339 and as Unix seconds; since=2h above excluded the
	// agent start 3 h before the clock.
	for _, since := range []string{t0.Add(-30 * time.Second).Format(time.RFC3339), strconv.FormatInt(t0.Add(-30*time.Second).Unix(), 10)} {
		code, body = get(t, srv.URL+PathEvents+"?related=false&since="+url.QueryEscape(since))
		if code != 200 || strings.Count(string(body), `"kind"`) != 1 {
			t.Errorf("since=%s: %d %s", since, code, body)
		}
	}
	code, body = get(t, srv.URL+PathEvents+"?kind=target_down,agent_started&related=false")
	if code != 200 || strings.Count(string(body), `"kind"`) != 2 {
		t.Errorf("kind list: %d %s", code, body)
	}
	code, body = get(t, srv.URL+PathEvents+"?target_site=nowhere")
	if code != 200 || string(body) != "{\"events\":[]}\n" {
		t.Errorf("empty answer: %d %q", code, body)
	}
}

func TestListAPIBadInput(t *testing.T) {
	j := open(t, Options{Dir: t.TempDir()})
	srv := serve(t, j)
	for q, want := range map[string]string{
		"kind=target_dwn":             `unknown kind \"target_dwn\"`,
		"targetsite=x":                `unknown parameter \"targetsite\"`,
		"limit=0":                     "limit: must be between 1 and 10000",
		"limit=abc":                   "limit:",
		"since=yesterday":             "since:",
		"related=maybe":               "related:",
		"since=1h&until=2h":           "until",
		"target_site=a&target_site=b": "given 2 times",
	} {
		code, body := get(t, srv.URL+PathEvents+"?"+q)
		if code != http.StatusBadRequest || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %s (want 400 with %q)", q, code, body, want)
		}
		var e map[string]string
		if json.Unmarshal(body, &e) != nil || e["error"] == "" {
			t.Errorf("%s: error is not JSON: %s", q, body)
		}
	}
	code, body := get(t, srv.URL+PathStream+"?since=1h")
	if code != http.StatusBadRequest {
		t.Errorf("stream with since: %d %s", code, body)
	}
	resp, err := http.Post(srv.URL+PathEvents, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

// sseReader reads "data:" payloads from a real HTTP stream.
func sseReader(t *testing.T, ctx context.Context, u string) <-chan Event {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan Event, 16)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e Event
			if json.Unmarshal([]byte(line), &e) == nil {
				ch <- e
			}
		}
	}()
	return ch
}

func waitStreams(t *testing.T, j *Journal, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for j.Streams() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams, want %d", j.Streams(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStream(t *testing.T) {
	j, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, j)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := sseReader(t, ctx, srv.URL+PathStream)
	downs := sseReader(t, ctx, srv.URL+PathStream+"?kind=target_down&target_site=ap-tokyo")
	waitStreams(t, j, 2)

	j.Emit(NewPathChanged(t0, tokyo, nil, nil))
	j.Emit(NewTargetDown(t0.Add(time.Second), tokyo, 3))
	recv := func(ch <-chan Event) Event {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("stream ended")
			}
			return e
		case <-time.After(20 * time.Second):
			t.Fatal("no event on the stream")
		}
		return Event{}
	}
	if e := recv(all); e.Kind != PathChanged {
		t.Fatalf("first on the full stream: %v", e.Kind)
	}
	if e := recv(all); e.Kind != TargetDown || e.Labels != tokyo {
		t.Fatalf("second on the full stream: %+v", e)
	}
	if e := recv(downs); e.Kind != TargetDown || !e.Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("filtered stream: %+v", e)
	}
	// Close ends the streams (so an HTTP server shutting down is not held
	// up by them).
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan Event{all, downs} {
		select {
		case e, ok := <-ch:
			if ok {
				t.Fatalf("event after close: %+v", e)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("stream still open after Close")
		}
	}
}

func TestSlowStreamIsCutOff(t *testing.T) {
	j := open(t, Options{Dir: t.TempDir()})
	sub := j.subscribe(Query{})
	for i := range streamBuffer + 10 {
		j.Emit(NewTargetDown(t0.Add(time.Duration(i)*time.Second), tokyo, i))
	}
	n := 0
	for range sub.ch {
		n++
	}
	if n != streamBuffer || j.Streams() != 0 {
		t.Fatalf("slow subscriber got %d events, %d streams left", n, j.Streams())
	}
}
