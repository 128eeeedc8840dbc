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

// AWS polling starts with the aws: section; SiteLink discovery is an input
// of the plan, so the targets it finds become engine jobs without a reload;
// removing the section stops polling and the discovered jobs.
func TestAWSPollingAndDiscovery(t *testing.T) {
	awstest.Env(t)
	// The discovered targets are lab addresses: they are probed inside an
	// empty namespace of the test, where they go nowhere.
	ns := ptestutil.NewNetNS(t)
	a := startAgent(t, awstest.TwoSiteMesh, Options{Sockets: nssock.In(ns)})
	// Workers start within 2 s (jittered), discovery is looked at every
	// 5 s; give a loaded CI box 30 s.
	waitUntil(t, 30*time.Second, "AWS series and the 23 discovered targets as jobs", func() bool {
		return testutil.CollectAndCount(a.reg, "probed_dx_bgp_peer_up") == 4 && a.engine.Targets()["icmp"] == 2+23
	})
	if err := a.reload(t, strings.Split(awstest.TwoSiteMesh, "aws:")[0]); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(a.reg, "probed_dx_bgp_peer_up", "probed_dx_vif_state"); n != 0 {
		t.Fatalf("%d AWS series after the aws: section went away", n)
	}
	if n := a.engine.Targets()["icmp"]; n != 2 {
		t.Fatalf("%d ICMP jobs after the aws: section went away, want the file's 2", n)
	}
}

// --aws.poll-all (Options.PollAll) overrides aws.poll_all of the shared
// mesh file for one agent.
func TestPollAllOverride(t *testing.T) {
	awstest.Env(t)
	ns := ptestutil.NewNetNS(t)
	mesh := strings.Replace(awstest.TwoSiteMesh, "  discovery:\n    enabled: true\n", "  poll_all: false\n", 1)
	conns := func(o Options, want func(int) bool) (int, *testAgent) {
		a := startAgent(t, mesh, o)
		n := 0
		waitUntil(t, 30*time.Second, "Direct Connect connections polled", func() bool {
			n = testutil.CollectAndCount(a.reg, "probed_dx_connection_state")
			return want(n)
		})
		return n, a
	}
	ns2 := ptestutil.NewNetNS(t)
	all := true
	// With the override, more than the agent's own connection appears.
	if every, _ := conns(Options{Sockets: nssock.In(ns2), PollAll: &all}, func(n int) bool { return n >= 2 }); every < 2 {
		t.Fatalf("%d connections with the override", every)
	}
	// Without it, only the agent's own, even after every region's round.
	_, a := conns(Options{Sockets: nssock.In(ns)}, func(n int) bool { return n >= 1 })
	time.Sleep(3 * time.Second)
	if own := testutil.CollectAndCount(a.reg, "probed_dx_connection_state"); own != 1 {
		t.Fatalf("%d connections polled with poll_all: false, want the agent's own", own)
	}
}
