package sla

import (
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"time"
)

// Report is one SLA statement for a period. Every renderer prints the same
// numbers from it.
type Report struct {
	Prometheus  string    `json:"prometheus"`
	Generated   time.Time `json:"generated"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	StepSeconds float64   `json:"step_seconds"`
	Definition  string    `json:"definition"`
	// RTTResolution says what the RTT figures and latency verdicts were
	// computed from (per pair in Pair.RTTResolution).
	RTTResolution string `json:"rtt_resolution"`
	// AWSState is true when AWS-state metrics (probed_dx_*) were found, so
	// breach windows could be checked against them.
	AWSState bool `json:"aws_state"`
	// AWSPaths are the paths whose breach windows were checked against AWS state.
	AWSPaths    []string      `json:"aws_paths"`
	Pairs       []*Pair       `json:"pairs"`
	Comparisons []*Comparison `json:"path_comparisons"`
	// PathDiffPercent is the average of the comparisons' differences: how
	// much faster (negative) or slower sitelink was than mpls overall.
	PathDiffPercent Num      `json:"path_difference_percent"`
	Notes           []string `json:"notes"`
	// EventSources are the agents' journals read for the breach windows'
	// events (absent when none was given).
	EventSources []EventSource `json:"event_sources,omitempty"`
}

// Minutes counts the minutes of a period by outcome.
type Minutes struct {
	Total  int `json:"total"`
	Good   int `json:"good"`
	Bad    int `json:"bad"`
	NoData int `json:"no_data"`
	// Bad minutes by cause.
	Unreachable int `json:"unreachable"`
	Loss        int `json:"loss"`
	Latency     int `json:"latency"`
	// LatencyUnresolved counts minutes (included in Good) whose p95 RTT
	// fell in the histogram bucket that holds the RTT objective: the data
	// cannot tell whether they met it. They are never counted bad.
	LatencyUnresolved int `json:"latency_unresolved"`
}

// Objective is the objective a pair was measured against.
type Objective struct {
	AvailabilityPercent float64 `json:"availability_percent"`
	LossPercent         float64 `json:"loss_percent"`
	RTTP95Seconds       float64 `json:"rtt_p95_seconds"`
}

// RTT summarises round-trip times in seconds.
type RTT struct {
	P50  Num `json:"p50_seconds"`
	P95  Num `json:"p95_seconds"`
	P99  Num `json:"p99_seconds"`
	Mean Num `json:"mean_seconds"`
}

// Pair is the result for one source site, target site, path and segment.
type Pair struct {
	Source    string    `json:"source_site"`
	Target    string    `json:"target_site"`
	Path      string    `json:"path"`
	Segment   string    `json:"segment"`
	Objective Objective `json:"objective"`
	Minutes   Minutes   `json:"minutes"`
	// AvailabilityPercent is good / (good + bad); null with no data at all.
	AvailabilityPercent Num `json:"availability_percent"`
	// AvailabilityMinPercent is the availability if every minute whose
	// latency could not be judged (Minutes.LatencyUnresolved) was bad.
	AvailabilityMinPercent Num `json:"availability_min_percent"`
	// Status is "met", "breached", "unresolved" (met or breached depending
	// on minutes the RTT data cannot judge) or "no data".
	Status string `json:"status"`
	// RTTResolution says what the RTT figures and latency verdicts were
	// computed from: native-histogram buckets (and how wide) or classic
	// buckets.
	RTTResolution          string    `json:"rtt_resolution"`
	ErrorBudgetUsedPercent Num       `json:"error_budget_used_percent"`
	RTT                    RTT       `json:"rtt"`
	LossPercent            Num       `json:"loss_percent"`
	JitterSeconds          Num       `json:"jitter_seconds"`
	ProbesSent             float64   `json:"probes_sent"`
	ProbesLost             float64   `json:"probes_lost"`
	Breaches               []*Breach `json:"breaches"`
	Days                   []*Day    `json:"days"`

	status []byte // per-minute outcome
	latQ   map[int]latCand
	// unresolvedBucket names the bucket that held the objective.
	unresolvedBucket string
	buckets          Buckets
	native           NativeBuckets
	bounds           map[float64]bool // classic bucket bounds seen
	rttSum           float64
	rttN             float64
	jitSum           float64
	jitN             int
	dayAcc           []dayAcc
}

// Name is "source → target path/segment".
func (p *Pair) Name() string {
	return p.Source + " → " + p.Target + " " + p.Path + "/" + p.Segment
}

// Breach is a run of consecutive bad minutes.
type Breach struct {
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	DurationSeconds float64   `json:"duration_seconds"`
	Minutes         int       `json:"minutes"`
	// Cause is the worst cause in the window (unreachable, then loss, then
	// latency); Causes lists all of them.
	Cause      string      `json:"cause"`
	Causes     []string    `json:"causes"`
	AWSChanged bool        `json:"aws_state_changed"`
	AWSChanges []AWSChange `json:"aws_changes"`
	// Events are the agents' events that concern the pair, from one step
	// before Start to End, oldest first (absent when no journal was read;
	// see AttachEvents).
	Events []BreachEvent `json:"events,omitempty"`
}

// AWSChange is one change of an AWS-side state series.
type AWSChange struct {
	Time     time.Time `json:"time"`
	Resource string    `json:"resource"`
	Site     string    `json:"site"`
	Segment  string    `json:"segment,omitempty"`
	From     string    `json:"from"`
	To       string    `json:"to"`
}

// Day is one calendar day (UTC) of a pair.
type Day struct {
	Date                string `json:"date"`
	Good                int    `json:"good_minutes"`
	Bad                 int    `json:"bad_minutes"`
	NoData              int    `json:"no_data_minutes"`
	AvailabilityPercent Num    `json:"availability_percent"`
	RTT                 RTT    `json:"rtt"`
	LossPercent         Num    `json:"loss_percent"`
}

// latCand is a minute's p95 RTT whose latency verdict waits for the
// bucket layout (known once the days are read).
type latCand struct {
	p95    float64
	native bool
}

type dayAcc struct {
	sent, lost   float64
	buckets      Buckets
	native       NativeBuckets
	rttSum, rttN float64
}

// Comparison sets the sitelink path of a pair against its mpls path.
type Comparison struct {
	Source  string `json:"source_site"`
	Target  string `json:"target_site"`
	Segment string `json:"segment"`
	// Mean RTT over the period of each path, and sitelink's difference
	// from mpls in percent (negative: sitelink is faster).
	SitelinkMeanSeconds Num           `json:"sitelink_mean_seconds"`
	MPLSMeanSeconds     Num           `json:"mpls_mean_seconds"`
	DiffPercent         Num           `json:"difference_percent"`
	Better              string        `json:"better"`
	DaysSitelinkBetter  int           `json:"days_sitelink_better"`
	DaysMPLSBetter      int           `json:"days_mpls_better"`
	Days                []*CompareDay `json:"days"`
}

// CompareDay is one day of a path comparison.
type CompareDay struct {
	Date                string `json:"date"`
	SitelinkMeanSeconds Num    `json:"sitelink_mean_seconds"`
	MPLSMeanSeconds     Num    `json:"mpls_mean_seconds"`
	DiffPercent         Num    `json:"difference_percent"`
	Better              string `json:"better"`
}

// Num is a float that is written as null in JSON when it is not a number
// (no data) or infinite.
type Num float64

// MarshalJSON writes NaN and ±Inf as null.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// Valid reports whether the number is finite.
func (n Num) Valid() bool { return !math.IsNaN(float64(n)) && !math.IsInf(float64(n), 0) }

func nan() Num { return Num(math.NaN()) }

func ratio(a, b float64) Num {
	if b == 0 {
		return nan()
	}
	return Num(a / b)
}

// better names the path with the lower mean.
func better(sitelink, mpls Num) string {
	switch {
	case !sitelink.Valid() || !mpls.Valid():
		return ""
	case sitelink < mpls:
		return "sitelink"
	case mpls < sitelink:
		return "mpls"
	}
	return "equal"
}

func sortPairs(ps []*Pair) {
	sort.Slice(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		if a.Target != b.Target {
			return a.Target < b.Target
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Segment < b.Segment
	})
}

func fmtState(v float64) string {
	switch {
	case math.IsNaN(v):
		return "absent"
	case v == 1:
		return "up"
	case v == 0:
		return "down"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
