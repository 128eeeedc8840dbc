package netlab

import (
	"testing"

	"github.com/probed/probed/internal/testutil"
)

// StartT starts a lab for a test and closes it when the test ends. Without
// root it skips the test, or fails it under CI=true (testutil.RequireRoot).
func StartT(t testing.TB, topo Topology) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	lab, err := Start(t.Context(), topo)
	if err != nil {
		t.Fatalf("starting lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("closing lab: %v", err)
		}
	})
	return lab
}
