package console

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	// What else the agent serves stays reachable next to the console.
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "m") })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, c := range []struct {
		path, ctype string
		code        int
		body        string
	}{
		{"/", "text/html; charset=utf-8", 200, `<script src="console/console.js" defer>`},
		{"/console/console.js", "text/javascript; charset=utf-8", 200, "EventSource(api('api/v1/events/stream'))"},
		{"/console/console.css", "text/css; charset=utf-8", 200, ".entry.state-down"},
		{"/console/", "", 404, ""},
		{"/console/index.html", "", 404, ""},
		{"/console/nope.js", "", 404, ""},
		{"/other", "", 404, ""},
		{"/metrics", "", 200, "m"},
	} {
		resp, err := http.Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || (c.ctype != "" && resp.Header.Get("Content-Type") != c.ctype) || !strings.Contains(string(b), c.body) {
			t.Errorf("%s: %d %q, want %d %q with %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), c.code, c.ctype, c.body)
		}
		if c.code == 200 && c.path != "/metrics" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: no CSP", c.path)
		}
	}
	resp, _ := http.Post(srv.URL+"/", "text/plain", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /: %d", resp.StatusCode)
	}
}

// TestSelfContained: the page loads nothing from elsewhere (no CDN) and uses
// only relative URLs, so TLS, basic auth and path prefixes carry over.
func TestSelfContained(t *testing.T) {
	abs := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	rooted := regexp.MustCompile(`(src|href)="/|fetch\('/|getJSON\('/|EventSource\('/|api\('/`)
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := fs.ReadFile(assets, p)
		for _, m := range abs.FindAllString(string(b), -1) {
			if m != "http://www.w3.org" { // the SVG namespace name, never fetched
				t.Errorf("%s refers to %s", p, m)
			}
		}
		if m := rooted.FindString(string(b)); m != "" {
			t.Errorf("%s uses a root-relative URL: %s", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
