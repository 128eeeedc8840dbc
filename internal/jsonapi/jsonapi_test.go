package jsonapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestGet(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if Get(w, r) {
			Write(w, map[string]int{"n": 1})
		}
	})
	for _, c := range []struct {
		method string
		code   int
		body   string
	}{
		{http.MethodGet, 200, `{"n":1}`},
		{http.MethodHead, 200, ""},
		{http.MethodPost, 405, `{"error":"use GET"}`},
		{"FOO", 405, `{"error":"use GET"}`},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, "/x", nil))
		if rec.Code != c.code {
			t.Errorf("%s: code %d, want %d", c.method, rec.Code, c.code)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", c.method, ct)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q", c.method, cc)
		}
		if c.code == 405 && rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: Allow %q", c.method, rec.Header().Get("Allow"))
		}
		if c.method == http.MethodHead {
			continue // the server, not the handler, drops HEAD bodies
		}
		var got any
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: body %q is not JSON: %v", c.method, rec.Body, err)
		}
		if gb, _ := json.Marshal(got); string(gb) != c.body {
			t.Errorf("%s: body %s, want %s", c.method, gb, c.body)
		}
	}
}
