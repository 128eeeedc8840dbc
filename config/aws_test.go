package config

import (
	"strings"
	"testing"
	"time"
)

const awsBase = `sites:
  - name: us-east
    region: us-east-1
    location: EqDC2
    targets:
      - address: 10.77.1.1
  - name: ap-tokyo
    region: ap-northeast-1
    location: EqTY2
    targets:
      - address: 10.77.4.1
`

func TestAWSDefaults(t *testing.T) {
	cfg, err := Parse([]byte(awsBase+"aws: {}\n"), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.AWS
	if a.Interval.D() != time.Minute || a.MetricsInterval.D() != time.Minute || a.StaleAfter.D() != 5*time.Minute ||
		a.MetricsStaleAfter.D() != 10*time.Minute || a.MetricsLookback.D() != 10*time.Minute || a.Timeout.D() != 30*time.Second ||
		a.Tags.Site != "site" || a.Tags.Segment != "segment" || !a.CloudWatchEnabled() || !a.NSMEnabled() || a.PollAll {
		t.Fatalf("defaults: %+v", a)
	}
	cfg, err = Parse([]byte(awsBase), "mesh.yaml")
	if err != nil || cfg.AWS != nil {
		t.Fatalf("no aws: section must mean no AWS polling: %v %+v", err, cfg.AWS)
	}
	full := awsBase + `aws:
  regions: [eu-central-1]
  accounts:
    - role_arn: arn:aws:iam::222233334444:role/probed-read
      external_id: abc
      regions: [us-east-1]
  dx_gateway_ids: [5f294f92-bafb-4011-916d-9b0b7e1a0001]
  poll_all: true
  interval: 2m
  metrics_interval: 1m
  stale_after: 10m
  cloudwatch: false
  tags: {site: Site, segment: Env}
  resources:
    - {id: dxcon-fh1k7x2q, site: us-east}
    - {id: dxvif-fd1k7x2q, segment: dev}
  discovery:
    enabled: true
    segments: [prod]
`
	cfg, err = Parse([]byte(full), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AWS.Accounts[0].Name != "222233334444" || cfg.AWS.CloudWatchEnabled() || cfg.AWS.Tags.Site != "Site" || len(cfg.AWS.Resources) != 2 {
		t.Fatalf("parsed %+v", cfg.AWS)
	}
}

func TestAWSErrors(t *testing.T) {
	for _, tc := range []struct{ aws, want string }{
		{"  regions: [us-east]\n", `mesh.yaml:13:13: aws.regions[0]: "us-east" is not an AWS region name`},
		{"  regions: [us-east-1, us-east-1]\n", `mesh.yaml:13:24: aws.regions[1]: region "us-east-1" listed twice`},
		{"  accounts:\n    - name: x\n", `mesh.yaml:14:7: aws.accounts[0].role_arn: role_arn is required`},
		{"  accounts:\n    - role_arn: arn:aws:iam::12:role/x\n", `mesh.yaml:14:17: aws.accounts[0].role_arn: "arn:aws:iam::12:role/x" is not an IAM role ARN`},
		{"  dx_gateway_ids: [gw-1]\n", `mesh.yaml:13:20: aws.dx_gateway_ids[0]: "gw-1" is not a Direct Connect gateway ID`},
		{"  discovery: {enabled: true}\n", `mesh.yaml:13:24: aws.discovery.enabled: discovery needs aws.dx_gateway_ids`},
		{"  interval: 1s\n", `mesh.yaml:13:13: aws.interval: must be at least 10s, got 1s`},
		{"  stale_after: 30s\n", `mesh.yaml:13:16: aws.stale_after: stale_after 30s is shorter than interval 1m0s`},
		{"  metrics_lookback: 5h\n", `mesh.yaml:13:21: aws.metrics_lookback: must be at most 3h`},
		{"  resources:\n    - {id: dxcon-1, site: mars}\n", `mesh.yaml:14:27: aws.resources[0].site: unknown site "mars": the sites list has us-east, ap-tokyo`},
		{"  resources:\n    - {id: dxcon-1}\n", `mesh.yaml:14:7: aws.resources[0]: map the resource to a site, a segment or both`},
		{"  tag: {site: x}\n", `mesh.yaml:13:3: aws.tag: unknown field "tag" (did you mean "tags"?)`},
	} {
		_, err := Parse([]byte(awsBase+"aws:\n"+tc.aws), "mesh.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("aws:\n%s\ngot  %v\nwant %s", tc.aws, err, tc.want)
		}
	}
}

func TestAWSNeedsARegion(t *testing.T) {
	mesh := "sites:\n  - name: a\n    targets:\n      - address: 127.0.0.1\naws:\n  poll_all: true\n"
	_, err := Parse([]byte(mesh), "mesh.yaml")
	if err == nil || !strings.Contains(err.Error(), "mesh.yaml:6:3: aws: no AWS region to poll") {
		t.Fatalf("got %v", err)
	}
}
