// Package events is the agent's journal of what changed, and when: typed,
// timestamped events (a target went down, a pair's latency shifted, a path
// changed, a BGP session dropped, the config was reloaded…) kept on disk,
// queried over HTTP (GET /api/v1/events), streamed live (Server-Sent
// Events) and counted in probed_events_total{kind}.
//
// Emitters build an Event with one of the constructors in kinds.go and hand
// it to Journal.Emit: one call per fact. See docs/events.md.
package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// Kind names what happened. The set is closed: Emit refuses unknown kinds
// so probed_events_total has a fixed label set.
type Kind string

// Scope says what an event is about, which decides how it relates to others
// (see Related in query.go).
type Scope int

const (
	// ScopeProbe events concern one probe series (source_site, target_site,
	// target, path, segment, protocol, port).
	ScopeProbe Scope = iota
	// ScopeAWS events concern an AWS resource (connection, VIF, BGP peer,
	// NSM probe) and the site/segment it is mapped to.
	ScopeAWS
	// ScopeAgent events concern the agent as a whole (start, stop,
	// reload, AWS polling health).
	ScopeAgent
)

// The kinds of events. Their names are the values of the kind label and of
// the kind query parameter.
const (
	TargetDown Kind = "target_down"
	TargetUp   Kind = "target_up"

	LossStarted Kind = "loss_started"
	LossEnded   Kind = "loss_ended"

	LatencyShift Kind = "latency_shift"

	PathChanged           Kind = "path_changed"
	MTUChanged            Kind = "mtu_changed"
	MTUBlackholeStarted   Kind = "mtu_blackhole_started"
	MTUBlackholeEnded     Kind = "mtu_blackhole_ended"
	DSCPRemarked          Kind = "dscp_remarked"
	DSCPRestored          Kind = "dscp_restored"
	SegmentationViolation Kind = "segmentation_violation"
	SegmentationRestored  Kind = "segmentation_restored"
	STAMPLossStarted      Kind = "stamp_loss_started"

	DXConnectionChanged Kind = "dx_connection_changed"
	DXVIFChanged        Kind = "dx_vif_changed"
	BGPPeerChanged      Kind = "bgp_peer_changed"
	MACsecChanged       Kind = "macsec_changed"
	NSMHealthChanged    Kind = "nsm_health_changed"

	AWSPollFailed    Kind = "aws_poll_failed"
	AWSPollRecovered Kind = "aws_poll_recovered"

	ConfigReloaded Kind = "config_reloaded"
	AgentStarted   Kind = "agent_started"
	AgentStopped   Kind = "agent_stopped"
)

// kindInfo is what the package knows about each kind.
type kindInfo struct {
	scope Scope
	// anchor kinds are incidents: queries list the events near them
	// ("what changed nearby").
	anchor bool
}

var kinds = map[Kind]kindInfo{
	TargetDown:            {ScopeProbe, true},
	TargetUp:              {ScopeProbe, true},
	LossStarted:           {ScopeProbe, true},
	LossEnded:             {ScopeProbe, true},
	LatencyShift:          {ScopeProbe, true},
	PathChanged:           {ScopeProbe, false},
	MTUChanged:            {ScopeProbe, false},
	MTUBlackholeStarted:   {ScopeProbe, false},
	MTUBlackholeEnded:     {ScopeProbe, false},
	DSCPRemarked:          {ScopeProbe, false},
	DSCPRestored:          {ScopeProbe, false},
	SegmentationViolation: {ScopeProbe, false},
	SegmentationRestored:  {ScopeProbe, false},
	STAMPLossStarted:      {ScopeProbe, false},
	DXConnectionChanged:   {ScopeAWS, false},
	DXVIFChanged:          {ScopeAWS, false},
	BGPPeerChanged:        {ScopeAWS, false},
	MACsecChanged:         {ScopeAWS, false},
	NSMHealthChanged:      {ScopeAWS, false},
	AWSPollFailed:         {ScopeAgent, false},
	AWSPollRecovered:      {ScopeAgent, false},
	ConfigReloaded:        {ScopeAgent, false},
	AgentStarted:          {ScopeAgent, false},
	AgentStopped:          {ScopeAgent, false},
}

// Kinds returns every kind, in a stable order.
func Kinds() []Kind {
	return []Kind{
		TargetDown, TargetUp, LossStarted, LossEnded, LatencyShift,
		PathChanged, MTUChanged, MTUBlackholeStarted, MTUBlackholeEnded,
		DSCPRemarked, DSCPRestored, SegmentationViolation, SegmentationRestored, STAMPLossStarted,
		DXConnectionChanged, DXVIFChanged, BGPPeerChanged, MACsecChanged, NSMHealthChanged,
		AWSPollFailed, AWSPollRecovered, ConfigReloaded, AgentStarted, AgentStopped,
	}
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { _, ok := kinds[k]; return ok }

// Scope is what events of this kind are about.
func (k Kind) Scope() Scope { return kinds[k].scope }

// Anchor reports whether queries list the events near events of this kind.
func (k Kind) Anchor() bool { return kinds[k].anchor }

// Labels say what an event concerns. Probe events carry the probe labels of
// /metrics; AWS events the resource IDs and the site/segment the resource is
// mapped to (the same label names as the probed_dx_* series); agent events
// the agent's site, and for AWS polling the service, account and region.
// Empty labels are left out of the JSON.
type Labels struct {
	SourceSite string `json:"source_site,omitempty"`
	TargetSite string `json:"target_site,omitempty"`
	Target     string `json:"target,omitempty"`
	Path       string `json:"path,omitempty"`
	Segment    string `json:"segment,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	Port       string `json:"port,omitempty"`

	Site         string `json:"site,omitempty"`
	Region       string `json:"region,omitempty"`
	Account      string `json:"account,omitempty"`
	Service      string `json:"service,omitempty"`
	ConnectionID string `json:"connection_id,omitempty"`
	VIFID        string `json:"vif_id,omitempty"`
	BGPPeerID    string `json:"bgp_peer_id,omitempty"`
	Monitor      string `json:"monitor,omitempty"`
	ProbeID      string `json:"probe_id,omitempty"`
}

// LabelNames are the label names, as in the JSON and the query parameters.
var LabelNames = []string{
	"source_site", "target_site", "target", "path", "segment", "protocol", "port",
	"site", "region", "account", "service", "connection_id", "vif_id", "bgp_peer_id", "monitor", "probe_id",
}

// field returns a pointer to the label called name, or nil.
func (l *Labels) field(name string) *string {
	switch name {
	case "source_site":
		return &l.SourceSite
	case "target_site":
		return &l.TargetSite
	case "target":
		return &l.Target
	case "path":
		return &l.Path
	case "segment":
		return &l.Segment
	case "protocol":
		return &l.Protocol
	case "port":
		return &l.Port
	case "site":
		return &l.Site
	case "region":
		return &l.Region
	case "account":
		return &l.Account
	case "service":
		return &l.Service
	case "connection_id":
		return &l.ConnectionID
	case "vif_id":
		return &l.VIFID
	case "bgp_peer_id":
		return &l.BGPPeerID
	case "monitor":
		return &l.Monitor
	case "probe_id":
		return &l.ProbeID
	}
	return nil
}

// Get returns the label called name ("" when unset) and whether the name is
// a label at all.
func (l Labels) Get(name string) (string, bool) {
	p := l.field(name)
	if p == nil {
		return "", false
	}
	return *p, true
}

// Set sets the label called name; it fails for a name that is no label.
func (l *Labels) Set(name, value string) error {
	p := l.field(name)
	if p == nil {
		return fmt.Errorf("unknown label %q", name)
	}
	*p = value
	return nil
}

// Event is one fact. Time is when it happened (for a latency shift: the
// estimated onset, not the detection, which is in Details). Details hold
// kind-specific values (before/after, old/new hops, durations in seconds);
// they must encode as JSON.
type Event struct {
	Time    time.Time
	Kind    Kind
	Summary string
	Labels  Labels
	Details map[string]any
	// Related is filled by queries for anchor kinds: the events nearby on
	// the same pair, site or VIF (see docs/events.md).
	Related []Event
}

// apiEvent is the JSON shape of an event in the HTTP API.
type apiEvent struct {
	Time    time.Time      `json:"time"`
	Kind    Kind           `json:"kind"`
	Summary string         `json:"summary"`
	Labels  Labels         `json:"labels"`
	Details map[string]any `json:"details"`
	Related []apiEvent     `json:"related"`
}

func toAPI(e Event) apiEvent {
	a := apiEvent{Time: e.Time.UTC(), Kind: e.Kind, Summary: e.Summary, Labels: e.Labels, Details: e.Details, Related: []apiEvent{}}
	if a.Details == nil {
		a.Details = map[string]any{}
	}
	for _, r := range e.Related {
		a.Related = append(a.Related, toAPI(r))
	}
	return a
}

// MarshalJSON encodes the event as the API does.
func (e Event) MarshalJSON() ([]byte, error) { return json.Marshal(toAPI(e)) }

// UnmarshalJSON reads the API encoding (clients, peers, tests).
func (e *Event) UnmarshalJSON(b []byte) error {
	var a struct {
		Time    time.Time      `json:"time"`
		Kind    Kind           `json:"kind"`
		Summary string         `json:"summary"`
		Labels  Labels         `json:"labels"`
		Details map[string]any `json:"details"`
		Related []Event        `json:"related"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*e = Event{Time: a.Time, Kind: a.Kind, Summary: a.Summary, Labels: a.Labels, Details: a.Details, Related: a.Related}
	return nil
}

// record is the on-disk encoding: one JSON object per line, the time first
// as integer nanoseconds so a scan can read it without decoding the line.
type record struct {
	T       int64          `json:"t"`
	Kind    Kind           `json:"kind"`
	Summary string         `json:"summary"`
	Labels  Labels         `json:"labels"`
	Details map[string]any `json:"details,omitempty"`
}
