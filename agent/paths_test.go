package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/internal/nssock"
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
func TestPathJobsReload(t *testing.T) {
	ns := testutil.NewNetNS(t)
	a := startAgent(t, pathReloadMesh, Options{Sockets: nssock.In(ns)})
	if n := a.engine.Targets(); n["trace"] != 1 || n["mtu"] != 1 { // of 127.0.0.2; the guard gets neither
		t.Fatalf("jobs %v, want one trace and one mtu", n)
	}
	waitUntil(t, 10*time.Second, "trace and MTU of 127.0.0.2", func() bool {
		p := pathsGet(t, a.mux)["127.0.0.2"]
		return pathHopList(p) == "127.0.0.2" && p.MTUBytes != nil && *p.MTUBytes == 9001
	})
	if _, ok := pathsGet(t, a.mux)["127.0.0.3"]; ok {
		t.Error("guard target traced")
	}

	off := strings.NewReplacer("enabled: true", "enabled: false", "mtu: {interval: 1s}", "mtu: {interval: 1s, paths: [none]}").Replace(pathReloadMesh)
	if err := a.reload(t, off); err != nil {
		t.Fatal(err)
	}
	if n := a.engine.Targets(); n["trace"] != 0 || n["mtu"] != 0 {
		t.Errorf("jobs %v after switching everything off", n)
	}
	if p := pathsGet(t, a.mux); len(p) != 0 {
		t.Errorf("/paths still lists %v", p)
	}
	if out := scrapeText(t, a.reg); strings.Contains(out, "probed_path_") {
		t.Errorf("path series left:\n%s", out)
	}

	// Every JSON endpoint refuses other methods the same way: 405, the
	// methods it takes, and an error a client can parse.
	for _, path := range []string{"/paths", "/api/v1/flows", "/api/v1/status", "/api/v1/mesh",
		"/api/v1/history", "/api/v1/events", "/api/v1/events/stream"} {
		rec := httptest.NewRecorder()
		a.mux.ServeHTTP(rec, httptest.NewRequest("POST", path, nil))
		var body struct{ Error string }
		err := json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" || err != nil || body.Error == "" {
			t.Errorf("POST %s: %d, Allow %q, body %q", path, rec.Code, rec.Header().Get("Allow"), rec.Body)
		}
	}
}
