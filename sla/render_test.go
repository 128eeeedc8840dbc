package sla

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/probed/probed/sla/slatest"
)

// checkRenders renders the planted month in every format and checks that
// each carries the same numbers; the HTML is opened in headless Chromium.
func checkRenders(t *testing.T, r *Report) {
	out := map[string][]byte{}
	for _, f := range Formats {
		var b bytes.Buffer
		if err := Render(&b, r, f); err != nil {
			t.Fatalf("render %s: %v", f, err)
		}
		out[f] = b.Bytes()
	}
	if err := Render(&bytes.Buffer{}, r, "pdf"); err == nil || !strings.Contains(err.Error(), "markdown, csv, json, html") {
		t.Errorf("unknown format error = %v", err)
	}
	// PROBED_SLA_WRITE_DOCS=docs regenerates the sample reports in docs/.
	if dir := os.Getenv("PROBED_SLA_WRITE_DOCS"); dir != "" {
		// A fixed server name keeps the samples stable between runs.
		doc := *r
		doc.Prometheus = "http://prometheus:9090"
		for f, ext := range map[string]string{"markdown": "md", "html": "html", "json": "json", "csv": "csv"} {
			var b bytes.Buffer
			if err := Render(&b, &doc, f); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "sla-sample."+ext), b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("markdown", func(t *testing.T) {
		md := string(out["markdown"])
		for _, want := range []string{
			"# SLA report 2026-10-01 00:00 – 2026-11-01 00:00 UTC",
			"**Definition.** A minute is good",
			"| us-east → ap-tokyo | sitelink | prod | ≥ 99.9 %, loss ≤ 1 %, p95 ≤ 300 ms | 99.8208 % | breached | 44560 | 80 | 0 | 179.2 % | 150.00 ms | 195.00 ms | 199.00 ms | 0.1109 % | 4.01 ms | 2 |",
			"| ap-sydney → eu-frankfurt | sitelink | dev |",
			"361 minutes had no data",
			"| 2026-10-05 03:00 | 2026-10-05 03:50 | 50m | unreachable (unreachable, loss) | no |",
			"| 2026-10-12 14:00 | 2026-10-12 14:20 | 20m | unreachable | yes: 14:02 BGP peer dxpeer-fra-dev-v4 (ipv4 169.254.77.1/30) on dxvif-fra-dev: up → down; 14:19 BGP peer dxpeer-fra-dev-v4 (ipv4 169.254.77.1/30) on dxvif-fra-dev: down → up |",
			"| 2026-10-10 10:00 | 2026-10-10 12:00 | 2h00m | latency | no |",
			"| us-east → us-west | prod | 71.48 ms | 70.00 ms | +2.11 % | mpls | 18 | 13 |",
			"| 2026-10-01 | 60.00 ms | 70.00 ms | -14.29 % | sitelink |",
			"For the one compared pair, sitelink's mean RTT was 2.11 % higher than mpls",
		} {
			if !strings.Contains(md, want) {
				t.Errorf("markdown lacks %q", want)
			}
		}
		// mpls is never compared with AWS state.
		if !strings.Contains(md, "### us-east → us-west mpls/prod\n\nNo breach.") {
			t.Error("markdown: mpls pair should have no breach")
		}
	})

	t.Run("csv", func(t *testing.T) {
		cr := csv.NewReader(bytes.NewReader(out["csv"]))
		cr.FieldsPerRecord = -1
		rows, err := cr.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, row := range rows {
			count[row[0]]++
			if row[0] == "pair" && row[2] == "ap-tokyo" {
				if row[8] != "99.82078853" || row[10] != "44560" || row[11] != "80" || row[12] != "0" {
					t.Errorf("tokyo csv row %v", row)
				}
			}
			if row[0] == "breach" && row[1] == "ap-sydney" && row[5] == "2026-10-12T14:00:00Z" && (row[6] != "2026-10-12T14:20:00Z" || row[8] != "unreachable" || row[10] != "true") {
				t.Errorf("sydney breach csv row %v", row)
			}
		}
		if count["pair"] != 4 || count["breach"] != 5 || count["day"] != 4*31 || count["comparison"] != 1 || count["comparison_day"] != 31 || count["comparison_all"] != 1 || count["section"] != 4 {
			t.Errorf("csv sections: %v", count)
		}
	})

	t.Run("json", func(t *testing.T) {
		var back struct {
			Pairs []struct {
				Source       string   `json:"source_site"`
				Availability *float64 `json:"availability_percent"`
				Minutes      Minutes  `json:"minutes"`
				Breaches     []struct {
					Start      time.Time `json:"start"`
					Cause      string    `json:"cause"`
					AWSChanged bool      `json:"aws_state_changed"`
				} `json:"breaches"`
			} `json:"pairs"`
			Comparisons []struct {
				DiffPercent *float64 `json:"difference_percent"`
			} `json:"path_comparisons"`
		}
		if err := json.Unmarshal(out["json"], &back); err != nil {
			t.Fatal(err)
		}
		if len(back.Pairs) != 4 || back.Pairs[0].Minutes.NoData != 361 || *back.Pairs[1].Availability != float64(r.Pairs[1].AvailabilityPercent) ||
			len(back.Pairs[0].Breaches) != 2 || !back.Pairs[0].Breaches[0].AWSChanged || len(back.Comparisons) != 1 || back.Comparisons[0].DiffPercent == nil {
			t.Errorf("json round trip: %s", out["json"][:min(len(out["json"]), 2000)])
		}
	})

	t.Run("html in chromium", func(t *testing.T) {
		h := string(out["html"])
		for _, bad := range []string{"<script", "http://", "https://", "@import", "url("} {
			if bad == "http://" || bad == "https://" {
				// The only URL allowed is the Prometheus source and the SVG namespace.
				h2 := strings.ReplaceAll(strings.ReplaceAll(h, r.Prometheus, ""), "http://www.w3.org/2000/svg", "")
				if strings.Contains(h2, bad) {
					t.Errorf("HTML references something external (%s)", bad)
				}
				continue
			}
			if strings.Contains(h, bad) {
				t.Errorf("HTML is not self-contained: has %q", bad)
			}
		}
		dir := t.TempDir()
		file := filepath.Join(dir, "report.html")
		if err := os.WriteFile(file, out["html"], 0o644); err != nil {
			t.Fatal(err)
		}
		dom := chromium(t, dir, "--dump-dom", "file://"+file)
		for sel, want := range map[string]int{
			`<svg class="chart chart-availability"`: 1,
			`<rect class="bar"`:                     4,
			`<svg class="chart chart-rtt"`:          4,
			`class="series series-p95"`:             4,
			`<svg class="chart chart-timeline"`:     1,
			`<rect class="breach"`:                  5,
			`data-cause="unreachable"`:              2,
			`data-cause="latency"`:                  1,
			`<rect class="nodata"`:                  1,
			`<path class="aws-mark"`:                2,
			`<svg class="chart chart-compare"`:      1,
			`<rect class="diff"`:                    31,
			`<tr class="breach-row">`:               5,
		} {
			if got := strings.Count(dom, sel); got != want {
				t.Errorf("rendered DOM has %d × %s, want %d", got, sel, want)
			}
		}
		shot := filepath.Join(dir, "report.png")
		chromium(t, dir, "--screenshot="+shot, "--window-size=1000,1400", "--hide-scrollbars", "file://"+file)
		if os.Getenv("PROBED_SLA_SCREENSHOT") != "" {
			b, _ := os.ReadFile(shot)
			os.WriteFile(os.Getenv("PROBED_SLA_SCREENSHOT"), b, 0o644)
		}
		// The availability bars are painted: the screenshot holds the met
		// green and the breached red.
		colors := pngColors(t, shot)
		for name, c := range map[string][3]uint8{"met green": {0x2e, 0x7d, 0x32}, "breached red": {0xc6, 0x28, 0x28}} {
			if colors[c] < 200 {
				t.Errorf("screenshot has %d pixels of %s, want a painted bar", colors[c], name)
			}
		}
	})
}

// chromium runs headless Chromium once with the flags that keep it off the
// network, in its own process group so nothing outlives the test.
func chromium(t *testing.T, dir string, args ...string) string {
	t.Helper()
	bin := slatest.RequireTool(t, "chromium")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + filepath.Join(dir, "chromium-profile")}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	// Reap any helper left in the group.
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

func pngColors(t *testing.T, file string) map[[3]uint8]int {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("decoding screenshot: %v", err)
	}
	out := map[[3]uint8]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			out[[3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8)}]++
		}
	}
	return out
}
