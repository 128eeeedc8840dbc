package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/probed/probed/config"
	"github.com/probed/probed/internal/testutil"
)

const pathReloadMesh = `
site: local
probe: {interval: 1s, timeout: 300ms}
trace: {enabled: true, interval: 1s}
mtu: {interval: 1s}
sites:
  - name: local
    targets: [{address: 127.0.0.1}]
  - name: peer
    targets:
      - {address: 127.0.0.2, path: sitelink}
      - {address: 127.0.0.3, path: mpls, expect: unreachable}
`

// A reload that switches discovery off stops the jobs and removes their
// series; guards are never traced; /paths only answers GET.
func TestPathFeatureReload(t *testing.T) {
	ns := testutil.NewNetNS(t)
	parse := func(s string) (*config.Config, *config.Plan) {
		t.Helper()
		cfg, err := config.Parse([]byte(s), "reload.yaml")
		if err != nil {
			t.Fatal(err)
		}
		plan, err := cfg.Plan("")
		if err != nil {
			t.Fatal(err)
		}
		return cfg, plan
	}
	reg := prometheus.NewPedanticRegistry()
	mux := http.NewServeMux()
	ctx, cancel := context.WithCancel(context.Background())
	var f *pathFeature
	cfg, plan := parse(pathReloadMesh)
	if err := ns.Do(func() error {
		f = newPathFeature(ctx, &deps{Logger: zap.NewNop(), Registry: reg, Mux: mux, Site: "local"}).(*pathFeature)
		return f.Apply(ctx, cfg, plan)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); f.close() })
	if n := len(f.jobs); n != 2 { // trace + mtu of 127.0.0.2; the guard gets neither
		t.Fatalf("%d jobs, want 2", n)
	}
	pathWaitUntil(t, 10*time.Second, "trace and MTU of 127.0.0.2", func() bool {
		p := pathsGet(t, mux)["127.0.0.2"]
		return pathHopList(p) == "127.0.0.2" && p.MTUBytes != nil && *p.MTUBytes == 9001
	})
	if _, ok := pathsGet(t, mux)["127.0.0.3"]; ok {
		t.Error("guard target traced")
	}

	off := strings.NewReplacer("enabled: true", "enabled: false", "mtu: {interval: 1s}", "mtu: {interval: 1s, paths: [none]}").Replace(pathReloadMesh)
	cfg, plan = parse(off)
	if err := f.Apply(ctx, cfg, plan); err != nil {
		t.Fatal(err)
	}
	if n := len(f.jobs); n != 0 {
		t.Errorf("%d jobs after switching everything off", n)
	}
	if p := pathsGet(t, mux); len(p) != 0 {
		t.Errorf("/paths still lists %v", p)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		t.Errorf("series left: %s", mf.GetName())
	}

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/paths", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /paths: %d", rec.Code)
	}
}
