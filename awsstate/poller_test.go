package awsstate

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/awstest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env isolates the SDK from the machine: no shared files, no IMDS, test
// credentials, and the emulator as the endpoint of every service through
// the standard AWS_ENDPOINT_URL variable.
func env(t testing.TB, url string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDPROBEDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_ENDPOINT_URL", url)
	for _, s := range []string{"DIRECT_CONNECT", "NETWORKMONITOR", "CLOUDWATCH", "STS"} {
		t.Setenv("AWS_ENDPOINT_URL_"+s, "")
	}
}

// mesh is the example mesh with an aws: section appended.
func mesh(t testing.TB, aws string) *config.Config {
	t.Helper()
	base, err := os.ReadFile("../configs/example-mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(append(base, []byte("\naws:\n"+aws)...), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// fastRetries keeps the SDK's standard retryer (3 attempts, retry on
// throttling) without its sleeps.
func fastRetries(attempts int) func(*awsconfig.LoadOptions) error {
	return awsconfig.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = attempts
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
}

type fixture struct {
	srv    *awstest.Server
	url    string
	clock  *clock
	poller *Poller
	logs   *observer.ObservedLogs
}

func setup(t *testing.T, site, awsYAML string, srvOpts ...awstest.Option) *fixture {
	return setupB(t, site, awsYAML, srvOpts...)
}

func setupB(t testing.TB, site, awsYAML string, srvOpts ...awstest.Option) *fixture {
	t.Helper()
	ck := &clock{t: time.Date(2026, 6, 1, 12, 0, 30, 0, time.UTC)}
	srv := awstest.New(nil, append([]awstest.Option{awstest.WithClock(ck.Now)}, srvOpts...)...)
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	env(t, url)
	cfg := mesh(t, awsYAML)
	core, logs := observer.New(zapcore.DebugLevel)
	p, err := New(context.Background(), Options{Config: cfg.AWS, Sites: cfg.Sites, Site: site, Logger: zap.New(core),
		Now: ck.Now, LoadOptions: []func(*awsconfig.LoadOptions) error{fastRetries(3)}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv, url, ck, p, logs}
}

const gatewayID = "5f294f92-bafb-4011-916d-9b0b7e1a0001"

func source(s *Snapshot, name string) *Source {
	for i := range s.Sources {
		if s.Sources[i].Name == name {
			return &s.Sources[i]
		}
	}
	return nil
}

func vif(s *Snapshot, id string) *VIF {
	for i := range s.VIFs {
		if s.VIFs[i].ID == id {
			return &s.VIFs[i]
		}
	}
	return nil
}

func metric(s *Snapshot, kind MetricKind, resource, direction string) *Datapoint {
	for i := range s.Metrics {
		m := &s.Metrics[i]
		if m.Kind == kind && m.Resource == resource && m.Direction == direction {
			return m
		}
	}
	return nil
}

func TestAgentPollsOnlyItsOwnSite(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n")
	// AWS/DX publishes bits per second; probed exports bytes.
	f.srv.SetMetric("AWS/DX", "VirtualInterfaceBpsIngress", "ConnectionId=dxcon-fh1k7x2q,VirtualInterfaceId=dxvif-fp1k7x2q", 8e9)
	f.poller.PollOnce(context.Background())
	s := f.poller.Snapshot()

	if len(s.Connections) != 1 || s.Connections[0].ID != "dxcon-fh1k7x2q" || s.Connections[0].Site != "us-east" {
		t.Fatalf("connections %+v, want only us-east's", s.Connections)
	}
	if len(s.VIFs) != 2 || vif(s, "dxvif-fp1k7x2q") == nil || vif(s, "dxvif-fd1k7x2q") == nil {
		t.Fatalf("VIFs %+v, want us-east prod and dev (the deleted one filtered)", s.VIFs)
	}
	if v := vif(s, "dxvif-fd1k7x2q"); v.Segment != "dev" || v.Site != "us-east" || len(v.Peers) != 2 || v.PollFailed {
		t.Fatalf("dev VIF %+v", v)
	}
	if len(s.Probes) != 2 || s.Probes[0].Monitor != "sitelink-us-east" {
		t.Fatalf("NSM probes %+v", s.Probes)
	}
	for k, n := range f.srv.RequestCounts() {
		if !strings.HasSuffix(k, "/us-east-1") {
			t.Errorf("agent of us-east called %s (%d times)", k, n)
		}
	}
	// One connection-scoped VIF listing (two pages), never the region's.
	if n := f.srv.Requests(awstest.DirectConnect, "DescribeVirtualInterfaces"); n != 2 {
		t.Errorf("DescribeVirtualInterfaces called %d times, want 2 (one filtered listing, two pages)", n)
	}
	if n := f.srv.Requests(awstest.CloudWatch, "GetMetricData"); n != 2 {
		t.Errorf("GetMetricData requests %d, want one call of two pages", n)
	}
	// 10:30 poll: buckets up to 11:58 are published (2 minutes late).
	d := metric(s, VIFBytesPerSecond, "dxvif-fp1k7x2q", "egress")
	if d == nil || d.Value <= 0 || !d.Time.Equal(time.Date(2026, 6, 1, 11, 58, 0, 0, time.UTC)) {
		t.Fatalf("VIF bytes/s datapoint %+v", d)
	}
	if d := metric(s, VIFBytesPerSecond, "dxvif-fp1k7x2q", "ingress"); d == nil || d.Value != 1e9 {
		t.Fatalf("VIF ingress %+v, want 8e9 bits/s exported as 1e9 bytes/s", d)
	}
	// NSM datapoints carry the probe's site and segment (monitor tag
	// site=us-east, probe tag segment=prod in the fixture).
	for _, k := range []MetricKind{NSMRTT, NSMPacketLoss, NSMHealth} {
		for _, pr := range s.Probes {
			if m := metric(s, k, pr.ID, ""); m == nil || m.Site != "us-east" || m.Segment != "prod" || m.Monitor != "sitelink-us-east" {
				t.Errorf("NSM datapoint kind %d of %s: %+v, want site us-east, segment prod", k, pr.ID, m)
			}
		}
	}
	if rtt := metric(s, NSMRTT, s.Probes[0].ID, ""); rtt == nil || rtt.Value < 0.001 || rtt.Value > 1 {
		t.Fatalf("NSM RTT %+v, want seconds (converted from microseconds)", rtt)
	}
	if l := metric(s, ConnLightLevel, "dxcon-fh1k7x2q", "rx"); l == nil || l.Value > 0 || l.Value < -10 {
		t.Fatalf("light level %+v", l)
	}
	for _, name := range []string{ServiceDX, ServiceNSM, ServiceCloudWatch} {
		if src := source(s, name); src == nil || !src.Up || !src.LastSuccess.Equal(f.clock.Now()) {
			t.Errorf("source %s: %+v", name, src)
		}
	}
}

func TestPollAllOneGetMetricDataPerRegion(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: true\n  dx_gateway_ids: ["+gatewayID+"]\n", awstest.WithoutForcedPagination())
	f.poller.PollOnce(context.Background())
	s := f.poller.Snapshot()
	if len(s.Connections) != 7 || len(s.VIFs) != 14 || len(s.Probes) != 14 {
		t.Fatalf("poll_all: %d connections, %d VIFs, %d probes; want 7, 14, 14", len(s.Connections), len(s.VIFs), len(s.Probes))
	}
	// us-west has no site tags: mapped by its location code, segment by tag.
	if v := vif(s, "dxvif-fp3k7x2q"); v == nil || v.Site != "us-west" || v.Segment != "prod" {
		t.Fatalf("us-west VIF %+v", v)
	}
	for _, r := range []string{"us-east-1", "us-east-2", "us-west-1", "ap-northeast-1", "ap-southeast-1", "ap-southeast-2", "eu-central-1"} {
		if n := f.srv.RequestsIn(awstest.CloudWatch, "GetMetricData", r); n != 1 {
			t.Errorf("GetMetricData in %s: %d calls, want 1", r, n)
		}
	}
	// 7 × (7 connection + 2 × 4 VIF + 2 × 3 NSM) series.
	if len(s.Metrics) != 7*(7+8+6) {
		t.Errorf("%d datapoints, want %d", len(s.Metrics), 7*(7+8+6))
	}
}

func TestPaginationIsFollowed(t *testing.T) {
	// Forced pagination: every list and GetMetricData arrive in >= 2 pages.
	f := setup(t, "ap-tokyo", "  poll_all: true\n")
	f.poller.PollOnce(context.Background())
	s := f.poller.Snapshot()
	if len(s.Connections) != 7 || len(s.VIFs) != 14 || len(s.Probes) != 14 || len(s.Metrics) != 7*21 {
		t.Fatalf("paginated: %d connections, %d VIFs, %d probes, %d datapoints", len(s.Connections), len(s.VIFs), len(s.Probes), len(s.Metrics))
	}
	for _, op := range []string{"DescribeConnections", "DescribeVirtualInterfaces"} {
		if n := f.srv.Requests(awstest.DirectConnect, op); n != 14 {
			t.Errorf("%s: %d requests, want 2 pages × 7 regions", op, n)
		}
	}
}

func TestBGPPeerDownAndUp(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n")
	ctx := context.Background()
	f.poller.PollOnce(ctx)
	if err := f.srv.SetBGPStatus("dxvif-fp1k7x2q", "dxpeer-fp16k7x2q", "down"); err != nil {
		t.Fatal(err)
	}
	f.poller.PollOnce(ctx)
	v := vif(f.poller.Snapshot(), "dxvif-fp1k7x2q")
	if v.Peers[1].ID != "dxpeer-fp16k7x2q" || v.Peers[1].Status != "down" || v.Peers[0].Status != "up" || v.State != "available" {
		t.Fatalf("after IPv6 peer down: %+v", v)
	}
	f.srv.SetBGPStatus("dxvif-fp1k7x2q", "dxpeer-fp14k7x2q", "down")
	f.poller.PollOnce(ctx)
	if v := vif(f.poller.Snapshot(), "dxvif-fp1k7x2q"); v.State != "down" || v.Peers[0].Status != "down" {
		t.Fatalf("after both peers down: %+v", v)
	}
	f.srv.SetBGPStatus("dxvif-fp1k7x2q", "dxpeer-fp14k7x2q", "up")
	f.srv.SetBGPStatus("dxvif-fp1k7x2q", "dxpeer-fp16k7x2q", "up")
	f.poller.PollOnce(ctx)
	if v := vif(f.poller.Snapshot(), "dxvif-fp1k7x2q"); v.State != "available" || v.Peers[0].Status != "up" || v.Peers[1].Status != "up" {
		t.Fatalf("after recovery: %+v", v)
	}
}

func TestMACsecDown(t *testing.T) {
	f := setup(t, "eu-frankfurt", "  poll_all: false\n")
	ctx := context.Background()
	f.poller.PollOnce(ctx)
	c := f.poller.Snapshot().Connections[0]
	if c.EncryptionMode != "must_encrypt" || !c.MACsecUp {
		t.Fatalf("before: %+v", c)
	}
	f.srv.SetMACsec("dxcon-fh7k7x2q", false)
	f.poller.PollOnce(ctx)
	c = f.poller.Snapshot().Connections[0]
	if c.MACsecUp || c.PortEncryptionStatus != "Encryption Down" {
		t.Fatalf("after MACsec down: %+v", c)
	}
}

func TestThrottlingIsRetriedAndCounted(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n")
	f.srv.SetFault(awstest.DirectConnect, awstest.FaultThrottle, 2)
	f.srv.SetFault(awstest.CloudWatch, awstest.FaultThrottle, 2)
	f.srv.SetFault(awstest.NSM, awstest.FaultThrottle, 2)
	f.poller.PollOnce(context.Background())
	s := f.poller.Snapshot()
	for _, name := range []string{ServiceDX, ServiceNSM, ServiceCloudWatch} {
		if src := source(s, name); src == nil || !src.Up {
			t.Errorf("%s not up after two throttles and retries: %+v", name, src)
		}
	}
	got := map[string]uint64{}
	for _, r := range s.Requests {
		got[r.Service+"/"+r.Operation+"/"+r.Outcome] = r.Count
	}
	if got["directconnect/DescribeConnections/throttled"] != 2 || got["directconnect/DescribeConnections/success"] != 2 {
		t.Errorf("DX counts %v", got)
	}
	if got["networkmonitor/ListMonitors/throttled"] != 2 || got["cloudwatch/ListMetrics/throttled"] != 2 {
		t.Errorf("NSM/CloudWatch counts %v", got)
	}
	if len(s.VIFs) != 2 {
		t.Errorf("VIFs %d", len(s.VIFs))
	}
}

func TestFailureDropsUpAndStaleStateDisappears(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n  stale_after: 3m\n  metrics_stale_after: 5m\n")
	ctx := context.Background()
	f.poller.PollOnce(ctx)
	if s := f.poller.Snapshot(); len(s.VIFs) != 2 || len(s.Metrics) == 0 {
		t.Fatal("first poll found nothing")
	}

	f.srv.SetFault(awstest.DirectConnect, awstest.FaultAccessDenied, -1)
	f.clock.Add(time.Minute)
	f.poller.PollOnce(ctx)
	s := f.poller.Snapshot()
	if src := source(s, ServiceDX); src.Up || !src.LastSuccess.Equal(f.clock.Now().Add(-time.Minute)) {
		t.Fatalf("directconnect after access denied: %+v", src)
	}
	// Within stale_after the last state is kept, marked: BGP is unknown.
	if v := vif(s, "dxvif-fp1k7x2q"); v == nil || !v.PollFailed {
		t.Fatalf("VIF after failed poll: %+v", v)
	}
	if src := source(s, ServiceNSM); !src.Up {
		t.Fatal("a Direct Connect failure took NSM down")
	}
	f.clock.Add(3 * time.Minute)
	f.poller.PollOnce(ctx)
	if s := f.poller.Snapshot(); len(s.VIFs) != 0 || len(s.Connections) != 0 || len(s.Probes) != 2 {
		t.Fatalf("after stale_after: %d VIFs, %d connections, %d probes; want 0, 0, 2", len(s.VIFs), len(s.Connections), len(s.Probes))
	}

	// CloudWatch stops delivering: datapoints age out, never repeat.
	f.srv.ClearFaults()
	f.srv.SetMetricLag(time.Hour)
	f.clock.Add(6 * time.Minute)
	f.poller.PollOnce(ctx)
	s = f.poller.Snapshot()
	if len(s.Metrics) != 0 {
		t.Fatalf("%d datapoints older than metrics_stale_after still reported, e.g. %+v", len(s.Metrics), s.Metrics[0])
	}
	if src := source(s, ServiceCloudWatch); !src.Up {
		t.Fatal("no data is not a polling failure")
	}
	if len(s.VIFs) != 2 {
		t.Fatal("Direct Connect did not recover")
	}
	// Logged once per kind of failure, with a hint.
	warn := f.logs.FilterMessage("AWS polling failed; will retry with backoff").All()
	if len(warn) != 1 || !strings.Contains(warn[0].ContextMap()["fix"].(string), "directconnect:Describe") {
		t.Fatalf("want one warning with a fix, got %d: %v", len(warn), warn)
	}
	if f.logs.FilterMessage("AWS polling recovered").Len() != 1 {
		t.Fatal("recovery not logged")
	}
}

func TestErrorsAreClassified(t *testing.T) {
	for _, tc := range []struct {
		fault   awstest.Fault
		outcome string
	}{
		{awstest.FaultExpired, OutcomeExpired},
		{awstest.FaultAccessDenied, OutcomeAccessDenied},
		{awstest.FaultMalformed, OutcomeMalformed},
		{awstest.FaultServerError, OutcomeServerError},
		{awstest.FaultThrottle, OutcomeThrottled},
		{awstest.FaultSlow, OutcomeTimeout},
		{awstest.FaultCutBody, OutcomeCut}, // cut on every attempt: still fails
	} {
		t.Run(string(tc.fault), func(t *testing.T) {
			f := setup(t, "us-east", "  poll_all: false\n  nsm: false\n  cloudwatch: false\n")
			f.poller.cfg.Timeout = config.Duration(300 * time.Millisecond)
			f.srv.SetFault(awstest.DirectConnect, tc.fault, -1)
			f.poller.PollOnce(context.Background())
			s := f.poller.Snapshot()
			if src := source(s, ServiceDX); src == nil || src.Up {
				t.Fatalf("source %+v", src)
			}
			found := false
			for _, r := range s.Requests {
				if r.Operation == "DescribeConnections" && r.Outcome == tc.outcome {
					found = true
				}
			}
			if !found {
				t.Fatalf("no request counted as %s: %+v", tc.outcome, s.Requests)
			}
		})
	}
}

func TestNoCredentialsAndUnknownRegion(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n  nsm: false\n  cloudwatch: false\n")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	cfg := mesh(t, "  nsm: false\n  cloudwatch: false\n  regions: [zz-north-9]\n")
	p, err := New(context.Background(), Options{Config: cfg.AWS, Sites: cfg.Sites, Site: "us-east", Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	p.PollOnce(context.Background())
	if n := f.srv.Requests(awstest.DirectConnect, "DescribeConnections"); n != 0 {
		t.Fatalf("%d requests went out without credentials", n)
	}
	if c := p.counts.snapshot(); len(c) == 0 || c[0].Outcome != OutcomeNoCreds {
		t.Fatalf("attempts without credentials counted as %+v, want %s", c, OutcomeNoCreds)
	}
	if src := source(p.Snapshot(), ServiceDX); src == nil || src.Up {
		t.Fatalf("no credentials: %+v", src)
	}
	for _, r := range p.Snapshot().Regions {
		if !strings.Contains(r.LastError, "credentials") {
			t.Errorf("region %s error %q does not name credentials", r.Region, r.LastError)
		}
	}

	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDPROBEDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	p, err = New(context.Background(), Options{Config: cfg.AWS, Sites: cfg.Sites, Site: "us-east", Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	p.PollOnce(context.Background())
	s := p.Snapshot()
	var bad, good bool
	for _, r := range s.Regions {
		if r.Region == "zz-north-9" && !r.Up {
			bad = true
		}
		if r.Region == "us-east-1" && r.Up {
			good = true
		}
	}
	if !bad || !good {
		t.Fatalf("unknown region must fail alone: %+v", s.Regions)
	}
	found := false
	for _, r := range s.Requests {
		found = found || r.Outcome == OutcomeBadRegion
	}
	if !found {
		t.Fatalf("unknown region not counted as %s: %+v", OutcomeBadRegion, s.Requests)
	}
}

func TestServiceSpecificEndpointWins(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n")
	// The global endpoint is dead; each service's own variable points at
	// the emulator, as behind VPC interface endpoints.
	t.Setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
	for _, s := range []string{"DIRECT_CONNECT", "NETWORKMONITOR", "CLOUDWATCH"} {
		t.Setenv("AWS_ENDPOINT_URL_"+s, f.url)
	}
	cfg := mesh(t, "  poll_all: false\n")
	p, err := New(context.Background(), Options{Config: cfg.AWS, Sites: cfg.Sites, Site: "us-east", Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	p.PollOnce(context.Background())
	s := p.Snapshot()
	for _, name := range []string{ServiceDX, ServiceNSM, ServiceCloudWatch} {
		if src := source(s, name); src == nil || !src.Up {
			t.Errorf("%s via AWS_ENDPOINT_URL_<SERVICE>: %+v", name, src)
		}
	}
}

func TestDiscoveryTargets(t *testing.T) {
	f := setup(t, "us-east", "  dx_gateway_ids: ["+gatewayID+"]\n  discovery:\n    enabled: true\n")
	found, err := f.poller.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 14 {
		t.Fatalf("discovered %d SiteLink VIFs, want 14", len(found))
	}
	cfg := mesh(t, "  dx_gateway_ids: ["+gatewayID+"]\n  discovery:\n    enabled: true\n")
	plan, err := cfg.Plan("us-east")
	if err != nil {
		t.Fatal(err)
	}
	discovered := func(p *config.Plan) (out []config.ProbeSpec) {
		for _, s := range p.Probes {
			if s.Discovered {
				out = append(out, s)
			}
		}
		return out
	}
	// Planned with the mesh file, nothing is new.
	found0 := Targets(found, cfg, "us-east")
	withDisc, err := cfg.Plan("us-east", found0...)
	if err != nil {
		t.Fatal(err)
	}
	if got := discovered(withDisc); len(got) != 0 || len(withDisc.Probes) != len(plan.Probes) {
		t.Fatalf("the example mesh already lists every SiteLink router, yet discovery added %+v", got)
	}
	// 6 other sites × 2 VIFs × (IPv4 + IPv6).
	if len(found0) != 24 {
		t.Fatalf("%d targets, want 24", len(found0))
	}
	want := map[string]string{"10.77.6.1": "prod", "fd77:6::41": "dev"}
	for _, d := range found0 {
		if d.Site == "us-east" || d.Path != "sitelink" {
			t.Fatalf("bad target %+v", d)
		}
		if seg, ok := want[d.Address]; ok {
			if d.Segment != seg || d.Site != "ap-sydney" {
				t.Errorf("%s: %+v", d.Address, d)
			}
			delete(want, d.Address)
		}
	}
	if len(want) != 0 {
		t.Errorf("not discovered: %v", want)
	}

	// A new site appears in AWS: it is found without editing the mesh.
	f.srv.AddVIF(awstest.VIF{ID: "dxvif-fp8new00", Name: "sa-saopaulo-prod", Type: "private", State: "available",
		ConnectionID: "dxcon-new8", Location: "EqSP4", Region: "sa-east-1", VLAN: 108, MTU: 8500,
		GatewayID: gatewayID, SiteLinkEnabled: true, OwnerAccount: "111122223333",
		Tags:     []awstest.Tag{{Key: "site", Value: "sa-saopaulo"}, {Key: "segment", Value: "prod"}},
		BGPPeers: []awstest.BGPPeer{{ID: "dxpeer-new84", AddressFamily: "ipv4", CustomerAddress: "10.77.8.1/30", AmazonAddress: "10.77.8.2/30", State: "available", Status: "up"}}})
	found, err = f.poller.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	withDisc, err = cfg.Plan("us-east", Targets(found, cfg, "us-east")...)
	if err != nil {
		t.Fatal(err)
	}
	got := discovered(withDisc)
	if len(got) != 1 || got[0].Target != "10.77.8.1" || got[0].TargetSite != "sa-saopaulo" || got[0].Segment != "prod" ||
		got[0].Path != "sitelink" || got[0].Kind != config.KindICMP {
		t.Fatalf("new site: %+v", got)
	}
}

func TestAccountsAssumeTheirRoles(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n  nsm: false\n  cloudwatch: false\n  accounts:\n"+
		"    - name: network\n      role_arn: arn:aws:iam::222233334444:role/probed-read\n"+
		"    - role_arn: arn:aws:iam::555566667777:role/probed-read\n      external_id: x-123\n")
	f.srv.DenyRole("arn:aws:iam::555566667777:role/probed-read")
	f.poller.PollOnce(context.Background())
	s := f.poller.Snapshot()
	keys := f.srv.AccessKeys(awstest.DirectConnect)
	if len(keys) != 1 || keys[0] != awstest.AssumedKey("arn:aws:iam::222233334444:role/probed-read") {
		t.Fatalf("Direct Connect was called with keys %v, want only the assumed role's", keys)
	}
	var ok, denied bool
	for _, r := range s.Regions {
		switch r.Account {
		case "network":
			ok = r.Up
		case "555566667777": // unnamed accounts are named by their number
			denied = !r.Up && strings.Contains(r.LastError, "AccessDenied")
		}
	}
	if !ok || !denied {
		t.Fatalf("regions %+v", s.Regions)
	}
	if len(s.Connections) != 1 {
		t.Fatalf("the denied account hid the other's data: %+v", s.Connections)
	}
	found := false
	for _, r := range s.Requests {
		if r.Service == "sts" && r.Operation == "AssumeRole" && r.Outcome == OutcomeSuccess {
			found = true
		}
	}
	if !found {
		t.Errorf("AssumeRole not counted: %+v", s.Requests)
	}
}

func TestRunKeepsServicesIndependent(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n  cloudwatch: false\n", awstest.WithoutForcedPagination())
	// Shorter than the config allows, to see several rounds in a second.
	f.poller.cfg.Interval = config.Duration(100 * time.Millisecond)
	f.srv.SetFault(awstest.NSM, awstest.FaultAccessDenied, -1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.poller.Run(ctx) }()
	time.Sleep(1500 * time.Millisecond)
	cancel()
	<-done
	dx := f.srv.Requests(awstest.DirectConnect, "DescribeConnections")
	nsm := f.srv.Requests(awstest.NSM, "ListMonitors")
	// DX keeps its 100 ms cadence while NSM backs off (100, 200, 400,
	// 800 ms): about 14 against 4. A loaded machine slows both alike.
	t.Logf("in 1.5 s: %d DescribeConnections, %d ListMonitors", dx, nsm)
	if dx < 4 || dx < 2*nsm {
		t.Fatalf("DescribeConnections %d times, ListMonitors %d times: a failing NSM slowed Direct Connect down", dx, nsm)
	}
	s := f.poller.Snapshot()
	if src := source(s, ServiceNSM); src == nil || src.Up {
		t.Fatalf("NSM source %+v", src)
	}
	if src := source(s, ServiceDX); src == nil || !src.Up || len(s.VIFs) != 2 {
		t.Fatalf("DX source %+v, %d VIFs", src, len(s.VIFs))
	}
	if n := f.logs.FilterMessage("AWS polling failed; will retry with backoff").Len(); n != 1 {
		t.Fatalf("%d warnings for one lasting failure, want 1", n)
	}
}

// TestCutResponseIsRetried: the real SDK against a server that answers
// 200 OK, sends part of the body and closes the connection (what "use of
// closed network connection" / "unexpected EOF" after a 200 are). Every
// call the pollers make is read-only, so the read is retried: one cut per
// operation costs one extra attempt, counted as connection_closed, never
// a failed poll and never malformed_response.
func TestCutResponseIsRetried(t *testing.T) {
	f := setup(t, "us-east", "  poll_all: false\n")
	ops := []string{
		awstest.DirectConnect + "/DescribeConnections", awstest.DirectConnect + "/DescribeVirtualInterfaces",
		awstest.NSM + "/ListMonitors", awstest.NSM + "/GetMonitor",
		awstest.CloudWatch + "/ListMetrics", awstest.CloudWatch + "/GetMetricData",
	}
	for _, op := range ops {
		f.srv.SetFault(op, awstest.FaultCutBody, 1)
	}
	f.poller.PollOnce(context.Background())
	s := f.poller.Snapshot()
	for _, name := range []string{ServiceDX, ServiceNSM, ServiceCloudWatch} {
		if src := source(s, name); src == nil || !src.Up {
			t.Errorf("%s: %+v after one cut answer per operation, want up (retried)", name, src)
		}
	}
	if len(s.VIFs) != 2 || len(s.Probes) != 2 || len(s.Metrics) == 0 {
		t.Errorf("snapshot: %d VIFs, %d NSM probes, %d datapoints", len(s.VIFs), len(s.Probes), len(s.Metrics))
	}
	counts := map[string]map[string]uint64{}
	for _, r := range s.Requests {
		k := r.Service + "/" + r.Operation
		if counts[k] == nil {
			counts[k] = map[string]uint64{}
		}
		counts[k][r.Outcome] += r.Count
	}
	service := map[string]string{awstest.DirectConnect: ServiceDX, awstest.NSM: ServiceNSM, awstest.CloudWatch: ServiceCloudWatch}
	for _, op := range ops {
		svc, name, _ := strings.Cut(op, "/")
		c := counts[service[svc]+"/"+name]
		if c[OutcomeCut] != 1 || c[OutcomeSuccess] == 0 || c[OutcomeMalformed] != 0 {
			t.Errorf("%s attempts by outcome %v, want 1 connection_closed then success", op, c)
		}
	}
	if n := f.logs.FilterMessage("AWS polling failed; will retry with backoff").Len(); n != 0 {
		t.Errorf("%d polling failures logged for retried cut answers", n)
	}
}

// TestCutResponseClassification: the shapes the transport produces for an
// answer cut after its headers, including the one reported from production
// ("deserialization failed, failed to decode response body, read tcp …:
// use of closed network connection"), are connection_closed and retryable
// by the SDK's own standard retryer; a complete body that does not decode
// stays malformed_response and is not retried.
func TestCutResponseClassification(t *testing.T) {
	retryer := retry.NewStandard()
	read := func(err error) error {
		_, e := (&cutBody{ReadCloser: io.NopCloser(errReader{err})}).Read(make([]byte, 8))
		return e
	}
	for _, tc := range []struct {
		name      string
		err       error
		outcome   string
		retryable bool
	}{
		{"closed", &smithy.DeserializationError{Err: fmt.Errorf("failed to decode response body, %w",
			read(&net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}))}, OutcomeCut, true},
		{"reset", &smithy.DeserializationError{Err: read(&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET})}, OutcomeCut, true},
		{"eof", &smithy.DeserializationError{Err: read(io.ErrUnexpectedEOF)}, OutcomeCut, true},
		{"complete but malformed", &smithy.DeserializationError{Err: fmt.Errorf("failed to decode response body, %w", io.ErrUnexpectedEOF)}, OutcomeMalformed, false},
		{"canceled", &smithy.DeserializationError{Err: read(context.Canceled)}, OutcomeCanceled, false},
	} {
		if got := Classify(tc.err); got != tc.outcome {
			t.Errorf("%s: Classify = %s, want %s (%v)", tc.name, got, tc.outcome, tc.err)
		}
		if got := retryer.IsErrorRetryable(tc.err); got != tc.retryable {
			t.Errorf("%s: retryable %v, want %v", tc.name, got, tc.retryable)
		}
	}
	if h := Hint(OutcomeCut); strings.Contains(h, "altering") || !strings.Contains(h, "retries") {
		t.Errorf("hint for connection_closed: %q", h)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
