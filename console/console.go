// Package console serves the agent's web console: one page embedded in the
// binary (plain HTML, CSS and JavaScript: no CDN, no build step) that draws
// the mesh matrix, a pair's latency chart, the AWS side and the live event
// timeline from the agent's JSON APIs (status, events, history). Every URL
// in it is relative, so it works behind the same TLS and basic auth as
// /metrics, and under a path prefix.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Register mounts GET / (the page) and GET /console/ (its script and style)
// on mux. Other paths are left to the mux's other handlers.
func Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", Handler())
	mux.Handle("GET /console/", Handler())
}

// Handler serves the page at / and its files under /console/.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The page talks only to its own agent: no inline script, no
		// third-party origin.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		if r.URL.Path == "/" {
			// Written directly: the file server redirects /index.html.
			h.Set("Content-Type", "text/html; charset=utf-8")
			if r.Method != http.MethodHead {
				_, _ = w.Write(index)
			}
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, "/console")
		if !ok || name == "/" || name == "/index.html" || !strings.HasPrefix(name, "/") {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = name
		files.ServeHTTP(w, r2)
	})
}
