// Package status defines GET /api/v1/status — one agent's current view of
// its probes and of the AWS side, the same numbers as its /metrics — and
// builds the mesh view from it: this agent's status plus its peers',
// fetched concurrently with a timeout, aggregated into the matrix the
// console draws (GET /api/v1/mesh).
//
// The daemon implements Provider; this package knows nothing of the probe
// engine or the pollers.
package status

import (
	"context"
	"net/http"
	"time"

	"github.com/probed/probed/internal/jsonapi"
	"go.uber.org/zap"
)

// Paths of the HTTP API.
const (
	PathStatus = "/api/v1/status"
	PathMesh   = "/api/v1/mesh"
)

// Status is one agent's current view.
type Status struct {
	// Site is the agent's site (source_site of its targets).
	Site    string `json:"site"`
	Version string `json:"version,omitempty"`
	// Time is when the view was taken; Started when the agent started.
	Time    time.Time  `json:"time"`
	Started *time.Time `json:"started,omitempty"`
	// IntervalSeconds is the mesh's default probe interval (probe.interval).
	IntervalSeconds float64 `json:"interval_seconds"`
	// Targets: every probe series, guards included.
	Targets []Target `json:"targets"`
	// AWS is absent when the agent does not poll AWS.
	AWS *AWS `json:"aws,omitempty"`
}

// Target is one probe series: its labels as on /metrics and its numbers.
// A number that /metrics does not show yet (no verdict, no answer) is null.
type Target struct {
	SourceSite string `json:"source_site"`
	TargetSite string `json:"target_site"`
	Target     string `json:"target"`
	Path       string `json:"path"`
	Segment    string `json:"segment"`
	Protocol   string `json:"protocol"`
	Port       string `json:"port"`

	// Up is probed_target_up.
	Up *bool `json:"up"`
	// Since is when Up last changed (the agent's start if never).
	Since *time.Time `json:"since,omitempty"`
	// Sent and Lost are probed_probes_sent_total and
	// probed_probes_lost_total.
	Sent uint64 `json:"sent"`
	Lost uint64 `json:"lost"`
	// LossRatio is probed_loss_ratio (the last probe.loss_window probes).
	LossRatio *float64 `json:"loss_ratio"`
	// RTTMedianSeconds is the median RTT of the probes answered in the
	// newest minute that has answers (the current minute, else the one
	// before; history.Series.Latest gives it).
	RTTMedianSeconds *float64 `json:"rtt_median_seconds"`
	// JitterSeconds is probed_jitter_seconds.
	JitterSeconds *float64 `json:"jitter_seconds"`
	// Guard targets (expect: unreachable): Violation is
	// probed_segmentation_violation; guards have no other numbers.
	Guard     bool  `json:"guard,omitempty"`
	Violation *bool `json:"segmentation_violation,omitempty"`
	// Trace is the path discovery of the target (absent when not traced).
	Trace *Trace `json:"trace,omitempty"`
}

// Trace is the current path of a target, as on GET /paths.
type Trace struct {
	// Hops is the current hop list ("*" for a hop never heard from).
	Hops []string `json:"hops"`
	// LastChange is when the current path was first seen.
	LastChange *time.Time `json:"last_change,omitempty"`
	// Changes is probed_path_changes_total.
	Changes  uint64   `json:"changes"`
	Previous []string `json:"previous,omitempty"`
	// MTUBytes and MTUBlackhole are probed_path_mtu_bytes and
	// probed_path_mtu_blackhole (absent when no MTU search runs).
	MTUBytes     *int  `json:"mtu_bytes,omitempty"`
	MTUBlackhole *bool `json:"mtu_blackhole,omitempty"`
}

// AWS is the AWS side as the agent last polled it (probed_dx_*, probed_aws_*).
type AWS struct {
	Connections []Connection `json:"connections"`
	VIFs        []VIF        `json:"vifs"`
	// Sources is polling health per service (probed_aws_up).
	Sources []Source `json:"sources"`
}

// Connection is a Direct Connect connection.
type Connection struct {
	ID       string `json:"connection_id"`
	Name     string `json:"connection_name"`
	Site     string `json:"site"`
	Region   string `json:"region"`
	Location string `json:"location"`
	// State is connectionState; Up is probed_dx_connection_up.
	State string `json:"state"`
	Up    bool   `json:"up"`
	// Since is when State last changed, as far as this agent has seen
	// (its start at the earliest).
	Since  *time.Time `json:"since,omitempty"`
	MACsec *MACsec    `json:"macsec,omitempty"`
}

// MACsec of a connection (absent for connections without it).
type MACsec struct {
	EncryptionMode string `json:"encryption_mode"`
	// Status is portEncryptionStatus; Up is probed_dx_connection_macsec_up.
	Status string     `json:"status"`
	Up     bool       `json:"up"`
	Since  *time.Time `json:"since,omitempty"`
}

// VIF is a virtual interface with its BGP sessions.
type VIF struct {
	ID           string `json:"vif_id"`
	Name         string `json:"vif_name"`
	Site         string `json:"site"`
	Segment      string `json:"segment"`
	Region       string `json:"region"`
	ConnectionID string `json:"connection_id"`
	// State is virtualInterfaceState; Up is probed_dx_vif_up.
	State string     `json:"state"`
	Up    bool       `json:"up"`
	Since *time.Time `json:"since,omitempty"`
	// PollFailed: the newest poll of the VIF's region failed; the state is
	// older and the BGP sessions read unknown.
	PollFailed bool      `json:"poll_failed,omitempty"`
	BGPPeers   []BGPPeer `json:"bgp_peers"`
}

// BGPPeer is one BGP session of a VIF.
type BGPPeer struct {
	ID            string `json:"bgp_peer_id"`
	AddressFamily string `json:"address_family"`
	PeerAddress   string `json:"peer_address"`
	// Status is bgpStatus (up, down, unknown); Up is probed_dx_bgp_peer_up.
	Status string     `json:"status"`
	Up     bool       `json:"up"`
	Since  *time.Time `json:"since,omitempty"`
}

// Source is the polling health of one AWS service.
type Source struct {
	Name        string     `json:"source"`
	Up          bool       `json:"up"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
}

// Provider gives the agent's current view. The daemon implements it from
// the exporter's recorders, the history, path discovery and the AWS
// snapshot. It is called for every GET /api/v1/status and mesh refresh
// (about once per probe interval per open console), so it should be cheap.
type Provider interface {
	Status(ctx context.Context) (*Status, error)
}

// ProviderFunc adapts a function to Provider.
type ProviderFunc func(ctx context.Context) (*Status, error)

// Status implements Provider.
func (f ProviderFunc) Status(ctx context.Context) (*Status, error) { return f(ctx) }

// Handler serves GET /api/v1/status from p.
func Handler(p Provider, log *zap.Logger) http.Handler {
	if log == nil {
		log = zap.NewNop()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !jsonapi.Get(w, r) {
			return
		}
		if len(r.URL.Query()) > 0 {
			jsonapi.Error(w, http.StatusBadRequest, "GET "+PathStatus+" takes no parameters")
			return
		}
		st, err := p.Status(r.Context())
		if err != nil {
			log.Error("status provider failed", zap.Error(err))
			jsonapi.Error(w, http.StatusInternalServerError, "taking the status: "+err.Error())
			return
		}
		jsonapi.Write(w, st)
	})
}
