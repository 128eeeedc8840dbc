package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// prometheusBuiltins are series Prometheus itself makes.
var prometheusBuiltins = []string{"up", "ALERTS", "ALERTS_FOR_STATE"}

// knownMetrics is every series name a dashboard may query: what probed
// exports (docs/metrics.md, the metric reference), what the recording rules
// define, and Prometheus's own.
func knownMetrics(t testing.TB) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for name, typ := range exportedMetrics(t) {
		known[name] = true
		// Histograms and summaries are queried through their parts.
		if typ == "histogram" || typ == "summary" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				known[name+s] = true
			}
		}
	}
	for _, m := range recordedNames(t) {
		known[m] = true
	}
	for _, m := range prometheusBuiltins {
		known[m] = true
	}
	return known
}

// exportedMetrics reads metric names and types from the tables of
// docs/metrics.md (| `probed_rtt_seconds` | histogram | ... |).
func exportedMetrics(t testing.TB) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs/metrics.md"))
	if err != nil {
		t.Fatalf("reading the metric reference: %v", err)
	}
	row := regexp.MustCompile("^\\|\\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\\s*\\|\\s*(counter|gauge|histogram|summary|info|untyped)\\s*\\|")
	names := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			names[m[1]] = m[2]
		}
	}
	if len(names) < 20 {
		t.Fatalf("docs/metrics.md: found only %d metrics in its tables (| `name` | type | ... |)", len(names))
	}
	return names
}

type dashboard struct {
	UID         string  `json:"uid"`
	Title       string  `json:"title"`
	Panels      []panel `json:"panels"`
	Annotations struct {
		List []struct {
			Name       string          `json:"name"`
			Expr       string          `json:"expr"`
			Datasource json.RawMessage `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// allPanels is ps and the panels inside them (rows), depth first.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

type panel struct {
	ID         int `json:"id"`
	Type       string
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a row's panels
}

func loadDashboards(t testing.TB) map[string]dashboard {
	t.Helper()
	files, _ := filepath.Glob("grafana/*.json")
	if len(files) < 4 {
		t.Fatalf("want the four dashboards in grafana/, found %v", files)
	}
	ds := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		ds[f] = d
	}
	return ds
}

// grafanaVar matches $var, ${var}, ${var:format} and [[var]].
var grafanaVar = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// substitute replaces Grafana variables with values a real dashboard would
// send, so the result is plain PromQL; it returns the user variables used.
func substitute(expr string) (string, []string) {
	var used []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		s := grafanaVar.FindStringSubmatch(m)
		name := s[1] + s[2] + s[3]
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__range_s":
			return "300"
		case "__range_ms", "__interval_ms":
			return "300000"
		}
		used = append(used, name)
		return "value"
	})
	return out, used
}

// metricNames parses a PromQL expression and returns every metric it selects.
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			names = append(names, name)
		}
		return nil
	})
	return names, nil
}

// labelValuesArg extracts the series selector of label_values(selector, label).
var labelValuesArg = regexp.MustCompile(`^\s*label_values\((.*),\s*\w+\s*\)\s*$`)

// TestDashboardQueries: every panel, annotation and variable query parses as
// PromQL after variable substitution, and every metric it names is one
// probed exports or a recording rule defines: no dead panels.
func TestDashboardQueries(t *testing.T) {
	known := knownMetrics(t)
	uids := map[string]string{}
	for file, d := range loadDashboards(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid and title are required", file)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q also used by %s", file, d.UID, other)
		}
		uids[d.UID] = file
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
		}
		check := func(where, expr string) {
			if strings.TrimSpace(expr) == "" {
				t.Errorf("%s: %s: empty query", file, where)
				return
			}
			q, used := substitute(expr)
			for _, u := range used {
				if !vars[u] {
					t.Errorf("%s: %s: uses $%s, which the dashboard does not define", file, where, u)
				}
			}
			names, err := metricNames(q)
			if err != nil {
				t.Errorf("%s: %s: %q does not parse: %v", file, where, q, err)
				return
			}
			if len(names) == 0 {
				t.Errorf("%s: %s: %q selects no metric", file, where, q)
			}
			for _, n := range names {
				if !known[n] {
					t.Errorf("%s: %s: metric %q is neither exported by probed (docs/metrics.md) nor recorded by deploy/prometheus", file, where, n)
				}
			}
		}
		queries := 0
		for _, p := range allPanels(d.Panels) {
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: panel %q does not use the $datasource variable", file, p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				check("panel "+p.Title+" query "+tg.RefID, tg.Expr)
				queries++
			}
		}
		for _, a := range d.Annotations.List {
			if a.Expr != "" {
				check("annotation "+a.Name, a.Expr)
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				// Older dashboards store the query as a plain string.
				_ = json.Unmarshal(v.Query, &q.Query)
			}
			m := labelValuesArg.FindStringSubmatch(q.Query)
			if m == nil {
				t.Errorf("%s: variable %s: query %q is not label_values(selector, label)", file, v.Name, q.Query)
				continue
			}
			check("variable "+v.Name, m[1])
		}
		t.Logf("%s: %d panel queries checked", file, queries)
	}
}

// TestDashboardVariables: each dashboard lets the user pick the Prometheus
// data source and the sites, path and segment it shows (the AWS-state
// dashboard has no path: the AWS side is SiteLink only), and every variable
// it defines is used somewhere: a selector that changes nothing misleads.
func TestDashboardVariables(t *testing.T) {
	for file, d := range loadDashboards(t) {
		vars := map[string]string{}
		for _, v := range d.Templating.List {
			vars[v.Name] = v.Type
		}
		if vars["datasource"] != "datasource" {
			t.Errorf("%s: no datasource variable", file)
		}
		want := [][]string{{"source_site", "site"}, {"path"}, {"segment"}}
		if d.UID == "probed-aws-state" {
			want = [][]string{{"site"}, {"segment"}}
		}
		for _, want := range want {
			ok := false
			for _, w := range want {
				ok = ok || vars[w] == "query"
			}
			if !ok {
				t.Errorf("%s: no %s variable", file, strings.Join(want, " or "))
			}
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := map[string]bool{}
		for _, m := range grafanaVar.FindAllStringSubmatch(string(raw), -1) {
			used[m[1]+m[2]+m[3]] = true
		}
		for name := range vars {
			if !used[name] {
				t.Errorf("%s: variable $%s is defined but no panel, annotation or variable uses it", file, name)
			}
		}
	}
}

// TestDashboardsCoverIssue checks the four dashboards exist by uid.
func TestDashboardsCoverIssue(t *testing.T) {
	var uids []string
	for _, d := range loadDashboards(t) {
		uids = append(uids, d.UID)
	}
	sort.Strings(uids)
	want := []string{"probed-aws-state", "probed-mesh-overview", "probed-site-pair", "probed-sla"}
	if strings.Join(uids, ",") != strings.Join(want, ",") {
		t.Errorf("dashboards %v, want %v", uids, want)
	}
}

// TestQueryChecker makes sure the checker above sees every selector,
// including those behind functions, subqueries and {__name__="..."}.
func TestQueryChecker(t *testing.T) {
	q, used := substitute(`sum by (le) (rate(a_bucket{site=~"$site",x="${seg:regex}"}[$__rate_interval])) / on () group_left max_over_time(b[$__range:1m]) or {__name__="c"} or [[d]]`)
	if strings.Join(used, ",") != "site,seg,d" {
		t.Errorf("variables used: %v", used)
	}
	names, err := metricNames(q)
	if err != nil {
		t.Fatalf("%q: %v", q, err)
	}
	if got := strings.Join(names, ","); got != "a_bucket,b,c,value" {
		t.Errorf("metric names %s, want a_bucket,b,c,value", got)
	}
}

// TestDashboardShowsMemberPaths: the site-pair dashboard shows the
// member-path series of targets probed over several flows (issue 15):
// lossy flows, the worst flow's loss, member paths and the suspect hop.
func TestDashboardShowsMemberPaths(t *testing.T) {
	var queried []string
	for _, d := range loadDashboards(t) {
		if d.UID != "probed-site-pair" {
			continue
		}
		for _, p := range allPanels(d.Panels) {
			for _, tg := range p.Targets {
				q, _ := substitute(tg.Expr)
				names, _ := metricNames(q)
				queried = append(queried, names...)
			}
		}
	}
	for _, want := range []string{"probed_flows_lossy", "probed_flow_worst_loss_ratio", "probed_flows", "probed_flow_member_paths", "probed_flow_suspect_hop_info"} {
		found := false
		for _, q := range queried {
			found = found || q == want
		}
		if !found {
			t.Errorf("the site-pair dashboard does not show %s", want)
		}
	}
}
