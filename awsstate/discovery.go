package awsstate

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/directconnect"

	"github.com/probed/probed/config"
)

// DiscoveredVIF is a SiteLink-enabled VIF attached to one of the mesh's
// Direct Connect gateways.
type DiscoveredVIF struct {
	Account, Region, GatewayID string
	VIF                        VIF
}

// discover reads the gateways' attachments and, in each region they name,
// the attached VIFs. It runs at aws.discovery.interval.
func (p *Poller) discover(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout.D())
	defer cancel()
	var found []DiscoveredVIF
	var firstErr error
	for _, acc := range p.accounts {
		d, err := p.discoverAccount(ctx, acc)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		found = append(found, d...)
	}
	p.record(&p.discStatus, ServiceDX, regionKey{region: "global"}, firstErr)
	if firstErr != nil {
		return // keep the last good list: targets should not flap with the API
	}
	p.mu.Lock()
	p.discovered = found
	p.mu.Unlock()
}

func (p *Poller) discoverAccount(ctx context.Context, acc *account) ([]DiscoveredVIF, error) {
	home := p.state(acc, p.homeRegion())
	attached := map[string]string{} // VIF → gateway
	regions := map[string]bool{}
	for _, gw := range p.cfg.DXGatewayIDs {
		var tok *string
		for page := 0; page < maxPages; page++ {
			out, err := home.dx.DescribeDirectConnectGatewayAttachments(ctx, &directconnect.DescribeDirectConnectGatewayAttachmentsInput{
				DirectConnectGatewayId: aws.String(gw), NextToken: tok, MaxResults: aws.Int32(100)})
			if err != nil {
				return nil, fmt.Errorf("describing attachments of Direct Connect gateway %s: %w", gw, err)
			}
			for _, a := range out.DirectConnectGatewayAttachments {
				if a.AttachmentState != "attached" {
					continue
				}
				attached[aws.ToString(a.VirtualInterfaceId)] = gw
				regions[aws.ToString(a.VirtualInterfaceRegion)] = true
			}
			if tok = out.NextToken; tok == nil {
				break
			}
		}
	}
	var rlist []string
	for r := range regions {
		if r != "" {
			rlist = append(rlist, r)
		}
	}
	sort.Strings(rlist)
	var out []DiscoveredVIF
	for _, r := range rlist {
		rs := p.state(acc, r)
		var tok *string
		for page := 0; page < maxPages; page++ {
			res, err := rs.dx.DescribeVirtualInterfaces(ctx, &directconnect.DescribeVirtualInterfacesInput{NextToken: tok, MaxResults: aws.Int32(100)})
			if err != nil {
				return nil, fmt.Errorf("describing virtual interfaces in %s for SiteLink discovery: %w", r, err)
			}
			for _, v := range res.VirtualInterfaces {
				id := aws.ToString(v.VirtualInterfaceId)
				gw, ok := attached[id]
				if !ok || !aws.ToBool(v.SiteLinkEnabled) || gone(string(v.VirtualInterfaceState)) {
					continue
				}
				vif := convertVIF(v)
				vif.Site, vif.Segment = p.mapper.vifSite(id, tagMap(v.Tags),
					p.mapper.explicitOrLocation(vif.ConnectionID, vif.Region, vif.Location))
				out = append(out, DiscoveredVIF{Account: acc.name, Region: r, GatewayID: gw, VIF: vif})
			}
			if tok = res.NextToken; tok == nil {
				break
			}
		}
	}
	return out, nil
}

// explicitOrLocation maps a connection without reading it: by aws.resources
// or by the site whose region and location match.
func (m *mapper) explicitOrLocation(connID, region, location string) string {
	if r, ok := m.explicit[connID]; ok && r.Site != "" {
		return r.Site
	}
	return m.byLocation[[2]string{region, location}]
}

// Discovered returns the SiteLink VIFs found by the last successful discovery.
func (p *Poller) Discovered() []DiscoveredVIF {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.discovered)
}

// Discover runs one discovery pass (for check-config) and returns its
// result or the error that stopped it.
func (p *Poller) Discover(ctx context.Context) ([]DiscoveredVIF, error) {
	p.discover(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.discStatus.up {
		return nil, fmt.Errorf("AWS SiteLink discovery: %s (%s)", p.discStatus.lastErr, Hint(p.discStatus.lastOutcome))
	}
	return slices.Clone(p.discovered), nil
}

// Targets turns discovered VIFs into planning input: one SiteLink target
// per BGP peer's customer address, labelled with the VIF's site and
// segment (aws.discovery.segments filters the segments). Own-site VIFs are
// left out; config.Plan drops addresses the mesh file already probes.
func Targets(found []DiscoveredVIF, cfg *config.Config, own string) []config.Discovered {
	var segs map[string]bool
	if cfg.AWS != nil && len(cfg.AWS.Discovery.Segments) > 0 {
		segs = map[string]bool{}
		for _, s := range cfg.AWS.Discovery.Segments {
			segs[s] = true
		}
	}
	var out []config.Discovered
	for _, d := range found {
		v := d.VIF
		site := v.Site
		if site == "" {
			site = v.Name // an unmapped new site: its VIF name says which
		}
		if site == own {
			continue
		}
		seg := v.Segment
		if seg == "" {
			seg = config.DefaultSegment
		}
		if segs != nil && !segs[seg] {
			continue
		}
		for _, peer := range v.Peers {
			pfx, err := netip.ParsePrefix(peer.CustomerAddress)
			var addr netip.Addr
			if err == nil {
				addr = pfx.Addr()
			} else if addr, err = netip.ParseAddr(peer.CustomerAddress); err != nil {
				continue
			}
			out = append(out, config.Discovered{Site: site, Address: addr.Unmap().String(), Path: "sitelink", Segment: seg})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Site != out[j].Site {
			return out[i].Site < out[j].Site
		}
		return strings.Compare(out[i].Address, out[j].Address) < 0
	})
	return out
}
