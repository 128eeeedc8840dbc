package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/exporter"
	"github.com/probed/probed/internal/nssock"
	"github.com/probed/probed/internal/testutil"
	"github.com/probed/probed/probe/stamp"
)

// ifaceMesh probes 10.210.0.2 with every kind of job, bound to the
// interface to-peer.
const ifaceMesh = `site: a
probe: {interval: 200ms, timeout: 150ms, down_after: 2}
trace: {enabled: true, interval: 1s, max_ttl: 4, probes_per_hop: 1}
mtu: {interval: 1s, retries: 0, paths: [lan]}
stamp: {port: 8862}
sites:
  - name: a
    targets: []
  - name: b
    targets:
      - {address: 10.210.0.2, path: lan, interface: to-peer, tcp_ports: [8443], stamp: true}
`

// On a real kernel, every kind of job bound to an interface that does not
// exist yet starts when it appears, and recovers after it is deleted and
// re-created (a new ifindex) — without a reload or a restart.
func TestJobsFollowARealInterface(t *testing.T) {
	testutil.RequireRoot(t)
	agentNS, peer := testutil.NewNetNS(t), testutil.NewNetNS(t)
	// The peer: ICMP from its kernel, a TCP listener, a STAMP reflector.
	var ln net.Listener
	var refl *stamp.Reflector
	var pc *net.UDPConn
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := peer.Do(func() (err error) {
		if ln, err = net.Listen("tcp", ":8443"); err != nil {
			return err
		}
		allow, _ := stamp.NewAllowList([]string{"10.210.0.0/24"})
		if refl, err = stamp.NewReflector(stamp.ReflectorConfig{Allow: allow, RateLimit: 100, Burst: 100, SessionTimeout: time.Minute}); err != nil {
			return err
		}
		pc, err = stamp.Listen(ctx, "udp4", ":8862")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	go refl.Serve(ctx, pc)
	link := func() {
		testutil.Veth(t, agentNS, "to-peer", peer, "eth0")
		agentNS.MustRun(t, "ip", "addr", "add", "10.210.0.1/24", "dev", "to-peer")
		if _, err := peer.Run("ip", "addr", "add", "10.210.0.2/24", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
	}

	a := startAgent(t, ifaceMesh, Options{Sockets: nssock.In(agentNS)})
	srv := exporter.NewServer(a.reg, a.Metrics, a.log, nil, exporter.ServerOptions{Ready: a.Ready})
	a.Mount(srv.Mux)
	scrape := func() string {
		rec := httptest.NewRecorder()
		srv.Mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	// metric is the value of the first series of name whose labels
	// include every fragment of labels (comma-separated).
	metric := func(body, name, labels string) float64 {
	lines:
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, name+"{") {
				continue
			}
			for _, l := range strings.Split(labels, ",") {
				if !strings.Contains(line, l) {
					continue lines
				}
			}
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			return v
		}
		return -1
	}
	// One figure per kind that grows while the job works.
	progress := func() map[string]float64 {
		b := scrape()
		p := map[string]float64{
			"icmp":  metric(b, "probed_rtt_seconds_count", `protocol="icmp"`),
			"tcp":   metric(b, "probed_rtt_seconds_count", `protocol="tcp"`),
			"stamp": metric(b, "probed_stamp_rtt_seconds_count", `protocol="stamp"`),
		}
		pa := pathsGet(t, a.mux)["10.210.0.2"]
		p["trace"], p["mtu"] = -1, -1
		if pa.LastTrace != nil && pathHopList(pa) == "10.210.0.2" {
			p["trace"] = float64(pa.LastTrace.UnixNano())
		}
		if pa.LastMTU != nil && pa.MTUBytes != nil && *pa.MTUBytes == 1500 {
			p["mtu"] = float64(pa.LastMTU.UnixNano())
		}
		return p
	}

	// No interface yet: every kind reports bind failures, the target is
	// down, the agent is not ready.
	waitUntil(t, 20*time.Second, "bind failures of every kind", func() bool {
		b := scrape()
		return metric(b, "probed_probe_errors_total", `protocol="icmp",port="",reason="bind"`) >= 2 &&
			metric(b, "probed_probe_errors_total", `protocol="tcp",port="8443",reason="bind"`) >= 2 &&
			metric(b, "probed_stamp_errors_total", `reason="bind"`) >= 2 &&
			metric(b, "probed_path_errors_total", `kind="trace",reason="bind"`) >= 1 &&
			metric(b, "probed_path_errors_total", `kind="mtu",reason="bind"`) >= 1 &&
			metric(b, "probed_target_up", `protocol="icmp"`) == 0
	})
	if ok, why := a.Ready(); ok || !strings.Contains(why, "to-peer") {
		t.Errorf("ready = %v (%s) without the interface", ok, why)
	}

	link()
	waitUntil(t, 30*time.Second, "every kind running once the interface exists", func() bool {
		for _, v := range progress() {
			if v <= 0 {
				return false
			}
		}
		return true
	})
	waitUntil(t, 10*time.Second, "ready", func() bool { ok, _ := a.Ready(); return ok })

	// Deleted and re-created under the same name: a new ifindex.
	agentNS.MustRun(t, "ip", "link", "del", "to-peer")
	time.Sleep(500 * time.Millisecond)
	link()
	at := progress()
	waitUntil(t, 30*time.Second, "every kind running again on the re-created interface", func() bool {
		now := progress()
		for k, v := range at {
			if now[k] <= v {
				return false
			}
		}
		return true
	})
	if b := scrape(); metric(b, "probed_target_up", `protocol="icmp"`) != 1 {
		t.Errorf("ICMP target not up after recovery")
	}
}
