package deploy

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// annotation is a dashboard annotation as the event recipe needs it.
type annotation struct {
	Name   string `json:"name"`
	Expr   string `json:"expr"`
	Filter *struct {
		Exclude bool  `json:"exclude"`
		IDs     []int `json:"ids"`
	} `json:"filter"`
}

// dashboardAnnotation returns a dashboard's annotation by name, its
// expression with the given variable values.
func dashboardAnnotation(t testing.TB, file, name string, vars map[string]string) (annotation, string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Annotations struct {
			List []annotation `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	for _, a := range d.Annotations.List {
		if a.Name == name {
			expr := a.Expr
			for k, v := range vars {
				expr = strings.ReplaceAll(expr, "$"+k, v)
			}
			return a, expr
		}
	}
	t.Fatalf("%s has no annotation %q", file, name)
	return annotation{}, ""
}

// The site-pair dashboard draws the agents' events (probed_events_total)
// on its latency panels, and only there. TestEndToEndAlerting runs the
// query against a real Prometheus scraping real agents.
func TestEventAnnotationRecipe(t *testing.T) {
	a, expr := dashboardAnnotation(t, "grafana/site-pair.json", "Agent events", map[string]string{"source_site": "us-east", "target_site": "us-central"})
	if !strings.Contains(expr, "probed_events_total") || !strings.Contains(expr, `agent_site=~"us-east|us-central"`) {
		t.Errorf("annotation query %q", expr)
	}
	titles := map[int]string{}
	for _, d := range loadDashboards(t) {
		if d.UID != "probed-site-pair" {
			continue
		}
		for _, p := range allPanels(d.Panels) {
			titles[p.ID] = p.Title
		}
	}
	if a.Filter == nil || a.Filter.Exclude || len(a.Filter.IDs) == 0 {
		t.Fatalf("annotation filter %+v: want the latency panels only", a.Filter)
	}
	for _, id := range a.Filter.IDs {
		if !strings.Contains(titles[id], "RTT") {
			t.Errorf("annotation on panel %d %q, not a latency panel", id, titles[id])
		}
	}
}
