package config

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// AWSConfig configures AWS polling (Direct Connect, CloudWatch, Network
// Synthetic Monitor). Absent section: the agent never touches AWS.
// Owned by the AWS feature; docs/aws.md describes every field.
type AWSConfig struct {
	// Regions are polled in addition to the regions of the sites and the
	// regions the DX gateway attachments name.
	Regions []string `yaml:"regions"`
	// Accounts to poll, each through its own role. Empty: one account,
	// whatever the SDK's default credential chain yields.
	Accounts []AWSAccount `yaml:"accounts"`
	// DXGatewayIDs are the Direct Connect gateways of the SiteLink mesh.
	DXGatewayIDs []string `yaml:"dx_gateway_ids"`
	// PollAll makes this agent poll every site's resources instead of its own.
	PollAll bool `yaml:"poll_all"`

	// Interval between API polls (Direct Connect, NSM); MetricsInterval
	// between GetMetricData calls.
	Interval        Duration `yaml:"interval"`
	MetricsInterval Duration `yaml:"metrics_interval"`
	// Timeout bounds one poll round of one region, retries included.
	Timeout Duration `yaml:"timeout"`
	// StaleAfter: API state older than this is no longer exported.
	StaleAfter Duration `yaml:"stale_after"`
	// MetricsStaleAfter: a CloudWatch datapoint older than this is no longer
	// exported (CloudWatch publishes 1-3 minutes late).
	MetricsStaleAfter Duration `yaml:"metrics_stale_after"`
	// MetricsLookback is the window asked of GetMetricData each time.
	MetricsLookback Duration `yaml:"metrics_lookback"`

	// CloudWatch and NSM switch those pollers (default on).
	CloudWatch *bool `yaml:"cloudwatch"`
	NSM        *bool `yaml:"nsm"`

	// Tags names the resource tags that map AWS resources to sites.
	Tags AWSTagKeys `yaml:"tags"`
	// Resources maps resources explicitly; it wins over tags.
	Resources []AWSResource `yaml:"resources"`
	// Discovery derives probe targets from SiteLink VIFs.
	Discovery AWSDiscovery `yaml:"discovery"`
}

// AWSAccount is one AWS account reached by assuming a role.
type AWSAccount struct {
	Name       string   `yaml:"name"`
	RoleARN    string   `yaml:"role_arn"`
	ExternalID string   `yaml:"external_id"`
	Regions    []string `yaml:"regions"`
}

// AWSTagKeys are the tag keys read from connections, VIFs and monitors.
type AWSTagKeys struct {
	Site    string `yaml:"site"`
	Segment string `yaml:"segment"`
}

// AWSResource maps one resource (a dxcon-/dxlag- connection, a dxvif-
// virtual interface or an NSM monitor name) to a site and segment.
type AWSResource struct {
	ID      string `yaml:"id"`
	Site    string `yaml:"site"`
	Segment string `yaml:"segment"`
}

// AWSDiscovery turns SiteLink VIFs into probe targets.
type AWSDiscovery struct {
	Enabled  bool     `yaml:"enabled"`
	Interval Duration `yaml:"interval"`
	// Segments limits discovery to these segments (empty: all).
	Segments []string `yaml:"segments"`
}

// Defaults of the aws section.
const (
	DefaultAWSInterval          = time.Minute
	DefaultAWSMetricsInterval   = time.Minute
	DefaultAWSTimeout           = 30 * time.Second
	DefaultAWSStaleAfter        = 5 * time.Minute
	DefaultAWSMetricsStaleAfter = 10 * time.Minute
	DefaultAWSMetricsLookback   = 10 * time.Minute
	DefaultAWSDiscoveryInterval = 5 * time.Minute
	DefaultAWSTagSite           = "site"
	DefaultAWSTagSegment        = "segment"
)

var (
	awsRegionRE  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)
	awsRoleARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$`)
	dxGatewayRE  = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// CloudWatchEnabled reports whether CloudWatch metrics are polled.
func (a *AWSConfig) CloudWatchEnabled() bool { return a.CloudWatch == nil || *a.CloudWatch }

// NSMEnabled reports whether Network Synthetic Monitor is polled.
func (a *AWSConfig) NSMEnabled() bool { return a.NSM == nil || *a.NSM }

// MinAWSMetricsAge is how old a CloudWatch datapoint can be when it first
// becomes readable: CloudWatch stamps a datapoint with the start of its 60 s
// period and publishes it 1 to 3 minutes after the period ends. The agent
// reads it up to one metrics_interval later still, so metrics_stale_after
// must be at least MinAWSMetricsAge + metrics_interval, or series vanish
// between datapoints (at 10s nothing would be exported most of the time).
const MinAWSMetricsAge = 4 * time.Minute

func (a *AWSConfig) validate(v *validator, path string, c *Config) {
	set := func(field string) bool { return v.set(path + "." + field) }
	def := func(field string, d *Duration, val time.Duration) {
		if !set(field) {
			*d = Duration(val)
		}
	}
	const minInterval = 10 * time.Second
	def("interval", &a.Interval, DefaultAWSInterval)
	def("metrics_interval", &a.MetricsInterval, DefaultAWSMetricsInterval)
	// Defaults that depend on another value follow the value in force (or
	// its default when it is invalid, which is reported on its own), so a
	// value the user wrote never makes a default fail.
	interval, metricsInterval := a.Interval.D(), a.MetricsInterval.D()
	if interval < minInterval {
		interval = DefaultAWSInterval
	}
	if metricsInterval < minInterval {
		metricsInterval = DefaultAWSMetricsInterval
	}
	def("timeout", &a.Timeout, min(DefaultAWSTimeout, interval))
	def("stale_after", &a.StaleAfter, max(DefaultAWSStaleAfter, 5*interval))
	def("metrics_stale_after", &a.MetricsStaleAfter, max(DefaultAWSMetricsStaleAfter, MinAWSMetricsAge+2*metricsInterval))
	def("metrics_lookback", &a.MetricsLookback, DefaultAWSMetricsLookback)
	def("discovery.interval", &a.Discovery.Interval, DefaultAWSDiscoveryInterval)
	for _, tag := range []struct {
		field string
		val   *string
		def   string
	}{{"tags.site", &a.Tags.Site, DefaultAWSTagSite}, {"tags.segment", &a.Tags.Segment, DefaultAWSTagSegment}} {
		switch {
		case !set(tag.field):
			*tag.val = tag.def
		case *tag.val == "":
			v.at(path+"."+tag.field, "an empty tag key matches no resource: leave it out for %q", tag.def)
		}
	}

	// Direct Connect has no published TPS quota; more often than every 10s
	// only burns the shared throttling budget.
	valid := map[string]bool{}
	for _, d := range []struct {
		field string
		val   Duration
		min   time.Duration
	}{
		{"interval", a.Interval, minInterval},
		{"metrics_interval", a.MetricsInterval, minInterval},
		{"timeout", a.Timeout, time.Second},
		{"discovery.interval", a.Discovery.Interval, minInterval},
		{"metrics_lookback", a.MetricsLookback, 2 * time.Minute},
		{"stale_after", a.StaleAfter, time.Second},
	} {
		if d.val.D() < d.min {
			v.at(path+"."+d.field, "must be at least %s, got %s", d.min, d.val.D())
			continue
		}
		valid[d.field] = true
	}
	if a.MetricsLookback.D() > 3*time.Hour {
		v.at(path+".metrics_lookback", "must be at most 3h (60-second CloudWatch data is only kept at full resolution that long), got %s", a.MetricsLookback.D())
	}
	// Relations between two values are checked when both are valid on
	// their own; the error goes on the one the user wrote.
	if valid["stale_after"] && valid["interval"] && a.StaleAfter.D() < a.Interval.D() {
		v.at(path+".stale_after", "stale_after %s is shorter than interval %s: every series would vanish between polls", a.StaleAfter.D(), a.Interval.D())
	}
	if valid["metrics_interval"] {
		if least := MinAWSMetricsAge + a.MetricsInterval.D(); a.MetricsStaleAfter.D() < least {
			v.at(path+".metrics_stale_after", "must be at least %s, got %s: CloudWatch stamps a datapoint with the start of its minute and publishes it 1 to 3 minutes late, so the newest one is up to %s old when it appears, and it is read up to metrics_interval (%s) later",
				least, a.MetricsStaleAfter.D(), MinAWSMetricsAge, a.MetricsInterval.D())
		}
	}
	if valid["timeout"] && valid["interval"] && a.Timeout.D() > a.Interval.D() {
		if set("timeout") {
			v.at(path+".timeout", "timeout %s is longer than interval %s", a.Timeout.D(), a.Interval.D())
		}
	}

	checkRegions := func(p string, regions []string) {
		seen := map[string]bool{}
		for i, r := range regions {
			rp := p + "[" + strconv.Itoa(i) + "]"
			if !awsRegionRE.MatchString(r) {
				v.at(rp, "%s is not an AWS region name (e.g. us-east-1)", quote(r))
			}
			if seen[r] {
				v.at(rp, "region %s listed twice", quote(r))
			}
			seen[r] = true
		}
	}
	checkRegions(path+".regions", a.Regions)
	for i := range c.Sites {
		if r := c.Sites[i].Region; r != "" && !awsRegionRE.MatchString(r) {
			v.at("sites["+strconv.Itoa(i)+"].region", "%s is not an AWS region name (e.g. us-east-1)", quote(r))
		}
	}

	anyRegion := len(a.Regions) > 0
	for _, s := range c.Sites {
		anyRegion = anyRegion || s.Region != ""
	}
	for _, acc := range a.Accounts {
		anyRegion = anyRegion || len(acc.Regions) > 0
	}
	if !anyRegion {
		v.at(path, "no AWS region to poll: give the sites their region (sites[].region, e.g. us-east-1) or list aws.regions")
	}

	names := map[string]bool{}
	for i, acc := range a.Accounts {
		ap := path + ".accounts[" + strconv.Itoa(i) + "]"
		if acc.RoleARN == "" {
			v.at(ap+".role_arn", "role_arn is required (arn:aws:iam::<account>:role/<name>)")
		} else if !awsRoleARNRE.MatchString(acc.RoleARN) {
			v.at(ap+".role_arn", "%s is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)", quote(acc.RoleARN))
		}
		if acc.Name == "" {
			// The account number names it in metrics and logs.
			if parts := strings.Split(acc.RoleARN, ":"); len(parts) > 4 {
				a.Accounts[i].Name = parts[4]
			}
		}
		if n := a.Accounts[i].Name; n != "" {
			if names[n] {
				v.at(ap+".name", "account name %s used twice", quote(n))
			}
			names[n] = true
		}
		checkRegions(ap+".regions", acc.Regions)
	}

	seenGW := map[string]bool{}
	for i, id := range a.DXGatewayIDs {
		gp := path + ".dx_gateway_ids[" + strconv.Itoa(i) + "]"
		if !dxGatewayRE.MatchString(id) {
			v.at(gp, "%s is not a Direct Connect gateway ID (a lower-case UUID such as 5f294f92-bafb-4011-916d-9b0bEXAMPLE)", quote(id))
		}
		if seenGW[id] {
			v.at(gp, "gateway %s listed twice", quote(id))
		}
		seenGW[id] = true
	}
	if a.Discovery.Enabled && len(a.DXGatewayIDs) == 0 {
		v.at(path+".discovery.enabled", "discovery needs aws.dx_gateway_ids: SiteLink targets are the VIFs attached to those gateways")
	}

	sites := map[string]bool{}
	for _, s := range c.Sites {
		sites[s.Name] = true
	}
	seenRes := map[string]bool{}
	for i, r := range a.Resources {
		rp := path + ".resources[" + strconv.Itoa(i) + "]"
		switch {
		case r.ID == "":
			v.at(rp+".id", "id is required: a connection (dxcon-…, dxlag-…), a virtual interface (dxvif-…) or an NSM monitor name")
		case seenRes[r.ID]:
			v.at(rp+".id", "resource %s mapped twice", quote(r.ID))
		}
		seenRes[r.ID] = true
		if r.Site == "" && r.Segment == "" {
			v.at(rp, "map the resource to a site, a segment or both")
		}
		if r.Site != "" && !sites[r.Site] {
			v.at(rp+".site", "unknown site %s: the sites list has %s", quote(r.Site), strings.Join(siteNames(c), ", "))
		}
		if r.Segment != "" && !labelRE.MatchString(r.Segment) {
			v.at(rp+".segment", "segment %s may only hold letters, digits and _.:-", quote(r.Segment))
		}
	}
	for i, s := range a.Discovery.Segments {
		if !labelRE.MatchString(s) {
			v.at(path+".discovery.segments["+strconv.Itoa(i)+"]", "segment %s may only hold letters, digits and _.:-", quote(s))
		}
	}
}
