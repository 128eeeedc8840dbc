package pathmetrics

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/probed/probed/internal/testutil"
)

var promqlBlock = regexp.MustCompile("(?s)```promql\n(.*?)```")

// docsQueries returns the promql blocks of docs/paths.md, in order.
func docsQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/paths.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range promqlBlock.FindAllStringSubmatch(string(b), -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	if len(out) < 2 {
		t.Fatalf("docs/paths.md has %d promql blocks", len(out))
	}
	return out
}

func promtool(t *testing.T) string {
	t.Helper()
	return testutil.RequireTool(t, "promtool", "prometheus")
}

// Every query of docs/paths.md parses (promtool check rules), and the
// SiteLink-over-MPLS ratios give the right figure on sample series:
// SiteLink averages 1/64 s, MPLS 2/64 s, an IPv6 SiteLink target 4/64 s
// that the reference-mesh query must leave out.
func TestDocsPromQL(t *testing.T) {
	pt := promtool(t)
	qs := docsQueries(t)
	dir := t.TempDir()
	// writeRules records the queries numbered in which (all when empty).
	writeRules := func(name string, which ...int) string {
		var rules strings.Builder
		rules.WriteString("groups:\n  - name: docs\n    rules:\n")
		for i, q := range qs {
			if len(which) > 0 && !slices.Contains(which, i) {
				continue
			}
			fmt.Fprintf(&rules, "      - record: docs:q%d\n        expr: |\n", i)
			for _, l := range strings.Split(q, "\n") {
				fmt.Fprintf(&rules, "          %s\n", l)
			}
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(rules.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if out, err := exec.Command(pt, "check", "rules", writeRules("all.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	// Evaluated separately: the ignoring() form is meant for one target
	// per path and fails (as it should) on the reference mesh's series.
	writeRules("q0.yml", 0)
	writeRules("q1.yml", 1)
	const l = `source_site="us-east",target_site="eu-frankfurt",segment="prod",protocol="icmp",port=""`
	series := func(path, target, sum string) string {
		return fmt.Sprintf("      - series: 'probed_rtt_seconds_sum{%s,path=%q,target=%q}'\n        values: '0+%sx20'\n"+
			"      - series: 'probed_rtt_seconds_count{%s,path=%q,target=%q}'\n        values: '0+64x20'\n", l, path, target, sum, l, path, target)
	}
	test := func(rules, tests string) string {
		return "rule_files: [" + rules + "]\nevaluation_interval: 1m\ntests:\n" + tests
	}
	test0 := test("q0.yml",
		// One target per path: the ignoring(path, target) form.
		"  - interval: 1m\n    input_series:\n"+series("sitelink", "10.77.7.1", "1")+series("mpls", "10.78.7.1", "2")+
			"    promql_expr_test:\n      - expr: docs:q0\n        eval_time: 10m\n        exp_samples:\n"+
			"          - labels: 'docs:q0{source_site=\"us-east\",target_site=\"eu-frankfurt\",segment=\"prod\",protocol=\"icmp\"}'\n            value: 0.5\n")
	test1 := test("q1.yml",
		// The reference mesh: an IPv6 sitelink target as well.
		"  - interval: 1m\n    input_series:\n"+series("sitelink", "10.77.7.1", "1")+series("sitelink", "fd77:7::1", "4")+series("mpls", "10.78.7.1", "2")+
			"    promql_expr_test:\n      - expr: docs:q1\n        eval_time: 10m\n        exp_samples:\n"+
			"          - labels: 'docs:q1{source_site=\"us-east\",target_site=\"eu-frankfurt\",segment=\"prod\",protocol=\"icmp\"}'\n            value: 0.5\n")
	for name, tf := range map[string]string{"test0.yml": test0, "test1.yml": test1} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(tf), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(pt, "test", "rules", f).CombinedOutput(); err != nil {
			t.Fatalf("promtool test rules %s: %v\n%s\n%s", name, err, out, tf)
		}
	}
}
