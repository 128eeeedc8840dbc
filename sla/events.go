package sla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/probed/probed/events"
)

// Breach windows name the events inside them. The report reads Prometheus;
// events live in the agents' journals (GET /api/v1/events), so `probed sla`
// fetches them from the agents it is given (--events.url, or every
// sites[].agent of the mesh file) for the report's period, and each breach
// window lists the events that concern its pair: the events events.Relates
// relates to the pair (probe events of the same source and target sites,
// AWS events of either site in an agreeing segment or on the pair's VIF,
// the own starts, stops, reloads and AWS polling failures of the agents of
// either site), from
// one step before the window's start (a window has the step's resolution:
// the cause of its first bad minute may come seconds before it) to its end.

// BreachEvent is an event of a breach window.
type BreachEvent struct {
	Time    time.Time         `json:"time"`
	Kind    string            `json:"kind"`
	Summary string            `json:"summary"`
	Labels  map[string]string `json:"labels"`
	// Agent is the journal it came from (the URL it was fetched from).
	Agent string `json:"agent"`
}

// EventSource is one agent's journal as the report read it.
type EventSource struct {
	URL    string `json:"url"`
	Events int    `json:"events"`
	// Error is why it could not be read (its events are missing).
	Error string `json:"error,omitempty"`
}

// MaxEventsPerSource bounds what is read from one agent for one report: a
// storm (a flapping series) must not make the report unbounded.
const MaxEventsPerSource = 200_000

// AgentEvent is an event with the journal it came from.
type AgentEvent struct {
	events.Event
	Agent string
}

// FetchEvents reads every event of [from, to] from each agent (base URLs,
// e.g. http://10.79.1.1:9447), paging through GET /api/v1/events newest
// first. An agent that cannot be read is reported in its EventSource, not
// as an error: the report is still written, and says what it lacks.
func FetchEvents(ctx context.Context, hc *http.Client, agents []string, from, to time.Time) ([]EventSource, []AgentEvent) {
	if hc == nil {
		hc = http.DefaultClient
	}
	var srcs []EventSource
	var all []AgentEvent
	for _, base := range agents {
		src := EventSource{URL: base}
		evs, err := fetchAgent(ctx, hc, base, from, to)
		if err != nil {
			src.Error = err.Error()
		}
		src.Events = len(evs)
		for _, e := range evs {
			all = append(all, AgentEvent{Event: e, Agent: base})
		}
		srcs = append(srcs, src)
	}
	return srcs, all
}

func fetchAgent(ctx context.Context, hc *http.Client, base string, from, to time.Time) ([]events.Event, error) {
	u, err := url.Parse(strings.TrimRight(base, "/") + events.PathEvents)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("events URL %q: want http:// or https:// and a host, e.g. http://10.79.1.1:9447", base)
	}
	var out []events.Event
	seen := map[string]bool{}
	until := to
	for {
		q := url.Values{"since": {from.UTC().Format(time.RFC3339Nano)}, "until": {until.UTC().Format(time.RFC3339Nano)},
			"limit": {fmt.Sprint(events.MaxLimit)}, "related": {"false"}}
		u.RawQuery = q.Encode()
		page, err := getEvents(ctx, hc, u.String())
		if err != nil {
			return out, err
		}
		added := 0
		for _, e := range page {
			// Pages overlap at their boundary time (until is inclusive).
			k := e.Time.UTC().Format(time.RFC3339Nano) + "\x00" + string(e.Kind) + "\x00" + e.Summary
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, e)
			added++
		}
		if len(page) < events.MaxLimit || added == 0 {
			return out, nil
		}
		if len(out) >= MaxEventsPerSource {
			return out, fmt.Errorf("more than %d events between %s and %s: only the newest are listed", MaxEventsPerSource,
				from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
		}
		until = page[len(page)-1].Time // the oldest of the page
	}
}

func getEvents(ctx context.Context, hc *http.Client, u string) ([]events.Event, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%s is unreachable: %v", redact(u), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		msg := strings.TrimSpace(string(b))
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, fmt.Errorf("%s answered %s: %s", redact(u), resp.Status, msg)
	}
	var r events.ListResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("reading the events of %s: %w", redact(u), err)
	}
	return r.Events, nil
}

// redact drops the query (and any credentials) from a URL for messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	u.RawQuery, u.User = "", nil
	return u.String()
}

// AttachEvents records the sources in the report and lists, in each breach
// window, the events that concern its pair (see the top of this file),
// oldest first. Sources that failed become notes.
func AttachEvents(r *Report, srcs []EventSource, evs []AgentEvent) {
	r.EventSources = srcs
	for _, s := range srcs {
		if s.Error != "" {
			r.Notes = append(r.Notes, fmt.Sprintf("Events of %s could not be read (%s): its breach windows may lack events.", s.URL, s.Error))
		}
	}
	slices.SortStableFunc(evs, func(a, b AgentEvent) int { return a.Time.Compare(b.Time) })
	step := time.Duration(r.StepSeconds * float64(time.Second))
	if step <= 0 {
		step = time.Minute
	}
	for _, p := range r.Pairs {
		anchor := events.Event{Kind: events.TargetDown, Labels: events.Labels{SourceSite: p.Source, TargetSite: p.Target,
			Path: p.Path, Segment: p.Segment}}
		for _, b := range p.Breaches {
			b.Events = []BreachEvent{}
			from, to := b.Start.Add(-step), b.End
			seen := map[string]bool{}
			for i := range evs {
				e := &evs[i]
				if e.Time.Before(from) || e.Time.After(to) || !events.Relates(&anchor, &e.Event) {
					continue
				}
				// An agent's own events (start, stop, reload, AWS
				// polling) concern the pairs of its site only.
				if e.Kind.Scope() == events.ScopeAgent && e.Labels.Site != p.Source && e.Labels.Site != p.Target {
					continue
				}
				// The same fact from two journals (agent events
				// aside, AWS state polled by two agents) is listed
				// once.
				k := e.Time.UTC().Format(time.RFC3339Nano) + "\x00" + string(e.Kind) + "\x00" + e.Summary
				if seen[k] {
					continue
				}
				seen[k] = true
				b.Events = append(b.Events, BreachEvent{Time: e.Time.UTC(), Kind: string(e.Kind), Summary: e.Summary,
					Labels: labelMap(e.Labels), Agent: e.Agent})
			}
		}
	}
}

func labelMap(l events.Labels) map[string]string {
	out := map[string]string{}
	for _, name := range events.LabelNames {
		if v, _ := l.Get(name); v != "" {
			out[name] = v
		}
	}
	return out
}
