package sla

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/probed/probed/internal/testutil"
	"github.com/probed/probed/sla/slatest"
)

// bcrypt of "sla-secret" (cost 4), for Prometheus' basic_auth_users.
const testPasswordHash = "$2a$04$y/8AvqP2Kryi74wdrtYLIu7h2ycR/pHwjWi/LtUb1C0U5xnlS9RVS"

// TestTLSAndBasicAuth runs the report against a Prometheus that serves
// HTTPS with a private CA and requires basic auth (--web.config.file), with
// the client set up from a Prometheus-style http_config file; and checks
// the messages for a wrong password, an unknown CA, plain HTTP and a period
// without data.
func TestTLSAndBasicAuth(t *testing.T) {
	blocks := blocksDir(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := testutil.WritePKI(t, dir)
	web := write(t, dir, "web.yml", "tls_server_config:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+
		"\nbasic_auth_users:\n  probed: "+testPasswordHash+"\n")
	pw := write(t, dir, "password", "sla-secret\n")
	good := write(t, dir, "client.yml", "basic_auth:\n  username: probed\n  password_file: "+pw+"\ntls_config:\n  ca_file: "+caFile+"\n")
	hc, err := NewHTTPClient(good)
	if err != nil {
		t.Fatal(err)
	}
	srv := slatest.StartPrometheus(t, blocks, web, hc)
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("server URL %s", srv.URL)
	}
	day := Options{From: mustTime("2026-10-05T00:00:00Z"), To: mustTime("2026-10-06T00:00:00Z"), Chunk: 6 * time.Hour, SLA: testSLA(t), Now: monthTo}

	t.Run("authorized", func(t *testing.T) {
		c, err := NewClient(srv.URL, hc)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Build(context.Background(), c, day)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range r.Pairs {
			if p.Target == "ap-tokyo" && (p.Minutes.Bad != 50 || p.Minutes.Good != 1390 || len(p.Breaches) != 1) {
				t.Errorf("tokyo on Oct 5: %+v, %d breaches", p.Minutes, len(p.Breaches))
			}
		}
	})

	for _, c := range []struct {
		name, url, clientCfg string
		want                 []string
	}{
		{"wrong password", srv.URL, write(t, dir, "bad.yml", "basic_auth:\n  username: probed\n  password: nope\ntls_config:\n  ca_file: "+caFile+"\n"),
			[]string{"401 Unauthorized", "check the credentials"}},
		{"unknown CA", srv.URL, write(t, dir, "noca.yml", "basic_auth:\n  username: probed\n  password: sla-secret\n"),
			[]string{"is unreachable", "certificate", "tls_config"}},
		{"plain http", "http://" + srv.Addr, good, []string{"not the Prometheus API", "is --prometheus.url right?"}},
		{"closed port", "http://" + slatest.FreeAddr(t), good, []string{"is unreachable", "connection refused", "is the server running"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hc, err := NewHTTPClient(c.clientCfg)
			if err != nil {
				t.Fatal(err)
			}
			cl, err := NewClient(c.url, hc)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Build(context.Background(), cl, day)
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v, want it to say %q", err, w)
				}
			}
		})
	}

	t.Run("period cut at report time, nothing matched", func(t *testing.T) {
		c, _ := NewClient(srv.URL, hc)
		o := day
		o.To, o.Now, o.Match = mustTime("2026-10-07T00:00:00Z"), mustTime("2026-10-05T12:00:30Z"), `source_site="nowhere"`
		r, err := Build(context.Background(), c, o)
		if err != nil {
			t.Fatal(err)
		}
		notes := strings.Join(r.Notes, "\n")
		if !r.To.Equal(mustTime("2026-10-05T12:00:00Z")) || len(r.Pairs) != 0 || !strings.Contains(notes, "cut at the report time, 2026-10-05 12:00 UTC") ||
			!strings.Contains(notes, `No probe series matching source_site="nowhere" had data`) {
			t.Errorf("to %s, %d pairs, notes %q", r.To, len(r.Pairs), notes)
		}
	})

	t.Run("period without data", func(t *testing.T) {
		c, _ := NewClient(srv.URL, hc)
		_, err := Build(context.Background(), c, Options{From: mustTime("2025-01-01T00:00:00Z"), To: mustTime("2025-01-02T00:00:00Z"), Now: monthTo})
		if err == nil || !strings.Contains(err.Error(), "has no probed_* metrics between 2025-01-01T00:00:00Z and 2025-01-02T00:00:00Z") {
			t.Errorf("error %v", err)
		}
	})

	t.Run("bad client settings", func(t *testing.T) {
		_, err := NewHTTPClient(write(t, dir, "typo.yml", "basic_auth:\n  user: probed\n"))
		if err == nil || !strings.Contains(err.Error(), "typo.yml") || !strings.Contains(err.Error(), "user") {
			t.Errorf("error %v", err)
		}
	})
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// writeTestPKI makes a throw-away CA and a server certificate for 127.0.0.1.
