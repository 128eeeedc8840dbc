package config

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/probed/probed/config/configtest"
)

// Every broken file of the shared table is refused with its first error at
// the exact line, column and field, in the FILE:LINE:COL: field: message
// form; the whole report stays short, however large or repetitive the file.
func TestBrokenMeshFiles(t *testing.T) {
	cases := configtest.Broken()
	if len(cases) < 60 {
		t.Fatalf("only %d broken files; the table must hold at least 60", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			_, err := Parse(tc.Data, "mesh.yaml")
			es, ok := err.(Errors)
			if !ok || len(es) == 0 {
				t.Fatalf("want an error list, got %T %v", err, err)
			}
			f := es[0]
			if f.File != "mesh.yaml" || f.Line != tc.Line || f.Col != tc.Col || f.Field != tc.Field || !strings.Contains(f.Msg, tc.Msg) {
				t.Fatalf("first error:\n  %s\nwant:\n  %s…%s…", f, tc.Prefix("mesh.yaml"), tc.Msg)
			}
			out := err.Error()
			if !strings.HasPrefix(out, tc.Prefix("mesh.yaml")) {
				t.Fatalf("report %q does not start with %q", firstLine(out), tc.Prefix("mesh.yaml"))
			}
			lines := strings.Split(out, "\n")
			if len(lines) > maxShownErrors+1 {
				t.Fatalf("%d lines reported; at most %d errors and a count of the rest", len(lines), maxShownErrors)
			}
			for _, l := range lines {
				if len(l) > 2*maxMessage {
					t.Fatalf("a %d-byte error line: values must be shortened: %.200s…", len(l), l)
				}
			}
		})
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// The files that cost the most under the expansion limit stay cheap: the
// bytes allocated by Parse (a deterministic measure, unlike time) are
// bounded, where an uncapped 58 KB bomb took gigabytes.
func TestAliasFilesStayCheap(t *testing.T) {
	const maxAlloc = 64 << 20
	for name, data := range configtest.AliasFiles() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := Parse(data, "m.yaml")
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s (%d KB): %.1f MiB allocated; %v", name, len(data)>>10, float64(alloc)/(1<<20), firstLine(fmt.Sprint(err)))
		if valid := strings.HasSuffix(name, "(valid)"); valid != (err == nil) {
			t.Errorf("%s: valid %v, got error %v", name, valid, err)
		}
		if alloc > maxAlloc {
			t.Errorf("%s: Parse allocated %d MiB; at most %d", name, alloc>>20, maxAlloc>>20)
		}
	}
}
