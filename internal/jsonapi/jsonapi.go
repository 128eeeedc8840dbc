// Package jsonapi is what every JSON endpoint of the agent answers the same
// way: the method check, bodies that are never cached, and errors as
// {"error": "..."} so a client parses one shape whatever went wrong.
package jsonapi

import (
	"encoding/json"
	"net/http"
)

// Get answers 405 (Allow: GET, HEAD) to any other method and reports
// whether the handler should go on.
func Get(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	Error(w, http.StatusMethodNotAllowed, "use GET")
	return false
}

// Write answers 200 with v as JSON. The state behind every endpoint
// changes each probe interval, so no cache may keep it.
func Write(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v) // the client went away: nothing to do
}

// Error answers code with {"error": msg}.
func Error(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
