package awsstate

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/directconnect"
	dxtypes "github.com/aws/aws-sdk-go-v2/service/directconnect/types"
	"github.com/aws/aws-sdk-go-v2/service/networkmonitor"
)

// maxPages bounds every pagination loop: a server that keeps handing out
// tokens must not keep a poller busy forever.
const maxPages = 1000

// pollAPI runs one round of every service of a region (PollOnce); each
// service succeeds or fails on its own.
func (p *Poller) pollAPI(ctx context.Context, rs *regionState) {
	p.pollDXRound(ctx, rs)
	if p.cfg.NSMEnabled() {
		p.pollNSMRound(ctx, rs)
	}
}

// pollDXRound reads a region's connections, VIFs and BGP sessions.
func (p *Poller) pollDXRound(ctx context.Context, rs *regionState) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	defer cancel()
	conns, vifs, err := p.pollDX(ctx, rs)
	p.record(&rs.dxStatus, ServiceDX, rs.key, err)
	if err == nil {
		p.mu.Lock()
		rs.conns, rs.vifs, rs.dxTime = conns, vifs, p.now()
		p.mu.Unlock()
	}
}

// pollNSMRound reads a region's NSM monitors and probes.
func (p *Poller) pollNSMRound(ctx context.Context, rs *regionState) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	defer cancel()
	probes, err := p.pollNSM(ctx, rs)
	p.record(&rs.nsmStatus, ServiceNSM, rs.key, err)
	if err == nil {
		p.mu.Lock()
		rs.probes, rs.nsmTime = probes, p.now()
		p.mu.Unlock()
	}
}

// pollCWRound refreshes the light-level lanes (at most every aws.interval)
// and reads the region's CloudWatch batch. A failed lane listing keeps the
// previous lanes and is reported only if the batch itself succeeds.
func (p *Poller) pollCWRound(ctx context.Context, rs *regionState, force bool) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	defer cancel()
	var lanesErr error
	p.mu.Lock()
	due := force || rs.lanesTime.IsZero() || p.now().Sub(rs.lanesTime) >= p.cfg.Interval.D()
	p.mu.Unlock()
	if due {
		lanes, err := p.listLanes(ctx, rs)
		if err != nil {
			lanesErr = fmt.Errorf("listing AWS/DX light-level metrics: %w", err)
		} else {
			p.mu.Lock()
			rs.lanes, rs.lanesTime = lanes, p.now()
			p.mu.Unlock()
		}
	}
	err := p.pollMetrics(ctx, rs)
	if err == nil {
		err = lanesErr
	}
	p.record(&rs.cwStatus, ServiceCloudWatch, rs.key, err)
}

func tagMap(tags []dxtypes.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// gone reports VIF states AWS still lists but that no longer exist.
func gone(state string) bool {
	switch state {
	case "deleted", "deleting", "rejected":
		return true
	}
	return false
}

// macsecUp reads portEncryptionStatus, which is free text ("Encryption
// Up"), so it is compared loosely.
func macsecUp(s string) bool {
	return strings.EqualFold(strings.Join(strings.Fields(s), " "), "encryption up")
}

func (p *Poller) pollDX(ctx context.Context, rs *regionState) ([]Connection, []VIF, error) {
	var conns []Connection
	sites := map[string]string{} // connection → site
	var tok *string
	for page := 0; page < maxPages; page++ {
		out, err := rs.dx.DescribeConnections(ctx, &directconnect.DescribeConnectionsInput{NextToken: tok, MaxResults: aws.Int32(100)})
		if err != nil {
			return nil, nil, fmt.Errorf("describing Direct Connect connections: %w", err)
		}
		for _, c := range out.Connections {
			if gone(string(c.ConnectionState)) {
				continue
			}
			id := aws.ToString(c.ConnectionId)
			site := p.mapper.connectionSite(id, aws.ToString(c.Region), aws.ToString(c.Location), tagMap(c.Tags))
			sites[id] = site
			if !p.mapper.inScope(site) {
				continue
			}
			conn := Connection{ID: id, Name: aws.ToString(c.ConnectionName), Region: aws.ToString(c.Region),
				Location: aws.ToString(c.Location), Site: site, State: string(c.ConnectionState),
				Bandwidth: aws.ToString(c.Bandwidth), PortEncryptionStatus: aws.ToString(c.PortEncryptionStatus)}
			if m := aws.ToString(c.EncryptionMode); m != "" && m != "no_encrypt" {
				conn.EncryptionMode = m
				conn.MACsecUp = macsecUp(conn.PortEncryptionStatus)
			}
			conns = append(conns, conn)
		}
		if tok = out.NextToken; tok == nil {
			break
		}
	}

	// One connection-filtered listing per own connection keeps a site's
	// agent from reading the whole region; poll_all reads it in one go.
	var filters []*string
	if p.mapper.own == "" {
		filters = []*string{nil}
	} else {
		for _, c := range conns {
			filters = append(filters, aws.String(c.ID))
		}
	}
	var vifs []VIF
	for _, f := range filters {
		tok = nil
		for page := 0; page < maxPages; page++ {
			out, err := rs.dx.DescribeVirtualInterfaces(ctx, &directconnect.DescribeVirtualInterfacesInput{
				ConnectionId: f, NextToken: tok, MaxResults: aws.Int32(100)})
			if err != nil {
				return nil, nil, fmt.Errorf("describing Direct Connect virtual interfaces: %w", err)
			}
			for _, v := range out.VirtualInterfaces {
				if gone(string(v.VirtualInterfaceState)) {
					continue
				}
				vif := convertVIF(v)
				connSite, known := sites[vif.ConnectionID]
				if !known {
					connSite = p.mapper.byLocation[[2]string{vif.Region, vif.Location}]
				}
				vif.Site, vif.Segment = p.mapper.vifSite(vif.ID, tagMap(v.Tags), connSite)
				if p.mapper.inScope(vif.Site) {
					vifs = append(vifs, vif)
				}
			}
			if tok = out.NextToken; tok == nil {
				break
			}
		}
	}
	return conns, vifs, nil
}

func convertVIF(v dxtypes.VirtualInterface) VIF {
	vif := VIF{ID: aws.ToString(v.VirtualInterfaceId), Name: aws.ToString(v.VirtualInterfaceName),
		Region: aws.ToString(v.Region), Location: aws.ToString(v.Location),
		ConnectionID: aws.ToString(v.ConnectionId), GatewayID: aws.ToString(v.DirectConnectGatewayId),
		Type: aws.ToString(v.VirtualInterfaceType), State: string(v.VirtualInterfaceState),
		VLAN: int(v.Vlan), MTU: int(aws.ToInt32(v.Mtu)), ASN: int64(v.Asn), AddressFamily: string(v.AddressFamily),
		JumboFrameCapable: aws.ToBool(v.JumboFrameCapable), SiteLinkEnabled: aws.ToBool(v.SiteLinkEnabled)}
	if v.AsnLong != nil && *v.AsnLong != 0 {
		vif.ASN = *v.AsnLong
	}
	for _, b := range v.BgpPeers {
		vif.Peers = append(vif.Peers, BGPPeer{ID: aws.ToString(b.BgpPeerId), AddressFamily: string(b.AddressFamily),
			CustomerAddress: aws.ToString(b.CustomerAddress), AmazonAddress: aws.ToString(b.AmazonAddress),
			Status: string(b.BgpStatus), State: string(b.BgpPeerState)})
	}
	return vif
}

func (p *Poller) pollNSM(ctx context.Context, rs *regionState) ([]NSMProbe, error) {
	type mon struct {
		name string
		tags map[string]string
	}
	var mons []mon
	pg := networkmonitor.NewListMonitorsPaginator(rs.nsm, &networkmonitor.ListMonitorsInput{MaxResults: aws.Int32(100)})
	for page := 0; pg.HasMorePages() && page < maxPages; page++ {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing Network Synthetic Monitor monitors: %w", err)
		}
		for _, m := range out.Monitors {
			name := aws.ToString(m.MonitorName)
			if site, _ := p.mapper.probeSite(name, m.Tags, nil); p.mapper.inScope(site) {
				mons = append(mons, mon{name, m.Tags})
			}
		}
	}
	var probes []NSMProbe
	for _, m := range mons {
		out, err := rs.nsm.GetMonitor(ctx, &networkmonitor.GetMonitorInput{MonitorName: aws.String(m.name)})
		if err != nil {
			return nil, fmt.Errorf("reading NSM monitor %s: %w", m.name, err)
		}
		for _, pr := range out.Probes {
			site, seg := p.mapper.probeSite(m.name, out.Tags, pr.Tags)
			probes = append(probes, NSMProbe{Monitor: m.name, MonitorState: string(out.State), Region: rs.key.region,
				Site: site, Segment: seg, ID: aws.ToString(pr.ProbeId), SourceARN: aws.ToString(pr.SourceArn),
				Destination: aws.ToString(pr.Destination), Protocol: string(pr.Protocol), State: string(pr.State),
				Port: int(aws.ToInt32(pr.DestinationPort)), PacketSize: int(aws.ToInt32(pr.PacketSize)),
				AggregationPeriod: int(aws.ToInt64(out.AggregationPeriod))})
		}
	}
	return probes, nil
}

// listLanes finds which connections report light levels per optical lane:
// CloudWatch matches dimension sets exactly, so a query must name the lane.
func (p *Poller) listLanes(ctx context.Context, rs *regionState) (map[string][]string, error) {
	lanes := map[string][]string{}
	pg := cloudwatch.NewListMetricsPaginator(rs.cw, &cloudwatch.ListMetricsInput{
		Namespace: aws.String("AWS/DX"), MetricName: aws.String("ConnectionLightLevelRx")})
	for page := 0; pg.HasMorePages() && page < maxPages; page++ {
		out, err := pg.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, m := range out.Metrics {
			var conn, lane string
			for _, d := range m.Dimensions {
				switch aws.ToString(d.Name) {
				case "ConnectionId":
					conn = aws.ToString(d.Value)
				case "OpticalLaneNumber":
					lane = aws.ToString(d.Value)
				}
			}
			if conn != "" && lane != "" {
				lanes[conn] = append(lanes[conn], lane)
			}
		}
	}
	return lanes, nil
}
