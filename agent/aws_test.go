package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/probed/probed/internal/awstest"
	"github.com/probed/probed/internal/nssock"
	ptestutil "github.com/probed/probed/internal/testutil"
)

const awsMesh = `site: us-east
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
        mtu: false
aws:
  dx_gateway_ids: [5f294f92-bafb-4011-916d-9b0b7e1a0001]
  discovery:
    enabled: true
`

// AWS polling starts with the aws: section; SiteLink discovery is an input
// of the plan, so the targets it finds become engine jobs without a reload;
// removing the section stops polling and the discovered jobs.
func TestAWSPollingAndDiscovery(t *testing.T) {
	awstest.Env(t)
	// The discovered targets are lab addresses: they are probed inside an
	// empty namespace of the test, where they go nowhere.
	ns := ptestutil.NewNetNS(t)
	a := startAgent(t, awsMesh, Options{Sockets: nssock.In(ns)})
	// Workers start within 2 s (jittered), discovery is looked at every
	// 5 s; give a loaded CI box 30 s.
	waitUntil(t, 30*time.Second, "AWS series and the 23 discovered targets as jobs", func() bool {
		return testutil.CollectAndCount(a.reg, "probed_dx_bgp_peer_up") == 4 && a.engine.Targets()["icmp"] == 2+23
	})
	if err := a.reload(t, strings.Split(awsMesh, "aws:")[0]); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(a.reg, "probed_dx_bgp_peer_up", "probed_dx_vif_state"); n != 0 {
		t.Fatalf("%d AWS series after the aws: section went away", n)
	}
	if n := a.engine.Targets()["icmp"]; n != 2 {
		t.Fatalf("%d ICMP jobs after the aws: section went away, want the file's 2", n)
	}
}
