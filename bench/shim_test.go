package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/execshim"
	"github.com/prefork/prefork/pkg/supervisor"
)

// BenchmarkExecShim: what the exec shim of master socket mode adds to a
// child's start. Timed from the fork to the exit of /bin/true, started
// three ways: by itself ("direct"); through the native shim, execshim's
// machine code in a memfd of this process ("native", what the master runs
// on amd64); and through bin/master's own binary ("master", the shim
// elsewhere, which starts the Go runtime and every package initialiser
// the master links). Each iteration is a round of 50 starts of each, in
// turn, so that drift hits all three alike. Reported: the median of every
// start, in ms, per way.
func BenchmarkExecShim(b *testing.B) {
	const perRound = 50
	target := "/bin/true"
	if _, err := os.Stat(target); err != nil {
		b.Skipf("no %s to start", target)
	}
	shim := supervisor.ShimCommand
	env := []string{execshim.ParentEnv + "=" + strconv.Itoa(os.Getpid())}
	ways := []struct {
		name string
		path string
		argv []string
		took []float64
	}{
		{name: "direct", path: target, argv: []string{target}},
		{name: "master", path: filepath.Join(bin, "master"), argv: []string{"master", shim, target}},
	}
	if native, err := execshim.Open(); err != nil {
		b.Logf("no native shim: %v", err)
	} else {
		ways = append(ways, ways[1])
		ways[1].name, ways[1].path, ways[1].argv = "native", native, []string{"master", shim, target}
	}
	for b.Loop() {
		for range perRound {
			for i := range ways {
				w := &ways[i]
				start := time.Now()
				pid, err := syscall.ForkExec(w.path, w.argv, &syscall.ProcAttr{Env: env, Files: []uintptr{0, 1, 2}})
				if err != nil {
					b.Fatalf("%s: %v", w.name, err)
				}
				var ws syscall.WaitStatus
				if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
					b.Fatalf("%s: wait: %v", w.name, err)
				}
				if ws.ExitStatus() != 0 {
					b.Fatalf("%s: %s exited %v", w.name, target, ws)
				}
				w.took = append(w.took, ms(time.Since(start)))
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	for _, w := range ways {
		b.ReportMetric(median(w.took), "ms/start-"+w.name)
		b.Logf("%-6s fork to the exit of %s: median %.3f ms over %d starts", w.name, target, median(w.took), len(w.took))
	}
}
