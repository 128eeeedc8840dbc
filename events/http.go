package events

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/probed/probed/internal/jsonapi"
	"go.uber.org/zap"
)

// Paths of the HTTP API.
const (
	PathEvents = "/api/v1/events"
	PathStream = "/api/v1/events/stream"
)

// Register mounts GET /api/v1/events and GET /api/v1/events/stream on mux.
func (j *Journal) Register(mux *http.ServeMux) {
	mux.Handle(PathEvents, http.HandlerFunc(j.serveList))
	mux.Handle(PathStream, http.HandlerFunc(j.serveStream))
}

// ListResponse is the body of GET /api/v1/events.
type ListResponse struct {
	Events []Event `json:"events"`
}

// ParseQuery reads the query parameters of GET /api/v1/events:
//
//	since, until  RFC 3339 time, Unix seconds, or a duration meaning that long ago ("6h")
//	kind          a kind; repeat it or separate with commas for any of several
//	limit         1..10000 (default 100)
//	related       true/false (default true)
//	<label>       any label name: equality (e.g. target_site=ap-tokyo)
//
// Any other parameter is an error, so a typo does not silently widen the
// answer.
func ParseQuery(v url.Values, now time.Time) (Query, error) {
	q := Query{Related: true, Labels: map[string]string{}}
	for name, vals := range v {
		val := vals[len(vals)-1]
		var err error
		switch name {
		case "since":
			q.Since, err = parseTime(val, now)
		case "until":
			q.Until, err = parseTime(val, now)
		case "limit":
			q.Limit, err = strconv.Atoi(val)
			if err == nil && (q.Limit < 1 || q.Limit > MaxLimit) {
				err = fmt.Errorf("must be between 1 and %d", MaxLimit)
			}
		case "related":
			q.Related, err = strconv.ParseBool(val)
		case "kind":
			for _, v := range vals {
				for k := range strings.SplitSeq(v, ",") {
					if k = strings.TrimSpace(k); k == "" {
						continue
					}
					if !Kind(k).Valid() {
						return q, fmt.Errorf("kind: unknown kind %q (known: %s)", k, kindList())
					}
					q.Kinds = append(q.Kinds, Kind(k))
				}
			}
		default:
			if _, ok := (Labels{}).Get(name); !ok {
				return q, fmt.Errorf("unknown parameter %q (parameters: since, until, kind, limit, related, and the labels %s)",
					name, strings.Join(LabelNames, ", "))
			}
			if len(vals) > 1 {
				return q, fmt.Errorf("%s: given %d times; a label filter takes one value", name, len(vals))
			}
			q.Labels[name] = val
		}
		if err != nil {
			return q, fmt.Errorf("%s: %w", name, err)
		}
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return q, fmt.Errorf("until (%s) is before since (%s)", q.Until.Format(time.RFC3339), q.Since.Format(time.RFC3339))
	}
	return q, nil
}

func kindList() string {
	var s []string
	for _, k := range Kinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time, Unix seconds nor a duration like 6h", s)
}

func (j *Journal) serveList(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.Get(w, r) {
		return
	}
	q, err := ParseQuery(r.URL.Query(), j.o.Now())
	if err != nil {
		jsonapi.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	evs, err := j.Query(r.Context(), q)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away
		}
		j.o.Logger.Error("events query failed", zap.Error(err))
		jsonapi.Error(w, http.StatusInternalServerError, err.Error())
		return
	}
	// Encoded through the plain API structs: Event's MarshalJSON would
	// have every event's bytes re-validated by the encoder.
	resp := struct {
		Events []apiEvent `json:"events"`
	}{Events: make([]apiEvent, len(evs))}
	for i, e := range evs {
		resp.Events[i] = toAPI(e)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		j.o.Logger.Debug("writing events response", zap.Error(err))
	}
}

// heartbeat keeps idle streams alive through proxies and lets a stream
// notice a client that went away.
const heartbeat = 15 * time.Second

// serveStream sends new events as Server-Sent Events ("data: <event
// JSON>"), filtered by kind and labels like the list. A client too slow to
// keep up is disconnected (its EventSource reconnects) rather than slowing
// down emitters.
func (j *Journal) serveStream(w http.ResponseWriter, r *http.Request) {
	if !jsonapi.Get(w, r) {
		return
	}
	v := r.URL.Query()
	for _, p := range []string{"since", "until", "limit", "related"} {
		if v.Has(p) {
			jsonapi.Error(w, http.StatusBadRequest, p+": not supported on the stream (it sends new events; use "+PathEvents+" for the past)")
			return
		}
	}
	q, err := ParseQuery(v, j.o.Now())
	if err != nil {
		jsonapi.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	rc := http.NewResponseController(w)
	sub := j.subscribe(q)
	if sub == nil {
		jsonapi.Error(w, http.StatusServiceUnavailable, "the event journal is closed")
		return
	}
	defer j.unsubscribe(sub)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n: connected\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
		case e, ok := <-sub.ch:
			if !ok {
				return // journal closed or we fell behind
			}
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// subscriber is one live stream.
type subscriber struct {
	q  Query
	ch chan Event
}

// streamBuffer events may wait for a stream's writer before it is cut off.
const streamBuffer = 256

func (j *Journal) subscribe(q Query) *subscriber {
	j.subMu.Lock()
	defer j.subMu.Unlock()
	if j.subs == nil {
		return nil // closed
	}
	s := &subscriber{q: q, ch: make(chan Event, streamBuffer)}
	j.subs[s] = struct{}{}
	return s
}

func (j *Journal) unsubscribe(s *subscriber) {
	j.subMu.Lock()
	defer j.subMu.Unlock()
	if _, ok := j.subs[s]; ok {
		delete(j.subs, s)
		close(s.ch)
	}
}

// Streams returns the number of live streams.
func (j *Journal) Streams() int {
	if j == nil {
		return 0
	}
	j.subMu.Lock()
	defer j.subMu.Unlock()
	return len(j.subs)
}

func (j *Journal) publish(e Event) {
	j.subMu.Lock()
	defer j.subMu.Unlock()
	for s := range j.subs {
		if !s.q.Match(&e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			j.o.Logger.Warn("event stream client too slow; disconnecting it")
			delete(j.subs, s)
			close(s.ch)
		}
	}
}

// EndStreams ends every live stream and refuses new ones: hook it to the
// HTTP server's shutdown (http.Server.RegisterOnShutdown) so open consoles
// do not hold the shutdown up. Close does it too.
func (j *Journal) EndStreams() {
	if j == nil {
		return
	}
	j.closeStreams()
}

func (j *Journal) closeStreams() {
	j.subMu.Lock()
	defer j.subMu.Unlock()
	for s := range j.subs {
		close(s.ch)
	}
	j.subs = nil
}
