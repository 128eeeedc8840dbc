package awstest

import (
	"path/filepath"
	"testing"
)

// Env starts a server and points the SDK's default chain at it through the
// standard environment only, as a user behind a VPC endpoint would.
func Env(t testing.TB) *Server {
	t.Helper()
	srv := New(nil)
	url, err := srv.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	dir := t.TempDir()
	for k, v := range map[string]string{"AWS_CONFIG_FILE": filepath.Join(dir, "c"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "k"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": url,
		"AWS_REGION": "", "AWS_PROFILE": "", "AWS_SESSION_TOKEN": "", "AWS_ENDPOINT_URL_DIRECT_CONNECT": "",
		"AWS_ENDPOINT_URL_NETWORKMONITOR": "", "AWS_ENDPOINT_URL_CLOUDWATCH": ""} {
		t.Setenv(k, v)
	}
	return srv
}

// TwoSiteMesh is a mesh file of two sites whose Direct Connect resources the
// server holds, with SiteLink discovery on: us-east's agent discovers the
// other sites' SiteLink routers.
const TwoSiteMesh = `site: us-east
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
