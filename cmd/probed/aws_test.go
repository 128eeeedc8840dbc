package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/probed/probed/internal/awstest"
)

func TestCheckConfigListsDiscoveredTargets(t *testing.T) {
	awstest.Env(t)
	file := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(file, []byte(awstest.TwoSiteMesh), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if rc := checkConfig(context.Background(), &out, &errb, file, "", false); rc != 0 {
		t.Fatalf("check-config exit %d: %s", rc, errb.String())
	}
	s := out.String()
	// 6 other sites × prod/dev × IPv4/IPv6, minus 10.77.2.1 the file has.
	if !strings.Contains(s, "of which discovered from AWS: 23") {
		t.Fatalf("check-config output:\n%s\nstderr: %s", s, errb.String())
	}
	rows := map[string]string{} // target → line fields
	for _, line := range strings.Split(s, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[len(f)-1] == "discovered" {
			rows[f[1]] = strings.Join(f, " ")
		}
	}
	for target, want := range map[string]string{
		"10.77.2.65": "us-central 10.77.2.65 icmp icmp sitelink dev 1s 2s discovered",
		"fd77:6::41": "ap-sydney fd77:6::41 icmp icmp sitelink dev 1s 2s discovered",
	} {
		if rows[target] != want {
			t.Errorf("row for %s: %q, want %q", target, rows[target], want)
		}
	}
	if strings.Contains(s, "10.77.1.1 ") {
		t.Errorf("the agent's own site was discovered as a target:\n%s", s)
	}
}
