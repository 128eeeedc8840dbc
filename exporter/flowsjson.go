package exporter

import (
	"math"
	"net/http"
	"time"

	"github.com/probed/probed/internal/jsonapi"
	"github.com/probed/probed/probe"
	"github.com/probed/probed/probe/ecmp"
)

var _ probe.FlowRecorder = (*recorder)(nil)

// FlowsDoc is the body of GET /api/v1/flows: every target probed over
// several flows, with each flow's loss and RTT over the flow window, the
// last test, and the member paths the flows' Paris traces found.
type FlowsDoc struct {
	Targets []FlowTarget `json:"targets"`
}

// FlowTarget is one target's flows.
type FlowTarget struct {
	SourceSite string `json:"source_site"`
	TargetSite string `json:"target_site"`
	Target     string `json:"target"`
	Path       string `json:"path"`
	Segment    string `json:"segment"`
	Protocol   string `json:"protocol"`
	Port       string `json:"port"`
	// Flows is how many flows are probed; WindowSeconds the flow window.
	Flows         int     `json:"flows"`
	WindowSeconds float64 `json:"window_seconds"`
	// The last test (ecmp.Test).
	Evaluated      *time.Time `json:"evaluated,omitempty"`
	Concentrated   bool       `json:"concentrated"`
	PValue         float64    `json:"p_value"`
	Log10P         float64    `json:"log10_p"`
	LossyFlows     []int      `json:"lossy_flows"`
	LossyLossRatio float64    `json:"lossy_loss_ratio"`
	OtherLossRatio float64    `json:"other_loss_ratio"`
	WorstLossRatio *float64   `json:"worst_loss_ratio,omitempty"`
	Evaluations    uint64     `json:"evaluations"`
	Flagged        uint64     `json:"flagged_evaluations"`
	// The last member-path round.
	LastTrace      *time.Time   `json:"last_trace,omitempty"`
	TraceError     string       `json:"trace_error,omitempty"`
	MemberPaths    []MemberPath `json:"member_paths"`
	AmbiguousFlows []int        `json:"ambiguous_flows"`
	FlowDetail     []FlowDetail `json:"flow_detail"`
}

// MemberPath is one distinct path among the flows' traces.
type MemberPath struct {
	Hops    []string `json:"hops"` // "*" for a hop no trace of the path heard from
	Reached bool     `json:"reached"`
	Flows   []int    `json:"flows"`
	// Lossy: every flow on it is lossy; Mixed: lossy and healthy flows
	// share it (the difference is below layer 3).
	Lossy   bool     `json:"lossy"`
	Mixed   bool     `json:"mixed"`
	Suspect *Suspect `json:"suspect,omitempty"`
}

// Suspect is a lossy path's first hop that no healthy path has.
type Suspect struct {
	Hop      int    `json:"hop"`
	Address  string `json:"address"`
	Previous string `json:"previous,omitempty"`
}

// FlowDetail is one flow over the window.
type FlowDetail struct {
	Flow int `json:"flow"`
	// ICMPID is the flow's echo identifier (ICMP), SourcePort its TCP
	// source port.
	ICMPID     *uint16 `json:"icmp_id,omitempty"`
	SourcePort *uint16 `json:"source_port,omitempty"`
	Sent       uint64  `json:"sent"`
	Lost       uint64  `json:"lost"`
	LossRatio  float64 `json:"loss_ratio"`
	// LossLow and LossHigh are the 99.9% Wilson interval of the ratio.
	LossLow    float64  `json:"loss_ratio_low"`
	LossHigh   float64  `json:"loss_ratio_high"`
	RTTMean    *float64 `json:"rtt_mean_seconds,omitempty"`
	RTTMin     *float64 `json:"rtt_min_seconds,omitempty"`
	SentTotal  uint64   `json:"sent_total"`
	LostTotal  uint64   `json:"lost_total"`
	Lossy      bool     `json:"lossy"`
	MemberPath *int     `json:"member_path,omitempty"` // index into member_paths
}

// Flows returns the flow detail of every target with flows, in label order.
func (m *Metrics) Flows() FlowsDoc {
	doc := FlowsDoc{Targets: []FlowTarget{}}
	now := time.Now()
	for _, r := range m.recorders() {
		r.mu.Lock()
		if r.flows != nil {
			doc.Targets = append(doc.Targets, r.flowTarget(now))
		}
		r.mu.Unlock()
	}
	return doc
}

// flowTarget builds the JSON of r. r.mu is held.
func (r *recorder) flowTarget(now time.Time) FlowTarget {
	f := r.flows
	lv := r.spec.LabelValues()
	ft := FlowTarget{SourceSite: lv[0], TargetSite: lv[1], Target: lv[2], Path: lv[3], Segment: lv[4], Protocol: lv[5], Port: lv[6],
		Flows: len(f.ids), WindowSeconds: f.window.Seconds(), Evaluations: f.evaluations, Flagged: f.flagged,
		LossyFlows: []int{}, MemberPaths: []MemberPath{}, AmbiguousFlows: []int{}, FlowDetail: []FlowDetail{}}
	if !f.evaluated.IsZero() {
		at := f.evaluated
		v := f.verdict
		ft.Evaluated, ft.Concentrated, ft.PValue, ft.Log10P = &at, v.Concentrated, v.P, finite(v.Log10P)
		ft.LossyLossRatio, ft.OtherLossRatio = v.LossyRatio, v.RestRatio
		if v.Concentrated {
			ft.LossyFlows = append(ft.LossyFlows, v.Lossy...)
		}
		if f.haveWorst {
			w := f.worst
			ft.WorstLossRatio = &w
		}
	}
	lossy := map[int]bool{}
	for _, i := range ft.LossyFlows {
		lossy[i] = true
	}
	pathOf := map[int]int{}
	if rep := f.report; rep != nil {
		at := rep.At
		ft.LastTrace = &at
		if rep.Err != nil {
			ft.TraceError = rep.Err.Error()
		}
		ft.AmbiguousFlows = append(ft.AmbiguousFlows, rep.Paths.Ambiguous...)
		for i, p := range rep.Paths.Paths {
			mp := MemberPath{Hops: make([]string, len(p.Hops)), Reached: p.Reached, Flows: append([]int{}, p.Flows...)}
			for j, h := range p.Hops {
				mp.Hops[j] = "*"
				if h.IsValid() {
					mp.Hops[j] = h.String()
				}
			}
			for _, fl := range p.Flows {
				pathOf[fl] = i
			}
			if i < len(f.attrib) {
				pv := f.attrib[i]
				mp.Mixed = pv.Mixed
				mp.Lossy = len(pv.Lossy) > 0 && !pv.Mixed
				if s := pv.Suspect; mp.Lossy && s.Found {
					mp.Suspect = &Suspect{Hop: s.TTL, Address: s.Addr.String()}
					if s.Prev.IsValid() {
						mp.Suspect.Previous = s.Prev.String()
					}
				}
			}
			ft.MemberPaths = append(ft.MemberPaths, mp)
		}
	}
	win := f.sum(now, len(f.ids), nil)
	for i, w := range win {
		d := FlowDetail{Flow: i, Sent: w.sent, Lost: w.lost, SentTotal: f.total[i].sent, LostTotal: f.total[i].lost, Lossy: lossy[i]}
		id := f.ids[i]
		if r.spec.Port == 0 {
			d.ICMPID = &id
		} else {
			d.SourcePort = &id
		}
		d.LossRatio = ecmp.FlowCount{Sent: w.sent, Lost: w.lost}.Ratio()
		d.LossLow, d.LossHigh = ecmp.Wilson(w.lost, w.sent, 3.29)
		if w.rtts > 0 {
			mean := float64(w.rttSum) / float64(w.rtts) / 1e6
			mn := float64(w.rttMin) / 1e6
			d.RTTMean, d.RTTMin = &mean, &mn
		}
		if p, ok := pathOf[i]; ok {
			d.MemberPath = &p
		}
		ft.FlowDetail = append(ft.FlowDetail, d)
	}
	return ft
}

func finite(v float64) float64 {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return -math.MaxFloat64
	}
	return v
}

// FlowsHandler serves GET /api/v1/flows.
func (m *Metrics) FlowsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.Get(w, r) {
			return
		}
		jsonapi.Write(w, m.Flows())
	})
}
