// Package bench measures the built binaries: how long the master takes to
// spawn its children, to replace a crashed one, how evenly the kernel
// spreads connections over them, whether supervision costs anything on
// the data path, and what an idle master costs. Run it with `make bench`;
// every figure is reported with b.ReportMetric, so benchstat can compare
// two runs.
package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin is the absolute path of the directory holding master and child.
var bin string

// TestMain builds bin/master and bin/child without -race (a benchmark of
// race-instrumented binaries measures the detector), or takes them from
// PREFORK_BENCH_BIN.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin = os.Getenv("PREFORK_BENCH_BIN")
	if bin == "" {
		dir, err := os.MkdirTemp("", "prefork-bench-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"github.com/prefork/prefork/cmd/master", "github.com/prefork/prefork/cmd/child")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			return 1
		}
		bin = dir
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bin = abs
	return m.Run()
}
