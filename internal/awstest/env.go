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
