package pathmetrics

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	"github.com/probed/probed/internal/jsonapi"
)

// TargetPath is one target in the GET /paths answer.
type TargetPath struct {
	SourceSite string `json:"source_site"`
	TargetSite string `json:"target_site"`
	Target     string `json:"target"`
	Path       string `json:"path"`
	Segment    string `json:"segment"`
	Protocol   string `json:"protocol"`
	Port       string `json:"port"`

	// Hops is the current path with the latest trace's figures per hop.
	Hops    []HopView `json:"hops"`
	Reached bool      `json:"reached"`
	// LastTrace is when the latest trace ran; LastChange when the
	// current path was first seen (its discovery, or the last change).
	LastTrace    *time.Time `json:"last_trace,omitempty"`
	LastChange   *time.Time `json:"last_change,omitempty"`
	Changes      uint64     `json:"changes"`
	PreviousPath []string   `json:"previous_path,omitempty"`

	MTUBytes     *int       `json:"mtu_bytes,omitempty"`
	MTUBlackhole *bool      `json:"mtu_blackhole,omitempty"`
	LastMTU      *time.Time `json:"last_mtu_search,omitempty"`
}

// HopView is one hop of a TargetPath.
type HopView struct {
	Hop     int    `json:"hop"`
	Address string `json:"address"` // "*" when never heard from
	// RTTSeconds is the median round-trip time in the latest trace,
	// absent when the hop did not answer it.
	RTTSeconds *float64 `json:"rtt_seconds,omitempty"`
	// LossRatio is the share of the latest trace's probes to this hop
	// that got no answer.
	LossRatio float64 `json:"loss_ratio"`
	Sent      int     `json:"sent"`
	Received  int     `json:"received"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Snapshot returns every target's path, sorted by labels.
func (s *Set) Snapshot() []TargetPath {
	s.mu.Lock()
	out := make([]TargetPath, 0, len(s.targets))
	for _, t := range s.targets {
		l := t.labels
		tp := TargetPath{
			SourceSite: l.SourceSite, TargetSite: l.TargetSite, Target: l.Target, Path: l.Path,
			Segment: l.Segment, Protocol: l.Protocol, Port: l.Port,
			Hops: []HopView{}, Reached: t.reached, Changes: t.changes,
			LastTrace: timePtr(t.lastAt), LastChange: timePtr(t.since),
			PreviousPath: slices.Clone(t.previous),
		}
		for i, a := range t.path {
			hv := HopView{Hop: i + 1, Address: a}
			if i < len(t.last) {
				h := t.last[i]
				hv.Sent, hv.Received = h.Sent, h.Received
				if h.Sent > 0 {
					hv.LossRatio = float64(h.Sent-h.Received) / float64(h.Sent)
				}
				if h.Received > 0 {
					r := h.RTT.Seconds()
					hv.RTTSeconds = &r
				}
			}
			tp.Hops = append(tp.Hops, hv)
		}
		if t.haveMTU {
			m, b := t.mtu, t.blackhole
			tp.MTUBytes, tp.MTUBlackhole, tp.LastMTU = &m, &b, timePtr(t.mtuAt)
		}
		out = append(out, tp)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b TargetPath) int {
		return cmp.Or(cmp.Compare(a.TargetSite, b.TargetSite), cmp.Compare(a.Target, b.Target), cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Segment, b.Segment), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// Handler serves GET /paths: {"paths": [TargetPath…]}.
func (s *Set) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.Get(w, r) {
			return
		}
		jsonapi.Write(w, struct {
			Paths []TargetPath `json:"paths"`
		}{s.Snapshot()})
	})
}
