package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// netnsEnv, when set (to the tcp_migrate_req value wanted), tells TestMain
// that this run is the one runNetnsBench started in a new network
// namespace; resultEnv names the file its benchmark writes its result to.
const (
	netnsEnv  = "PREFORK_BENCH_NETNS"
	resultEnv = "PREFORK_BENCH_RESULT"
)

// inNetns reports whether this process is the run in a network namespace
// of its own.
func inNetns() bool { return os.Getenv(netnsEnv) != "" }

// runNetnsBench runs the calling sub-benchmark (one level below a
// top-level benchmark) again, once (-test.benchtime=1x), in a test binary
// of its own in a new network namespace with loopback up and
// net.ipv4.tcp_migrate_req set to migrate, relays its output with b.Log,
// and decodes into result the JSON the run wrote with writeNetnsResult.
// The main namespace's sysctls are never touched. Where a namespace
// cannot be made the benchmark is skipped with the reason.
func runNetnsBench(b *testing.B, migrate int, timeout time.Duration, result any) {
	b.Helper()
	top, sub, ok := strings.Cut(b.Name(), "/")
	if !ok || strings.Contains(sub, "/") {
		b.Fatalf("runNetnsBench needs a sub-benchmark one level down, not %q", b.Name())
	}
	out := b.TempDir() + "/result.json"
	// The run's own -test.timeout ends it first; the context, a minute
	// later, only in case it hangs.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$",
		"-test.bench=^"+regexp.QuoteMeta(top)+"$/^"+regexp.QuoteMeta(sub)+"$",
		"-test.benchtime=1x", "-test.count=1", "-test.timeout="+timeout.String())
	cmd.Env = append(os.Environ(), netnsEnv+"="+strconv.Itoa(migrate), "PREFORK_BENCH_BIN="+bin, resultEnv+"="+out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	output, err := cmd.CombinedOutput()
	if err != nil && cmd.ProcessState == nil {
		b.Skipf("cannot run in a network namespace of its own (needs root or CAP_SYS_ADMIN): %v", err)
	}
	// Its log lines, without its own benchmark result and headers, which
	// would read as a second result of this benchmark.
	var relay []string
	for line := range strings.Lines(string(output)) {
		t := strings.TrimSpace(line)
		if t == "" || t == "PASS" || strings.HasPrefix(line, "Benchmark") || strings.HasPrefix(line, "--- BENCH") ||
			strings.HasPrefix(line, "ok ") || strings.HasPrefix(line, "ok\t") {
			continue
		}
		if k, _, ok := strings.Cut(line, ":"); ok && slices.Contains([]string{"goos", "goarch", "pkg", "cpu"}, k) {
			continue
		}
		relay = append(relay, strings.TrimRight(line, "\n"))
	}
	if len(relay) > 0 {
		b.Logf("in a network namespace of its own, tcp_migrate_req=%d:\n%s", migrate, strings.Join(relay, "\n"))
	}
	if err != nil {
		b.Fatalf("the run in the network namespace failed: %v", err)
	}
	if strings.Contains(string(output), "--- SKIP") {
		b.Skip("skipped in the network namespace")
	}
	data, err := os.ReadFile(out)
	if err != nil {
		b.Fatalf("no result from the run in the network namespace: %v", err)
	}
	if err := json.Unmarshal(data, result); err != nil {
		b.Fatalf("result from the run in the network namespace: %v: %q", err, data)
	}
}

// writeNetnsResult hands result to the runNetnsBench that started this
// run.
func writeNetnsResult(b *testing.B, result any) {
	b.Helper()
	data, err := json.Marshal(result)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv(resultEnv), data, 0o644); err != nil {
		b.Fatal(err)
	}
}
