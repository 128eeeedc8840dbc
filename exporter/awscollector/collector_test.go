package awscollector

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/probed/probed/awsstate"
	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/awstest"
	probedtestutil "github.com/probed/probed/internal/testutil"
)

type static struct{ s *awsstate.Snapshot }

func (s static) Snapshot() *awsstate.Snapshot { return s.s }

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func snapshot() *awsstate.Snapshot {
	return &awsstate.Snapshot{
		Taken: t0,
		Connections: []awsstate.Connection{
			{ID: "dxcon-a", Name: "us-east-dx-1", Region: "us-east-1", Location: "EqDC2", Site: "us-east", State: "available",
				EncryptionMode: "must_encrypt", PortEncryptionStatus: "Encryption Down"},
			{ID: "dxcon-b", Name: "plain", Region: "us-east-1", Location: "EqDC2", Site: "us-east", State: "down"},
		},
		VIFs: []awsstate.VIF{
			{ID: "dxvif-a", Name: "prod", Region: "us-east-1", Location: "EqDC2", Site: "us-east", Segment: "prod", ConnectionID: "dxcon-a",
				GatewayID: "gw", Type: "private", State: "available", VLAN: 101, MTU: 8500, ASN: 65001, JumboFrameCapable: true, SiteLinkEnabled: true,
				Peers: []awsstate.BGPPeer{{ID: "dxpeer-4", AddressFamily: "ipv4", CustomerAddress: "10.77.1.1/30", Status: "up"},
					{ID: "dxpeer-6", AddressFamily: "ipv6", CustomerAddress: "fd77:1::1/125", Status: "down"}}},
			{ID: "dxvif-b", Name: "dev", Region: "us-east-1", Location: "EqDC2", Site: "us-east", Segment: "dev", ConnectionID: "dxcon-a",
				GatewayID: "gw", Type: "private", State: "available", VLAN: 201, MTU: 1500, ASN: 65001, PollFailed: true,
				Peers: []awsstate.BGPPeer{{ID: "dxpeer-d4", AddressFamily: "ipv4", CustomerAddress: "10.77.1.65/30", Status: "up"}}},
		},
		Probes: []awsstate.NSMProbe{{Monitor: "m", ID: "probe-1", Site: "us-east", Segment: "prod", SourceARN: "arn:subnet", Destination: "10.77.1.1", Protocol: "TCP", Port: 443, PacketSize: 56, State: "ACTIVE"}},
		Metrics: []awsstate.Datapoint{
			{Kind: awsstate.ConnBytesPerSecond, Resource: "dxcon-a", Direction: "egress", Value: 1.875e8, Time: t0},
			{Kind: awsstate.ConnLightLevel, Resource: "dxcon-a", Direction: "rx", Lane: "2", Value: -3.1, Time: t0},
			{Kind: awsstate.NSMRTT, Resource: "probe-1", Monitor: "m", Site: "us-east", Segment: "prod", Value: 0.0215, Time: t0},
			{Kind: awsstate.NSMPacketLoss, Resource: "probe-1", Monitor: "m", Site: "us-east", Segment: "prod", Value: 0.02, Time: t0},
		},
		Sources:  []awsstate.Source{{Name: "directconnect", Up: false, LastSuccess: t0.Add(-time.Minute)}, {Name: "cloudwatch", Up: true, LastSuccess: t0}},
		Requests: []awsstate.RequestCount{{Service: "directconnect", Operation: "DescribeConnections", Outcome: "throttled", Count: 3}},
	}
}

func TestExposition(t *testing.T) {
	c := New()
	c.Set(static{snapshot()})
	want := `
# HELP probed_aws_api_requests_total AWS API requests, every attempt counted, by outcome.
# TYPE probed_aws_api_requests_total counter
probed_aws_api_requests_total{operation="DescribeConnections",outcome="throttled",service="directconnect"} 3
# HELP probed_aws_up 1 when the newest poll of every region of the source succeeded.
# TYPE probed_aws_up gauge
probed_aws_up{source="cloudwatch"} 1
probed_aws_up{source="directconnect"} 0
# HELP probed_aws_last_success_timestamp_seconds When every region of the source last polled successfully (the oldest region's success).
# TYPE probed_aws_last_success_timestamp_seconds gauge
probed_aws_last_success_timestamp_seconds{source="cloudwatch"} 1.7803152e+09
probed_aws_last_success_timestamp_seconds{source="directconnect"} 1.78031514e+09
# HELP probed_dx_bgp_peer_status The BGP peer's bgpStatus (value 1); status="unknown" also while polling its region fails.
# TYPE probed_dx_bgp_peer_status gauge
probed_dx_bgp_peer_status{bgp_peer_id="dxpeer-4",status="up",vif_id="dxvif-a"} 1
probed_dx_bgp_peer_status{bgp_peer_id="dxpeer-6",status="down",vif_id="dxvif-a"} 1
probed_dx_bgp_peer_status{bgp_peer_id="dxpeer-d4",status="unknown",vif_id="dxvif-b"} 1
# HELP probed_dx_bgp_peer_up 1 when the BGP session (bgpStatus) is up, 0 when down or unknown; absent while polling its region fails.
# TYPE probed_dx_bgp_peer_up gauge
probed_dx_bgp_peer_up{address_family="ipv4",bgp_peer_id="dxpeer-4",peer_address="10.77.1.1/30",segment="prod",site="us-east",vif_id="dxvif-a"} 1
probed_dx_bgp_peer_up{address_family="ipv6",bgp_peer_id="dxpeer-6",peer_address="fd77:1::1/125",segment="prod",site="us-east",vif_id="dxvif-a"} 0
# HELP probed_dx_connection_bytes_per_second Connection data rate in bytes per second (CloudWatch AWS/DX ConnectionBps*, 1-minute average, bits divided by 8).
# TYPE probed_dx_connection_bytes_per_second gauge
probed_dx_connection_bytes_per_second{connection_id="dxcon-a",direction="egress"} 1.875e+08
# HELP probed_dx_connection_light_level_dbm Optical power in dBm (CloudWatch AWS/DX ConnectionLightLevelTx/Rx); lane is empty for single-lane optics.
# TYPE probed_dx_connection_light_level_dbm gauge
probed_dx_connection_light_level_dbm{connection_id="dxcon-a",direction="rx",lane="2"} -3.1
# HELP probed_dx_connection_macsec_up 1 when MACsec encryption is up on the connection (portEncryptionStatus); absent without MACsec.
# TYPE probed_dx_connection_macsec_up gauge
probed_dx_connection_macsec_up{connection_id="dxcon-a",encryption_mode="must_encrypt"} 0
# HELP probed_dx_connection_up 1 when the Direct Connect connection's state is available.
# TYPE probed_dx_connection_up gauge
probed_dx_connection_up{connection_id="dxcon-a",connection_name="us-east-dx-1",location="EqDC2",region="us-east-1",site="us-east"} 1
probed_dx_connection_up{connection_id="dxcon-b",connection_name="plain",location="EqDC2",region="us-east-1",site="us-east"} 0
# HELP probed_dx_vif_info Virtual interface attributes (value 1).
# TYPE probed_dx_vif_info gauge
probed_dx_vif_info{asn="65001",connection_id="dxcon-a",dx_gateway_id="gw",jumbo_frame_capable="false",location="EqDC2",mtu="1500",sitelink_enabled="false",state="available",type="private",vif_id="dxvif-b",vif_name="dev",vlan="201"} 1
probed_dx_vif_info{asn="65001",connection_id="dxcon-a",dx_gateway_id="gw",jumbo_frame_capable="true",location="EqDC2",mtu="8500",sitelink_enabled="true",state="available",type="private",vif_id="dxvif-a",vif_name="prod",vlan="101"} 1
# HELP probed_dx_vif_up 1 when the virtual interface's state is available.
# TYPE probed_dx_vif_up gauge
probed_dx_vif_up{region="us-east-1",segment="dev",site="us-east",vif_id="dxvif-b",vif_name="dev"} 1
probed_dx_vif_up{region="us-east-1",segment="prod",site="us-east",vif_id="dxvif-a",vif_name="prod"} 1
# HELP probed_nsm_packet_loss_ratio NSM packet loss (CloudWatch AWS/NetworkMonitor PacketLoss, converted from percent).
# TYPE probed_nsm_packet_loss_ratio gauge
probed_nsm_packet_loss_ratio{monitor="m",probe_id="probe-1",segment="prod",site="us-east"} 0.02
# HELP probed_nsm_probe_info Network Synthetic Monitor probe attributes (value 1).
# TYPE probed_nsm_probe_info gauge
probed_nsm_probe_info{destination="10.77.1.1",monitor="m",packet_size="56",port="443",probe_id="probe-1",protocol="TCP",segment="prod",site="us-east",source_arn="arn:subnet",state="active"} 1
# HELP probed_nsm_rtt_seconds NSM round-trip time (CloudWatch AWS/NetworkMonitor RTT, converted from microseconds).
# TYPE probed_nsm_rtt_seconds gauge
probed_nsm_rtt_seconds{monitor="m",probe_id="probe-1",segment="prod",site="us-east"} 0.0215
`
	names := []string{"probed_aws_api_requests_total", "probed_aws_up", "probed_aws_last_success_timestamp_seconds",
		"probed_dx_bgp_peer_status", "probed_dx_bgp_peer_up", "probed_dx_connection_bytes_per_second",
		"probed_dx_connection_light_level_dbm", "probed_dx_connection_macsec_up", "probed_dx_connection_up",
		"probed_dx_vif_info", "probed_dx_vif_up", "probed_nsm_packet_loss_ratio", "probed_nsm_probe_info", "probed_nsm_rtt_seconds"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	probs, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	// promtool check metrics runs the same linter: no exceptions.
	for _, p := range probs {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	c.Set(nil)
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("without a source %d series", n)
	}
}

// TestEndToEnd runs the real SDK poller against the emulator and reads the
// exposition: the whole contract, a BGP peer going down, polling breaking.
func TestEndToEnd(t *testing.T) {
	srv := awstest.New(nil)
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir := t.TempDir()
	for k, v := range map[string]string{"AWS_CONFIG_FILE": filepath.Join(dir, "c"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "k"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": url,
		"AWS_REGION": "", "AWS_PROFILE": "", "AWS_SESSION_TOKEN": "", "AWS_ENDPOINT_URL_DIRECT_CONNECT": "",
		"AWS_ENDPOINT_URL_NETWORKMONITOR": "", "AWS_ENDPOINT_URL_CLOUDWATCH": ""} {
		t.Setenv(k, v)
	}
	base, err := os.ReadFile("../../configs/example-mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(append(base, "\naws:\n  poll_all: false\n"...), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := awsstate.New(context.Background(), awsstate.Options{Config: cfg.AWS, Sites: cfg.Sites, Site: "ap-sydney",
		LoadOptions: []func(*awsconfig.LoadOptions) error{awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
			})
		})}})
	if err != nil {
		t.Fatal(err)
	}
	c := New()
	c.Set(p)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	ctx := context.Background()
	p.PollOnce(ctx)

	families := func() map[string]int {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, mf := range mfs {
			n[mf.GetName()] = len(mf.GetMetric())
		}
		return n
	}
	got := families()
	for name, want := range map[string]int{
		"probed_dx_connection_up": 1, "probed_dx_connection_macsec_up": 1, "probed_dx_vif_up": 2, "probed_dx_vif_info": 2,
		"probed_dx_bgp_peer_up": 4, "probed_dx_connection_bytes_per_second": 2, "probed_dx_vif_bytes_per_second": 4,
		"probed_dx_connection_packets_per_second": 2, "probed_dx_vif_packets_per_second": 4,
		"probed_dx_connection_light_level_dbm": 2, "probed_dx_connection_errors": 1, "probed_nsm_probe_info": 2,
		"probed_nsm_rtt_seconds": 2, "probed_nsm_packet_loss_ratio": 2, "probed_nsm_health_indicator": 2,
		"probed_aws_up": 3, "probed_aws_last_success_timestamp_seconds": 3,
	} {
		if got[name] != want {
			t.Errorf("%s: %d series, want %d", name, got[name], want)
		}
	}
	if got["probed_aws_api_requests_total"] == 0 {
		t.Error("no request counters")
	}
	promtoolCheckMetrics(t, reg)

	// value reads one series of the exposition, by name and labels.
	value := func(name string, labels map[string]string) (float64, bool) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, l := range m.GetLabel() {
					have[l.GetName()] = l.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue next
					}
				}
				return m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	peer := map[string]string{"address_family": "ipv4", "bgp_peer_id": "dxpeer-fp64k7x2q", "peer_address": "10.77.6.1/30",
		"segment": "prod", "site": "ap-sydney", "vif_id": "dxvif-fp6k7x2q"}
	for _, step := range []struct {
		status string
		want   float64
	}{{"", 1}, {"down", 0}, {"up", 1}} {
		if step.status != "" {
			srv.SetBGPStatus("dxvif-fp6k7x2q", "dxpeer-fp64k7x2q", step.status)
			p.PollOnce(ctx)
		}
		if v, ok := value("probed_dx_bgp_peer_up", peer); !ok || v != step.want {
			t.Fatalf("BGP peer set %q: probed_dx_bgp_peer_up = %v (present %v), want %v", step.status, v, ok, step.want)
		}
	}
	srv.SetMACsec("dxcon-fh6k7x2q", false)
	p.PollOnce(ctx)
	if v, ok := value("probed_dx_connection_macsec_up", map[string]string{"connection_id": "dxcon-fh6k7x2q", "encryption_mode": "must_encrypt"}); !ok || v != 0 {
		t.Fatalf("MACsec down: probed_dx_connection_macsec_up = %v (present %v)", v, ok)
	}
	if v, ok := value("probed_nsm_rtt_seconds", map[string]string{"monitor": "sitelink-ap-sydney"}); !ok || v <= 0 || v > 1 {
		t.Fatalf("probed_nsm_rtt_seconds = %v (present %v), want seconds", v, ok)
	}
	// Every NSM series carries the site and segment of its probe, so
	// NSM groups by site without a join (monitor tag site=ap-sydney,
	// probe tag segment=prod in the fixture).
	for _, name := range []string{"probed_nsm_probe_info", "probed_nsm_rtt_seconds", "probed_nsm_packet_loss_ratio", "probed_nsm_health_indicator"} {
		if _, ok := value(name, map[string]string{"monitor": "sitelink-ap-sydney", "site": "ap-sydney", "segment": "prod"}); !ok {
			t.Errorf("%s has no series with site=ap-sydney, segment=prod", name)
		}
	}

	// Polling breaks: probed_aws_up drops and no BGP peer reads up.
	srv.SetFault(awstest.DirectConnect, awstest.FaultAccessDenied, -1)
	p.PollOnce(ctx)
	got = families()
	if got["probed_dx_bgp_peer_up"] != 0 || got["probed_dx_bgp_peer_status"] != 4 {
		t.Fatalf("after polling broke: %d bgp_peer_up, %d bgp_peer_status series", got["probed_dx_bgp_peer_up"], got["probed_dx_bgp_peer_status"])
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP probed_aws_up 1 when the newest poll of every region of the source succeeded.
# TYPE probed_aws_up gauge
probed_aws_up{source="cloudwatch"} 1
probed_aws_up{source="directconnect"} 0
probed_aws_up{source="networkmonitor"} 1
`), "probed_aws_up"); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkCollect(b *testing.B) {
	// poll_all over the 7-site fixture is ~40 state and ~150 CloudWatch series.
	s := snapshot()
	for i := 0; i < 6; i++ {
		s.Connections = append(s.Connections, s.Connections...)
		s.VIFs = append(s.VIFs, s.VIFs[:2]...)
	}
	c := New()
	c.Set(static{s})
	ch := make(chan prometheus.Metric, 4096)
	b.ReportAllocs()
	for b.Loop() {
		c.Collect(ch)
		for len(ch) > 0 {
			<-ch
		}
	}
}

// promtoolCheckMetrics runs Debian's `promtool check metrics` (the linter
// operators run on a scrape) over every AWS series: it must find nothing.
func promtoolCheckMetrics(t *testing.T, g prometheus.Gatherer) {
	t.Helper()
	promtool := probedtestutil.RequireTool(t, "promtool", "prometheus")
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = &text
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v: %s", err, out)
	}
}
