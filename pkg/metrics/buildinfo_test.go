package metrics

import (
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// prefork_build_info for a fixed version, against testdata, and linted.
func TestBuildInfoFixture(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewBuildInfo("v1.2.0-3-gabcdef0", "go1.26.8"))
	f, err := os.Open("testdata/buildinfo.prom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
