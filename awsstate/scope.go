package awsstate

import (
	"github.com/probed/probed/config"
)

// mapper assigns AWS resources to sites and segments. Precedence: an
// explicit aws.resources entry, then the resource's tags, then (for
// connections) a site whose region and location code match, and for VIFs
// the site of their connection.
type mapper struct {
	explicit   map[string]config.AWSResource
	siteTag    string
	segmentTag string
	byLocation map[[2]string]string // (region, location) → site
	own        string               // "" when polling every site
}

func newMapper(cfg *config.AWSConfig, sites []config.Site, own string) *mapper {
	m := &mapper{explicit: map[string]config.AWSResource{}, siteTag: cfg.Tags.Site, segmentTag: cfg.Tags.Segment,
		byLocation: map[[2]string]string{}}
	if m.siteTag == "" {
		m.siteTag = config.DefaultAWSTagSite
	}
	if m.segmentTag == "" {
		m.segmentTag = config.DefaultAWSTagSegment
	}
	for _, r := range cfg.Resources {
		m.explicit[r.ID] = r
	}
	for _, s := range sites {
		if s.Location != "" {
			m.byLocation[[2]string{s.Region, s.Location}] = s.Name
		}
	}
	if !cfg.PollAll {
		m.own = own
	}
	return m
}

// connectionSite maps a connection.
func (m *mapper) connectionSite(id, region, location string, tags map[string]string) string {
	if r, ok := m.explicit[id]; ok && r.Site != "" {
		return r.Site
	}
	if s := tags[m.siteTag]; s != "" {
		return s
	}
	return m.byLocation[[2]string{region, location}]
}

// vifSite maps a VIF; connSite is the site of its connection.
func (m *mapper) vifSite(id string, tags map[string]string, connSite string) (site, segment string) {
	r := m.explicit[id]
	site, segment = r.Site, r.Segment
	if site == "" {
		site = tags[m.siteTag]
	}
	if site == "" {
		site = connSite
	}
	if segment == "" {
		segment = tags[m.segmentTag]
	}
	return site, segment
}

// probeSite maps an NSM monitor and one of its probes: the site from the
// explicit mapping or the monitor's tag, the segment from the probe's tag,
// then the explicit mapping, then the monitor's tag.
func (m *mapper) probeSite(monitor string, monitorTags, probeTags map[string]string) (site, segment string) {
	r := m.explicit[monitor]
	site = r.Site
	if site == "" {
		site = monitorTags[m.siteTag]
	}
	if s := probeTags[m.segmentTag]; s != "" {
		segment = s
	} else if r.Segment != "" {
		segment = r.Segment
	} else {
		segment = monitorTags[m.segmentTag]
	}
	return site, segment
}

// inScope reports whether this agent exports a resource of site.
func (m *mapper) inScope(site string) bool { return m.own == "" || site == m.own }
