// Package awsstate polls the AWS side of a SiteLink mesh — Direct Connect
// connections, virtual interfaces and BGP sessions, Network Synthetic
// Monitor probes and their CloudWatch metrics — and publishes what it
// learns as an immutable Snapshot. It knows nothing about Prometheus: the
// exporter turns snapshots into series.
//
// Staleness is decided here, when a snapshot is taken: state older than its
// limit is left out, so nothing downstream can repeat an old value.
package awsstate

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// Snapshot is one consistent view of the AWS side, taken at Taken.
type Snapshot struct {
	Taken       time.Time
	Connections []Connection
	VIFs        []VIF
	Probes      []NSMProbe
	// Metrics are the fresh CloudWatch datapoints (newest per series).
	Metrics []Datapoint
	// Sources is the health of each poller, by service.
	Sources []Source
	// Regions is the health of each (account, service, region) poller.
	Regions []RegionStatus
	// Requests counts API requests (every attempt) by service, operation
	// and outcome.
	Requests []RequestCount
}

// Connection is a Direct Connect connection as last polled.
type Connection struct {
	ID, Name, Region, Location, Site string
	State                            string // connectionState
	Bandwidth                        string
	// MACsec: EncryptionMode is empty for connections without MACsec.
	EncryptionMode       string
	PortEncryptionStatus string
	MACsecUp             bool
}

// VIF is a virtual interface as last polled.
type VIF struct {
	ID, Name, Region, Location, Site, Segment string
	ConnectionID, GatewayID, Type, State      string
	VLAN, MTU                                 int
	ASN                                       int64
	AddressFamily                             string
	JumboFrameCapable, SiteLinkEnabled        bool
	Peers                                     []BGPPeer
	// PollFailed is set when the newest poll of the VIF's region failed:
	// the state is from an earlier poll, so BGP session state is unknown.
	PollFailed bool
}

// BGPPeer is one BGP session of a VIF.
type BGPPeer struct {
	ID, AddressFamily, CustomerAddress, AmazonAddress string
	// Status is bgpStatus (up, down, unknown): the session state.
	Status string
	// State is bgpPeerState, the provisioning state.
	State string
}

// NSMProbe is a Network Synthetic Monitor probe with its monitor.
type NSMProbe struct {
	Monitor, MonitorState, Region, Site, Segment string
	ID, SourceARN, Destination, Protocol, State  string
	Port, PacketSize                             int
	AggregationPeriod                            int
}

// MetricKind names a CloudWatch-derived series.
type MetricKind int

// The kinds of datapoints; see docs/aws.md for the CloudWatch metric and
// statistic behind each.
const (
	ConnBytesPerSecond MetricKind = iota
	ConnPacketsPerSecond
	ConnLightLevel
	ConnErrors
	VIFBytesPerSecond
	VIFPacketsPerSecond
	NSMRTT
	NSMPacketLoss
	NSMHealth
)

// Datapoint is the newest CloudWatch value of one series, already in base
// units (bytes/s — AWS/DX publishes bits/s —, packets/s, dBm, seconds,
// ratio).
type Datapoint struct {
	Kind MetricKind
	// Resource is the connection, VIF or probe ID; Monitor is set for NSM.
	Resource, Monitor string
	// Site and Segment are the NSM probe's mapping (docs/aws.md), set for
	// NSM datapoints only.
	Site, Segment string
	Direction     string // egress, ingress, tx, rx
	Lane          string
	Value         float64
	Time          time.Time
}

// Source is the health of one service's polling across regions.
type Source struct {
	Name string // directconnect, networkmonitor, cloudwatch
	// Up is false when the newest poll of any region failed.
	Up bool
	// LastSuccess is the oldest of the regions' last successes (zero if a
	// region never succeeded), so it ages when any region stops.
	LastSuccess time.Time
}

// RegionStatus is one (account, service, region) poller.
type RegionStatus struct {
	Account, Service, Region string
	Up                       bool
	LastSuccess              time.Time
	LastError                string
	// Outcome classifies the last failure as the request counter does
	// (Classify: access_denied, throttled, …); empty while up.
	Outcome string
}

// RequestCount is a counter value.
type RequestCount struct {
	Service, Operation, Outcome string
	Count                       uint64
}

// dedupe drops repeats of a resource seen through two accounts or regions
// (a duplicate series would fail the whole scrape).
func dedupe(s *Snapshot) {
	seen := map[string]bool{}
	first := func(k string) bool {
		if seen[k] {
			return false
		}
		seen[k] = true
		return true
	}
	s.Connections = slices.DeleteFunc(s.Connections, func(c Connection) bool { return !first("c|" + c.ID) })
	s.VIFs = slices.DeleteFunc(s.VIFs, func(v VIF) bool { return !first("v|" + v.ID) })
	s.Probes = slices.DeleteFunc(s.Probes, func(p NSMProbe) bool { return !first("p|" + p.Monitor + "|" + p.ID) })
	s.Metrics = slices.DeleteFunc(s.Metrics, func(d Datapoint) bool {
		return !first(fmt.Sprintf("m|%d|%s|%s|%s|%s", d.Kind, d.Monitor, d.Resource, d.Direction, d.Lane))
	})
}

func sortSnapshot(s *Snapshot) {
	dedupe(s)
	sort.Slice(s.Connections, func(i, j int) bool { return s.Connections[i].ID < s.Connections[j].ID })
	sort.Slice(s.VIFs, func(i, j int) bool { return s.VIFs[i].ID < s.VIFs[j].ID })
	sort.Slice(s.Probes, func(i, j int) bool {
		if s.Probes[i].Monitor != s.Probes[j].Monitor {
			return s.Probes[i].Monitor < s.Probes[j].Monitor
		}
		return s.Probes[i].ID < s.Probes[j].ID
	})
	sort.Slice(s.Sources, func(i, j int) bool { return s.Sources[i].Name < s.Sources[j].Name })
}
