// Package bench measures the built binaries: how long the master takes to
// spawn its children, to replace a crashed one, how evenly the kernel
// spreads connections over them, whether supervision costs anything on
// the data path, what an idle master costs, what the master costs under
// load in each socket mode, what the exec shim of master socket mode adds
// to a child's start, how long a reload takes and how many requests
// reloads under load fail. Run it with `make bench`;
// every figure is reported with b.ReportMetric, so benchstat can compare
// two runs.
package bench

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/prefork/prefork/internal/testkit"
)

// bin is the absolute path of the directory holding master and child.
var bin string

// TestMain builds bin/master and bin/child without -race (a benchmark of
// race-instrumented binaries measures the detector), or takes them from
// PREFORK_BENCH_BIN. When no benchmark was asked for (`go test ./...`),
// it builds nothing: the package has no tests. In a run that
// runNetnsBench started in a network namespace of its own, it first
// brings loopback up and sets tcp_migrate_req there.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		return m.Run()
	}
	if v := os.Getenv(netnsEnv); v != "" {
		migrate, err := strconv.Atoi(v)
		if err == nil {
			err = testkit.SetupNetns(migrate)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "set up the network namespace:", err)
			return 1
		}
	}
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
