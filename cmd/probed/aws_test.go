package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/awstest"
)

// awsEnv points the SDK's default chain at the emulator through the
// standard environment only, as a user behind a VPC endpoint would.
func awsEnv(t *testing.T) *awstest.Server {
	t.Helper()
	srv := awstest.New(nil)
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	for k, v := range map[string]string{"AWS_CONFIG_FILE": filepath.Join(dir, "c"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "k"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": url,
		"AWS_REGION": "", "AWS_PROFILE": "", "AWS_SESSION_TOKEN": "", "AWS_ENDPOINT_URL_DIRECT_CONNECT": "",
		"AWS_ENDPOINT_URL_NETWORKMONITOR": "", "AWS_ENDPOINT_URL_CLOUDWATCH": ""} {
		t.Setenv(k, v)
	}
	return srv
}

const twoSiteMesh = `site: us-east
sites:
  - name: us-east
    region: us-east-1
    location: EqDC2
    targets:
      - address: 10.78.1.1
        path: mpls
  - name: us-central
    region: us-east-2
    location: EqDA2
    targets:
      - address: 10.78.2.1
        path: mpls
      - address: 10.77.2.1
        path: sitelink
        segment: prod
aws:
  dx_gateway_ids: [5f294f92-bafb-4011-916d-9b0b7e1a0001]
  discovery:
    enabled: true
`

func TestCheckConfigListsDiscoveredTargets(t *testing.T) {
	awsEnv(t)
	file := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(file, []byte(twoSiteMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if rc := checkConfig(context.Background(), &out, &errb, file, "", false); rc != 0 {
		t.Fatalf("check-config exit %d: %s", rc, errb.String())
	}
	s := out.String()
	// 6 other sites × prod/dev × IPv4/IPv6, minus 10.77.2.1 the file has.
	if !strings.Contains(s, "of which discovered from AWS: 23") {
		t.Fatalf("check-config output:\n%s\nstderr: %s", s, errb.String())
	}
	rows := map[string]string{} // target → line fields
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[len(f)-1] == "discovered" {
			rows[f[1]] = strings.Join(f, " ")
		}
	}
	for target, want := range map[string]string{
		"10.77.2.65": "us-central 10.77.2.65 icmp sitelink dev 1s 2s discovered",
		"fd77:6::41": "ap-sydney fd77:6::41 icmp sitelink dev 1s 2s discovered",
	} {
		if rows[target] != want {
			t.Errorf("row for %s: %q, want %q", target, rows[target], want)
		}
	}
	if strings.Contains(s, "10.77.1.1 ") {
		t.Errorf("the agent's own site was discovered as a target:\n%s", s)
	}
}

func TestAWSFeatureStartsAndStopsWithTheSection(t *testing.T) {
	awsEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	f := newAWSFeature(ctx, &deps{Logger: zap.NewNop(), Registry: reg, Site: "us-east"})
	cfg, err := config.Parse([]byte(twoSiteMesh), "mesh.yaml")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := cfg.Plan("")
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 10)
	f.(*awsFeature).SetOnChange(func() { changed <- struct{}{} })
	if err := f.Apply(ctx, cfg, plan); err != nil {
		t.Fatal(err)
	}
	// Workers start within 2 s (jittered); give a loaded CI box 30 s.
	deadline := time.Now().Add(30 * time.Second)
	for testutil.CollectAndCount(reg, "probed_dx_bgp_peer_up") != 4 || len(f.(discoverer).Discovered()) != 23 {
		if time.Now().After(deadline) {
			t.Fatalf("no AWS series after 30s: %d BGP peers, %d discovered", testutil.CollectAndCount(reg, "probed_dx_bgp_peer_up"),
				len(f.(discoverer).Discovered()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The daemon is told to re-plan once discovery has found targets
	// (the watcher looks every 5 s).
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("discovery found targets but the re-plan hook was not called")
	}
	cfg.AWS = nil
	if err := f.Apply(ctx, cfg, plan); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg); n != 0 {
		t.Fatalf("%d AWS series after the aws: section went away", n)
	}
}
