package history

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/probed/probed/internal/jsonapi"
)

// PathHistory is the HTTP endpoint.
const PathHistory = "/api/v1/history"

// MaxSeries is the most series one request returns.
const MaxSeries = 100

// Response is the body of GET /api/v1/history.
type Response struct {
	// Enabled is false when history is turned off (no series then).
	Enabled     bool `json:"enabled"`
	StepSeconds int  `json:"step_seconds"`
	// Columns name the values of each point.
	Columns []string     `json:"columns"`
	Series  []SeriesJSON `json:"series"`
	// Truncated: more series matched than MaxSeries.
	Truncated bool `json:"truncated,omitempty"`
}

// columns of a point: time is the minute's start (Unix seconds); the RTTs
// are null when no probe of the minute was answered.
var columns = []string{"time", "min_seconds", "median_seconds", "max_seconds", "sent", "lost"}

// SeriesJSON is one target's points.
type SeriesJSON struct {
	Labels Key           `json:"labels"`
	Points [][6]*float64 `json:"points"`
}

// Register mounts GET /api/v1/history on mux.
func (s *Store) Register(mux *http.ServeMux) {
	mux.Handle(PathHistory, s.Handler(nil))
}

// Handler serves GET /api/v1/history. Parameters: the probe labels
// (source_site, target_site, target, path, segment, protocol, port) as
// equality filters, all optional, and since (a duration like 6h, RFC 3339
// or Unix seconds; default: everything kept). now is the clock (nil:
// time.Now).
func (s *Store) Handler(now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.Get(w, r) {
			return
		}
		t := now()
		filter, since, err := parseParams(r.URL.Query(), t)
		if err != nil {
			jsonapi.Error(w, http.StatusBadRequest, err.Error())
			return
		}
		resp := Response{Enabled: s.Enabled(), StepSeconds: 60, Columns: columns, Series: []SeriesJSON{}}
		for _, k := range s.Keys() {
			if !filter(k) {
				continue
			}
			if len(resp.Series) == MaxSeries {
				resp.Truncated = true
				break
			}
			pts := s.Get(k).Points(since, t)
			sj := SeriesJSON{Labels: k, Points: make([][6]*float64, len(pts))}
			for i, p := range pts {
				row := [6]*float64{f(float64(p.Time.Unix())), nil, nil, nil, f(float64(p.Sent)), f(float64(p.Lost))}
				if p.Sent > p.Lost {
					row[1], row[2], row[3] = f(p.Min.Seconds()), f(p.Median.Seconds()), f(p.Max.Seconds())
				}
				sj.Points[i] = row
			}
			resp.Series = append(resp.Series, sj)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

func f(v float64) *float64 { return &v }

func parseParams(v url.Values, now time.Time) (func(Key) bool, time.Time, error) {
	var want Key
	set := map[string]bool{}
	var since time.Time
	for name, vals := range v {
		if len(vals) != 1 {
			return nil, since, fmt.Errorf("%s: given %d times", name, len(vals))
		}
		val := vals[0]
		var p *string
		switch name {
		case "source_site":
			p = &want.SourceSite
		case "target_site":
			p = &want.TargetSite
		case "target":
			p = &want.Target
		case "path":
			p = &want.Path
		case "segment":
			p = &want.Segment
		case "protocol":
			p = &want.Protocol
		case "port":
			p = &want.Port
		case "since":
			t, err := parseTime(val, now)
			if err != nil {
				return nil, since, fmt.Errorf("since: %w", err)
			}
			since = t
			continue
		default:
			return nil, since, fmt.Errorf("unknown parameter %q (parameters: since and the labels source_site, target_site, target, path, segment, protocol, port)", name)
		}
		*p = val
		set[name] = true
	}
	return func(k Key) bool {
		return (!set["source_site"] || k.SourceSite == want.SourceSite) &&
			(!set["target_site"] || k.TargetSite == want.TargetSite) &&
			(!set["target"] || k.Target == want.Target) &&
			(!set["path"] || k.Path == want.Path) &&
			(!set["segment"] || k.Segment == want.Segment) &&
			(!set["protocol"] || k.Protocol == want.Protocol) &&
			(!set["port"] || k.Port == want.Port)
	}, since, nil
}

func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Unix(int64(f), 0), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time, Unix seconds nor a duration like 6h", s)
}
