// Package awscollector exports the AWS side of the mesh (awsstate
// snapshots) as Prometheus series. Each scrape takes one snapshot, so a
// scrape is consistent, and whatever the snapshot left out as stale or gone
// is simply not emitted.
package awscollector

import (
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/probed/probed/awsstate"
)

// Source hands out snapshots; *awsstate.Poller is one.
type Source interface {
	Snapshot() *awsstate.Snapshot
}

// Collector is a prometheus.Collector over a Source that can be swapped
// (on reload) or cleared (aws: removed) while registered.
type Collector struct {
	src atomic.Pointer[Source]

	connUp, connState, macsecUp                            *prometheus.Desc
	vifUp, vifInfo, bgpUp, bgpStatus                       *prometheus.Desc
	connBps, vifBps, connPps, vifPps, light, errs          *prometheus.Desc
	nsmInfo, nsmRTT, nsmLoss, nsmHealth                    *prometheus.Desc
	requests, lastSuccess, up, regionUp, regionLastSuccess *prometheus.Desc
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// New returns a collector with no source (it emits nothing until Set).
func New() *Collector {
	return &Collector{
		connUp:    desc("probed_dx_connection_up", "1 when the Direct Connect connection's state is available.", "connection_id", "connection_name", "region", "location", "site"),
		connState: desc("probed_dx_connection_state", "The connection's connectionState as reported by AWS (value 1).", "connection_id", "state"),
		macsecUp:  desc("probed_dx_connection_macsec_up", "1 when MACsec encryption is up on the connection (portEncryptionStatus); absent without MACsec.", "connection_id", "encryption_mode"),
		vifUp:     desc("probed_dx_vif_up", "1 when the virtual interface's state is available.", "vif_id", "vif_name", "region", "site", "segment"),
		vifInfo: desc("probed_dx_vif_info", "Virtual interface attributes (value 1).", "vif_id", "vif_name", "connection_id", "dx_gateway_id", "location",
			"type", "vlan", "mtu", "sitelink_enabled", "jumbo_frame_capable", "asn", "state"),
		bgpUp: desc("probed_dx_bgp_peer_up", "1 when the BGP session (bgpStatus) is up, 0 when down or unknown; absent while polling its region fails.",
			"vif_id", "bgp_peer_id", "address_family", "peer_address", "site", "segment"),
		bgpStatus: desc("probed_dx_bgp_peer_status", "The BGP peer's bgpStatus (value 1); status=\"unknown\" also while polling its region fails.", "vif_id", "bgp_peer_id", "status"),
		connBps:   desc("probed_dx_connection_bytes_per_second", "Connection data rate in bytes per second (CloudWatch AWS/DX ConnectionBps*, 1-minute average, bits divided by 8).", "connection_id", "direction"),
		vifBps:    desc("probed_dx_vif_bytes_per_second", "Virtual interface data rate in bytes per second (CloudWatch AWS/DX VirtualInterfaceBps*, 1-minute average, bits divided by 8).", "vif_id", "direction"),
		connPps:   desc("probed_dx_connection_packets_per_second", "Connection packet rate (CloudWatch AWS/DX ConnectionPps*, 1-minute average).", "connection_id", "direction"),
		vifPps:    desc("probed_dx_vif_packets_per_second", "Virtual interface packet rate (CloudWatch AWS/DX VirtualInterfacePps*, 1-minute average).", "vif_id", "direction"),
		light:     desc("probed_dx_connection_light_level_dbm", "Optical power in dBm (CloudWatch AWS/DX ConnectionLightLevelTx/Rx); lane is empty for single-lane optics.", "connection_id", "direction", "lane"),
		errs:      desc("probed_dx_connection_errors", "MAC-level errors (CRC included) in the newest minute (CloudWatch AWS/DX ConnectionErrorCount, Sum).", "connection_id"),
		nsmInfo: desc("probed_nsm_probe_info", "Network Synthetic Monitor probe attributes (value 1).", "monitor", "probe_id", "site", "segment", "source_arn", "destination", "port",
			"protocol", "packet_size", "state"),
		nsmRTT:            desc("probed_nsm_rtt_seconds", "NSM round-trip time (CloudWatch AWS/NetworkMonitor RTT, converted from microseconds).", "monitor", "probe_id", "site", "segment"),
		nsmLoss:           desc("probed_nsm_packet_loss_ratio", "NSM packet loss (CloudWatch AWS/NetworkMonitor PacketLoss, converted from percent).", "monitor", "probe_id", "site", "segment"),
		nsmHealth:         desc("probed_nsm_health_indicator", "AWS Network Health Indicator: 1 when AWS reports degradation on its side.", "monitor", "probe_id", "site", "segment"),
		requests:          desc("probed_aws_api_requests_total", "AWS API requests, every attempt counted, by outcome.", "service", "operation", "outcome"),
		lastSuccess:       desc("probed_aws_last_success_timestamp_seconds", "When every region of the source last polled successfully (the oldest region's success).", "source"),
		up:                desc("probed_aws_up", "1 when the newest poll of every region of the source succeeded.", "source"),
		regionUp:          desc("probed_aws_region_up", "1 when the newest poll of this service in this account and region succeeded.", "service", "account", "region"),
		regionLastSuccess: desc("probed_aws_region_last_success_timestamp_seconds", "When this service last polled this account and region successfully.", "service", "account", "region"),
	}
}

// Set makes src the collector's source; nil stops all AWS series.
func (c *Collector) Set(src Source) {
	if src == nil {
		c.src.Store(nil)
		return
	}
	c.src.Store(&src)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connUp, c.connState, c.macsecUp, c.vifUp, c.vifInfo, c.bgpUp, c.bgpStatus,
		c.connBps, c.vifBps, c.connPps, c.vifPps, c.light, c.errs, c.nsmInfo, c.nsmRTT, c.nsmLoss, c.nsmHealth,
		c.requests, c.lastSuccess, c.up, c.regionUp, c.regionLastSuccess} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	p := c.src.Load()
	if p == nil {
		return
	}
	s := (*p).Snapshot()
	if s == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, x := range s.Connections {
		gauge(c.connUp, b2f(x.State == "available"), x.ID, x.Name, x.Region, x.Location, x.Site)
		gauge(c.connState, 1, x.ID, x.State)
		if x.EncryptionMode != "" {
			gauge(c.macsecUp, b2f(x.MACsecUp), x.ID, x.EncryptionMode)
		}
	}
	for _, v := range s.VIFs {
		gauge(c.vifUp, b2f(v.State == "available"), v.ID, v.Name, v.Region, v.Site, v.Segment)
		gauge(c.vifInfo, 1, v.ID, v.Name, v.ConnectionID, v.GatewayID, v.Location, v.Type, strconv.Itoa(v.VLAN),
			strconv.Itoa(v.MTU), strconv.FormatBool(v.SiteLinkEnabled), strconv.FormatBool(v.JumboFrameCapable),
			strconv.FormatInt(v.ASN, 10), v.State)
		for _, b := range v.Peers {
			if v.PollFailed {
				// The session state is unknown now: never repeat "up"
				// from before polling broke.
				gauge(c.bgpStatus, 1, v.ID, b.ID, "unknown")
				continue
			}
			gauge(c.bgpUp, b2f(b.Status == "up"), v.ID, b.ID, b.AddressFamily, b.CustomerAddress, v.Site, v.Segment)
			status := b.Status
			if status == "" {
				status = "unknown"
			}
			gauge(c.bgpStatus, 1, v.ID, b.ID, status)
		}
	}
	for _, pr := range s.Probes {
		port := ""
		if pr.Port != 0 {
			port = strconv.Itoa(pr.Port)
		}
		gauge(c.nsmInfo, 1, pr.Monitor, pr.ID, pr.Site, pr.Segment, pr.SourceARN, pr.Destination, port, pr.Protocol,
			strconv.Itoa(pr.PacketSize), strings.ToLower(pr.State))
	}
	for _, m := range s.Metrics {
		switch m.Kind {
		case awsstate.ConnBytesPerSecond:
			gauge(c.connBps, m.Value, m.Resource, m.Direction)
		case awsstate.ConnPacketsPerSecond:
			gauge(c.connPps, m.Value, m.Resource, m.Direction)
		case awsstate.VIFBytesPerSecond:
			gauge(c.vifBps, m.Value, m.Resource, m.Direction)
		case awsstate.VIFPacketsPerSecond:
			gauge(c.vifPps, m.Value, m.Resource, m.Direction)
		case awsstate.ConnLightLevel:
			gauge(c.light, m.Value, m.Resource, m.Direction, m.Lane)
		case awsstate.ConnErrors:
			gauge(c.errs, m.Value, m.Resource)
		case awsstate.NSMRTT:
			gauge(c.nsmRTT, m.Value, m.Monitor, m.Resource, m.Site, m.Segment)
		case awsstate.NSMPacketLoss:
			gauge(c.nsmLoss, m.Value, m.Monitor, m.Resource, m.Site, m.Segment)
		case awsstate.NSMHealth:
			gauge(c.nsmHealth, m.Value, m.Monitor, m.Resource, m.Site, m.Segment)
		}
	}
	for _, r := range s.Requests {
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(r.Count), r.Service, r.Operation, r.Outcome)
	}
	for _, src := range s.Sources {
		gauge(c.up, b2f(src.Up), src.Name)
		if !src.LastSuccess.IsZero() {
			gauge(c.lastSuccess, float64(src.LastSuccess.UnixMilli())/1e3, src.Name)
		}
	}
	for _, r := range s.Regions {
		gauge(c.regionUp, b2f(r.Up), r.Service, r.Account, r.Region)
		if !r.LastSuccess.IsZero() {
			gauge(c.regionLastSuccess, float64(r.LastSuccess.UnixMilli())/1e3, r.Service, r.Account, r.Region)
		}
	}
}
