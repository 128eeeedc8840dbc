// Package awstest is a local AWS endpoint for Direct Connect (awsJson1_1),
// Network Synthetic Monitor (restJson1) and CloudWatch (Smithy RPC v2 CBOR),
// faithful to the wire protocols of the pinned aws-sdk-go-v2 clients, so the
// real SDK can be tested without an AWS account. It serves a fixture (a
// SiteLink deployment), paginates every list, can throttle or fail on demand
// and lets tests change state (BGP sessions, MACsec) while it runs.
package awstest

import (
	"encoding/json"
	"fmt"
	"os"
)

// Fixture is the AWS-side state the server starts from. Member names are
// the wire names, so a fixture file reads like API responses.
type Fixture struct {
	Account     string       `json:"account"`
	Gateways    []Gateway    `json:"directConnectGateways"`
	Connections []Connection `json:"connections"`
	VIFs        []VIF        `json:"virtualInterfaces"`
	Monitors    []Monitor    `json:"monitors"`
}

// Tag is a Direct Connect tag.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Gateway is a Direct Connect gateway (global).
type Gateway struct {
	ID            string `json:"directConnectGatewayId"`
	Name          string `json:"directConnectGatewayName"`
	AmazonSideASN int64  `json:"amazonSideAsn"`
	OwnerAccount  string `json:"ownerAccount"`
	State         string `json:"directConnectGatewayState"`
}

// MACsecKey is one MACsec secret associated with a connection.
type MACsecKey struct {
	SecretARN string `json:"secretARN"`
	CKN       string `json:"ckn"`
	State     string `json:"state"`
	StartOn   string `json:"startOn"`
}

// Connection is a dedicated Direct Connect connection.
type Connection struct {
	ID                   string      `json:"connectionId"`
	Name                 string      `json:"connectionName"`
	State                string      `json:"connectionState"`
	Region               string      `json:"region"`
	Location             string      `json:"location"`
	Bandwidth            string      `json:"bandwidth"`
	VLAN                 int         `json:"vlan"`
	OwnerAccount         string      `json:"ownerAccount"`
	AWSDeviceV2          string      `json:"awsDeviceV2,omitempty"`
	AWSLogicalDeviceID   string      `json:"awsLogicalDeviceId,omitempty"`
	JumboFrameCapable    bool        `json:"jumboFrameCapable"`
	HasLogicalRedundancy string      `json:"hasLogicalRedundancy,omitempty"`
	MACsecCapable        bool        `json:"macSecCapable"`
	EncryptionMode       string      `json:"encryptionMode,omitempty"`
	PortEncryptionStatus string      `json:"portEncryptionStatus,omitempty"`
	MACsecKeys           []MACsecKey `json:"macSecKeys,omitempty"`
	Tags                 []Tag       `json:"tags"`
	// Lanes is the number of optical lanes that report light levels with
	// an OpticalLaneNumber dimension (0: one reading without it).
	Lanes int `json:"opticalLanes,omitempty"`
}

// BGPPeer is one BGP session of a VIF.
type BGPPeer struct {
	ID              string `json:"bgpPeerId"`
	AddressFamily   string `json:"addressFamily"`
	AmazonAddress   string `json:"amazonAddress"`
	CustomerAddress string `json:"customerAddress"`
	ASN             int64  `json:"asn"`
	State           string `json:"bgpPeerState"`
	Status          string `json:"bgpStatus"`
	AWSDeviceV2     string `json:"awsDeviceV2,omitempty"`
}

// VIF is a Direct Connect virtual interface.
type VIF struct {
	ID                 string    `json:"virtualInterfaceId"`
	Name               string    `json:"virtualInterfaceName"`
	Type               string    `json:"virtualInterfaceType"`
	State              string    `json:"virtualInterfaceState"`
	ConnectionID       string    `json:"connectionId"`
	Location           string    `json:"location"`
	Region             string    `json:"region"`
	VLAN               int       `json:"vlan"`
	ASN                int64     `json:"asn"`
	AmazonSideASN      int64     `json:"amazonSideAsn"`
	AddressFamily      string    `json:"addressFamily"`
	AmazonAddress      string    `json:"amazonAddress,omitempty"`
	CustomerAddress    string    `json:"customerAddress,omitempty"`
	MTU                int       `json:"mtu"`
	JumboFrameCapable  bool      `json:"jumboFrameCapable"`
	GatewayID          string    `json:"directConnectGatewayId,omitempty"`
	SiteLinkEnabled    bool      `json:"siteLinkEnabled"`
	OwnerAccount       string    `json:"ownerAccount"`
	AWSDeviceV2        string    `json:"awsDeviceV2,omitempty"`
	AWSLogicalDeviceID string    `json:"awsLogicalDeviceId,omitempty"`
	Tags               []Tag     `json:"tags"`
	BGPPeers           []BGPPeer `json:"bgpPeers"`
}

// Monitor is a Network Synthetic Monitor monitor with its probes.
type Monitor struct {
	Name              string            `json:"monitorName"`
	Region            string            `json:"region"`
	State             string            `json:"state"`
	AggregationPeriod int64             `json:"aggregationPeriod"`
	Tags              map[string]string `json:"tags"`
	Probes            []Probe           `json:"probes"`
}

// Probe is one NSM probe.
type Probe struct {
	ID              string            `json:"probeId"`
	SourceARN       string            `json:"sourceArn"`
	Destination     string            `json:"destination"`
	DestinationPort int               `json:"destinationPort,omitempty"`
	Protocol        string            `json:"protocol"`
	PacketSize      int               `json:"packetSize"`
	AddressFamily   string            `json:"addressFamily"`
	VPCID           string            `json:"vpcId"`
	State           string            `json:"state"`
	Tags            map[string]string `json:"tags"`
}

// LoadFixture reads a fixture file.
func LoadFixture(file string) (*Fixture, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading AWS fixture: %w", err)
	}
	var fx Fixture
	if err := json.Unmarshal(data, &fx); err != nil {
		return nil, fmt.Errorf("decoding AWS fixture %s: %w", file, err)
	}
	return &fx, nil
}

// clone deep-copies the fixture so a server never changes its caller's copy.
func (f *Fixture) clone() *Fixture {
	data, err := json.Marshal(f)
	if err != nil {
		panic(fmt.Sprintf("awstest: fixture does not marshal: %v", err))
	}
	var c Fixture
	if err := json.Unmarshal(data, &c); err != nil {
		panic(fmt.Sprintf("awstest: fixture does not unmarshal: %v", err))
	}
	return &c
}
