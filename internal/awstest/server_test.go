package awstest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	cwtypes "github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"
	"github.com/aws/aws-sdk-go-v2/service/directconnect"
	"github.com/aws/aws-sdk-go-v2/service/networkmonitor"
	nsmtypes "github.com/aws/aws-sdk-go-v2/service/networkmonitor/types"
	"github.com/aws/smithy-go"
)

func start(t *testing.T, opts ...Option) (*Server, string) {
	t.Helper()
	s := New(nil, opts...)
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

// sdkConfig builds a real SDK config pointed at url, with retries that do
// not sleep so throttling tests stay fast.
func sdkConfig(t *testing.T, url, region string, attempts int) aws.Config {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(),
		awsconfig.WithRegion(region),
		awsconfig.WithBaseEndpoint(url),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "SECRET", "")),
		awsconfig.WithSharedConfigFiles([]string{}), awsconfig.WithSharedCredentialsFiles([]string{}),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
			})
		}))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestDirectConnectPaginatesEveryList(t *testing.T) {
	s, url := start(t)
	dx := directconnect.NewFromConfig(sdkConfig(t, url, "us-east-1", 1))
	ctx := context.Background()

	var conns []string
	var tok *string
	pages := 0
	for {
		out, err := dx.DescribeConnections(ctx, &directconnect.DescribeConnectionsInput{NextToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, c := range out.Connections {
			conns = append(conns, *c.ConnectionId)
			if c.Region == nil || *c.Region != "us-east-1" {
				t.Errorf("connection %s from region %v answered in us-east-1", *c.ConnectionId, c.Region)
			}
			if aws.ToString(c.PortEncryptionStatus) != "Encryption Up" || c.EncryptionMode == nil || len(c.MacSecKeys) != 1 {
				t.Errorf("MACsec fields not decoded: %+v", c)
			}
		}
		if out.NextToken == nil {
			break
		}
		tok = out.NextToken
	}
	if pages < 2 || len(conns) != 1 || conns[0] != "dxcon-fh1k7x2q" {
		t.Fatalf("got connections %v in %d pages; want dxcon-fh1k7x2q in >= 2 pages", conns, pages)
	}

	var vifs []string
	tok, pages = nil, 0
	for {
		out, err := dx.DescribeVirtualInterfaces(ctx, &directconnect.DescribeVirtualInterfacesInput{NextToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, v := range out.VirtualInterfaces {
			vifs = append(vifs, *v.VirtualInterfaceId)
			if *v.VirtualInterfaceId == "dxvif-fp1k7x2q" {
				if len(v.BgpPeers) != 2 || string(v.BgpPeers[1].BgpStatus) != "up" || aws.ToBool(v.SiteLinkEnabled) != true || v.Mtu == nil || *v.Mtu != 8500 {
					t.Errorf("VIF fields not decoded: %+v", v)
				}
			}
		}
		if out.NextToken == nil {
			break
		}
		tok = out.NextToken
	}
	if pages < 2 || len(vifs) != 3 {
		t.Fatalf("got VIFs %v in %d pages; want 3 (one deleted) in >= 2 pages", vifs, pages)
	}

	// A token only works with the parameters it was issued for.
	first, err := dx.DescribeVirtualInterfaces(ctx, &directconnect.DescribeVirtualInterfacesInput{})
	if err != nil || first.NextToken == nil {
		t.Fatalf("first page: %v", err)
	}
	_, err = dx.DescribeVirtualInterfaces(ctx, &directconnect.DescribeVirtualInterfacesInput{NextToken: first.NextToken, ConnectionId: aws.String("dxcon-fh1k7x2q")})
	var api smithy.APIError
	if !errors.As(err, &api) || api.ErrorCode() != "DirectConnectClientException" {
		t.Fatalf("replayed token with other filter: got %v, want DirectConnectClientException", err)
	}

	gw, err := dx.DescribeDirectConnectGateways(ctx, &directconnect.DescribeDirectConnectGatewaysInput{})
	if err != nil || len(gw.DirectConnectGateways) != 1 || gw.NextToken == nil {
		t.Fatalf("gateways first page: %v %+v", err, gw)
	}
	att, err := dx.DescribeDirectConnectGatewayAttachments(ctx, &directconnect.DescribeDirectConnectGatewayAttachmentsInput{
		DirectConnectGatewayId: gw.DirectConnectGateways[0].DirectConnectGatewayId})
	if err != nil || len(att.DirectConnectGatewayAttachments) != 7 || att.NextToken == nil {
		t.Fatalf("attachments first page: %v, %d rows", err, len(att.DirectConnectGatewayAttachments))
	}
	tags, err := dx.DescribeTags(ctx, &directconnect.DescribeTagsInput{ResourceArns: []string{"arn:aws:directconnect:us-east-1:111122223333:dxvif/dxvif-fd1k7x2q"}})
	if err != nil || len(tags.ResourceTags) != 1 || len(tags.ResourceTags[0].Tags) != 2 {
		t.Fatalf("DescribeTags: %v %+v", err, tags)
	}
	if n := s.RequestsIn(DirectConnect, "DescribeConnections", "us-east-1"); n != 2 {
		t.Errorf("counted %d DescribeConnections requests, want 2", n)
	}
}

func TestNetworkMonitorAndTags(t *testing.T) {
	_, url := start(t)
	nm := networkmonitor.NewFromConfig(sdkConfig(t, url, "ap-northeast-1", 1))
	ctx := context.Background()
	p := networkmonitor.NewListMonitorsPaginator(nm, &networkmonitor.ListMonitorsInput{})
	var names []string
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range out.Monitors {
			names = append(names, *m.MonitorName)
		}
	}
	if pages < 2 || len(names) != 1 || names[0] != "sitelink-ap-tokyo" {
		t.Fatalf("monitors %v in %d pages", names, pages)
	}
	m, err := nm.GetMonitor(ctx, &networkmonitor.GetMonitorInput{MonitorName: aws.String(names[0])})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Probes) != 2 || m.Probes[1].Protocol != nsmtypes.ProtocolTcp || aws.ToInt32(m.Probes[1].DestinationPort) != 443 || m.CreatedAt == nil || m.CreatedAt.Year() != 2026 {
		t.Fatalf("GetMonitor decoded %+v", m)
	}
	pr, err := nm.GetProbe(ctx, &networkmonitor.GetProbeInput{MonitorName: m.MonitorName, ProbeId: m.Probes[0].ProbeId})
	if err != nil || aws.ToString(pr.Destination) != "10.77.4.1" {
		t.Fatalf("GetProbe: %v %+v", err, pr)
	}
	tags, err := nm.ListTagsForResource(ctx, &networkmonitor.ListTagsForResourceInput{ResourceArn: m.MonitorArn})
	if err != nil || tags.Tags["site"] != "ap-tokyo" {
		t.Fatalf("ListTagsForResource: %v %+v", err, tags)
	}
	_, err = nm.GetMonitor(ctx, &networkmonitor.GetMonitorInput{MonitorName: aws.String("nope")})
	var nf *nsmtypes.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("unknown monitor: got %v, want ResourceNotFoundException", err)
	}
}

func TestCloudWatchCBOR(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 30, 0, time.UTC)
	_, url := start(t, WithClock(func() time.Time { return now }))
	cw := cloudwatch.NewFromConfig(sdkConfig(t, url, "us-east-1", 1))
	ctx := context.Background()

	lp := cloudwatch.NewListMetricsPaginator(cw, &cloudwatch.ListMetricsInput{Namespace: aws.String(NamespaceDX)})
	n, pages := 0, 0
	for lp.HasMorePages() {
		out, err := lp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		n += len(out.Metrics)
	}
	// 1 connection × 9 metrics (MACsec on) + 2 VIFs × 4.
	if n != 17 || pages < 2 {
		t.Fatalf("ListMetrics AWS/DX: %d metrics in %d pages, want 17 in >= 2", n, pages)
	}

	q := func(id, ns, name, stat string, dims ...string) cwtypes.MetricDataQuery {
		var d []cwtypes.Dimension
		for i := 0; i < len(dims); i += 2 {
			d = append(d, cwtypes.Dimension{Name: aws.String(dims[i]), Value: aws.String(dims[i+1])})
		}
		return cwtypes.MetricDataQuery{Id: aws.String(id), MetricStat: &cwtypes.MetricStat{
			Metric: &cwtypes.Metric{Namespace: aws.String(ns), MetricName: aws.String(name), Dimensions: d},
			Period: aws.Int32(60), Stat: aws.String(stat)}}
	}
	in := &cloudwatch.GetMetricDataInput{
		StartTime: aws.Time(now.Add(-10 * time.Minute)), EndTime: aws.Time(now),
		MetricDataQueries: []cwtypes.MetricDataQuery{
			q("state", NamespaceDX, "ConnectionState", "Minimum", "ConnectionId", "dxcon-fh1k7x2q"),
			q("bps", NamespaceDX, "VirtualInterfaceBpsEgress", "Average", "ConnectionId", "dxcon-fh1k7x2q", "VirtualInterfaceId", "dxvif-fp1k7x2q"),
			q("partial", NamespaceDX, "VirtualInterfaceBpsEgress", "Average", "VirtualInterfaceId", "dxvif-fp1k7x2q"),
		}}
	got := map[string][]float64{}
	var newest time.Time
	p := cloudwatch.NewGetMetricDataPaginator(cw, in)
	pages = 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range out.MetricDataResults {
			got[*r.Id] = append(got[*r.Id], r.Values...)
			for _, ts := range r.Timestamps {
				if ts.After(newest) {
					newest = ts
				}
			}
		}
	}
	// Buckets 11:51..11:58 (newest datapoint is 2 minutes late): 8 each.
	if pages != 2 || len(got["state"]) != 8 || len(got["bps"]) != 8 || len(got["partial"]) != 0 {
		t.Fatalf("GetMetricData: %d pages, %d/%d/%d points", pages, len(got["state"]), len(got["bps"]), len(got["partial"]))
	}
	if got["state"][0] != 1 || got["bps"][0] <= 0 || !newest.Equal(time.Date(2026, 6, 1, 11, 58, 0, 0, time.UTC)) {
		t.Fatalf("values %v %v newest %v", got["state"], got["bps"], newest)
	}

	in.MetricDataQueries[0].Id = aws.String("Bad")
	_, err := cw.GetMetricData(ctx, in)
	var api smithy.APIError
	if !errors.As(err, &api) || api.ErrorCode() != "InvalidParameterValue" {
		t.Fatalf("bad Id: got %v, want InvalidParameterValue", err)
	}
}

func TestThrottlingIsRetriedOnEveryService(t *testing.T) {
	s, url := start(t)
	cfg := sdkConfig(t, url, "eu-central-1", 3)
	ctx := context.Background()
	dx := directconnect.NewFromConfig(cfg)
	nm := networkmonitor.NewFromConfig(cfg)
	cw := cloudwatch.NewFromConfig(cfg)

	for _, svc := range []string{DirectConnect, NSM, CloudWatch} {
		s.SetFault(svc, FaultThrottle, 2)
	}
	if _, err := dx.DescribeConnections(ctx, &directconnect.DescribeConnectionsInput{}); err != nil {
		t.Errorf("DX after two throttles: %v", err)
	}
	if _, err := nm.ListMonitors(ctx, &networkmonitor.ListMonitorsInput{}); err != nil {
		t.Errorf("NSM after two throttles: %v", err)
	}
	if _, err := cw.ListMetrics(ctx, &cloudwatch.ListMetricsInput{}); err != nil {
		t.Errorf("CloudWatch after two throttles: %v", err)
	}
	if n := s.Requests(DirectConnect, "DescribeConnections"); n != 3 {
		t.Errorf("DX saw %d attempts, want 3", n)
	}

	// Persistent throttling surfaces each service's throttling code.
	for _, svc := range []string{DirectConnect, NSM, CloudWatch} {
		s.SetFault(svc, FaultThrottle, -1)
	}
	want := map[string]string{}
	var api smithy.APIError
	_, err := dx.DescribeConnections(ctx, &directconnect.DescribeConnectionsInput{})
	if errors.As(err, &api) {
		want["dx"] = api.ErrorCode()
	}
	_, err = nm.ListMonitors(ctx, &networkmonitor.ListMonitorsInput{})
	if errors.As(err, &api) {
		want["nsm"] = api.ErrorCode()
	}
	_, err = cw.ListMetrics(ctx, &cloudwatch.ListMetricsInput{})
	if errors.As(err, &api) {
		want["cw"] = api.ErrorCode()
	}
	if want["dx"] != "ThrottlingException" || want["nsm"] != "ThrottlingException" || want["cw"] != "Throttling" {
		t.Fatalf("throttling codes %v", want)
	}
}

func TestRegionAndSignatureChecks(t *testing.T) {
	_, url := start(t)
	dx := directconnect.NewFromConfig(sdkConfig(t, url, "mars-north-1", 1))
	_, err := dx.DescribeConnections(context.Background(), &directconnect.DescribeConnectionsInput{})
	var api smithy.APIError
	if !errors.As(err, &api) || api.ErrorCode() != "InvalidSignatureException" || !strings.Contains(api.ErrorMessage(), "mars-north-1") {
		t.Fatalf("unknown region: %v", err)
	}
}

func TestAdminEndpointChangesState(t *testing.T) {
	s, url := start(t)
	resp, err := http.Post(url+"/_awstest/bgp?vif=dxvif-fp1k7x2q&peer=dxpeer-fp14k7x2q&status=down", "", nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("admin bgp: %v %v", err, resp)
	}
	resp.Body.Close()
	resp, err = http.Post(url+"/_awstest/macsec?connection=dxcon-fh1k7x2q&up=false", "", nil)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("admin macsec: %v %v", err, resp)
	}
	resp.Body.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.vif("dxvif-fp1k7x2q").BGPPeers[0].Status != "down" || s.conn("dxcon-fh1k7x2q").PortEncryptionStatus != "Encryption Down" {
		t.Fatal("admin endpoint did not change state")
	}
}
