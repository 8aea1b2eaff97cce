package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// logLine is the part of one JSON log line of the master that the
// benchmarks read.
type logLine struct {
	Msg        string    `json:"msg"`
	Time       time.Time `json:"time"` // the master's clock when it logged
	Slot       int       `json:"slot"`
	Generation int       `json:"generation"`
	PID        int       `json:"pid"`
	AfterMS    *float64  `json:"after_ms"` // "child ready": spawn to READY=1
	InMS       *float64  `json:"in_ms"`    // "restarting slot": the backoff delay
	TookMS     *float64  `json:"took_ms"`  // "reload succeeded": reload start to the old generation told to drain
}

// after returns the "after_ms" field of a "child ready" line.
func (l logLine) after(tb testing.TB) time.Duration {
	tb.Helper()
	if l.AfterMS == nil {
		tb.Fatalf("%q line of pid %d has no after_ms", l.Msg, l.PID)
	}
	return time.Duration(*l.AfterMS * float64(time.Millisecond))
}

// master is a running bin/master with JSON logs on stderr.
type master struct {
	tb      testing.TB
	cmd     *exec.Cmd
	addr    string    // the --listen address
	control string    // the --control socket
	start   time.Time // just before the fork/exec of the master

	exited chan struct{} // closed once the master process was waited for
	logEOF chan struct{} // closed once every writer of the log pipe is gone

	mu     sync.Mutex
	logs   []logLine
	raw    bytes.Buffer // the whole stderr, shown when the benchmark fails
	pids   []int        // every child pid logged as started
	change chan struct{}
	// leftovers, when set, names what else the cleanup kills once the
	// master and its children are: a forking server's workers.
	leftovers func(*master) []int
}

// startMaster runs `master run --listen ADDR --log-format json --workers N
// ARGS...` on a free loopback port. When the benchmark ends, it and every
// child it logged are killed if still alive.
func startMaster(tb testing.TB, workers int, args ...string) *master {
	tb.Helper()
	return startMasterOn(tb, testkit.FreeAddr(tb), workers, args...)
}

// startMasterOn is startMaster on an address chosen beforehand.
func startMasterOn(tb testing.TB, addr string, workers int, args ...string) *master {
	tb.Helper()
	full := []string{"run", "--listen", addr, "--log-format", "json", "--workers", strconv.Itoa(workers)}
	// The control socket's default path is one per user: give each master
	// its own, so that benchmarks never collide with each other or with
	// someone's `make run`.
	control := filepath.Join(tb.TempDir(), "ctl.sock")
	full = append(full, "--control", control, "--metrics", "") // the default metrics port is one per machine
	full = append(full, args...)
	m := &master{tb: tb, addr: addr, control: control, exited: make(chan struct{}),
		logEOF: make(chan struct{}), change: make(chan struct{})}
	m.cmd = exec.Command(filepath.Join(bin, "master"), full...)
	m.cmd.Env = cleanEnv()
	// No process group of its own: a Ctrl-C of `make bench` reaches the
	// master, which then drains its children. If this process dies the
	// master is killed (and its children drain by their own parent-death
	// signal).
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A pipe of our own rather than StderrPipe: the children inherit the
	// master's stderr, so EOF comes when they are gone too, which must not
	// hold up Wait.
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	m.cmd.Stderr = w
	m.start = time.Now()
	err = m.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		tb.Fatal(err)
	}
	go m.readLogs(r)
	go func() { m.cmd.Wait(); close(m.exited) }()
	tb.Cleanup(m.cleanup)
	return m
}

func (m *master) readLogs(r *os.File) {
	defer close(m.logEOF)
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Bytes()
		var l logLine
		ok := len(line) > 0 && line[0] == '{' && json.Unmarshal(line, &l) == nil
		m.mu.Lock()
		m.raw.Write(line)
		m.raw.WriteByte('\n')
		if ok { // the children's own text lines share the pipe
			m.logs = append(m.logs, l)
			if l.Msg == "child started" {
				m.pids = append(m.pids, l.PID)
			}
			close(m.change)
			m.change = make(chan struct{})
		}
		m.mu.Unlock()
	}
}

// waitLog waits until match accepts n log lines and returns them, in log
// order.
func (m *master) waitLog(timeout time.Duration, n int, what string, match func(logLine) bool) []logLine {
	m.tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		m.mu.Lock()
		change := m.change
		m.mu.Unlock()
		got := m.matching(match)
		if len(got) >= n {
			return got
		}
		select {
		case <-change:
		case <-deadline.C:
			m.tb.Fatalf("waited %v for %d log lines %s, saw %d", timeout, n, what, len(got))
		case <-m.exited:
			m.tb.Fatalf("master exited (%v) while waiting for %d log lines %s, saw %d",
				m.cmd.ProcessState, n, what, len(got))
		}
	}
}

// matching returns the log lines so far that match accepts, in log order.
func (m *master) matching(match func(logLine) bool) []logLine {
	m.mu.Lock()
	defer m.mu.Unlock()
	var got []logLine
	for _, l := range m.logs {
		if match(l) {
			got = append(got, l)
		}
	}
	return got
}

// waitReady waits for n "child ready" lines and returns them.
func (m *master) waitReady(timeout time.Duration, n int) []logLine {
	m.tb.Helper()
	return m.waitLog(timeout, n, `"child ready"`, func(l logLine) bool { return l.Msg == "child ready" })
}

// readyBySlot returns the pid of each slot's latest ready child.
func readyBySlot(lines []logLine) map[int]int {
	bySlot := map[int]int{}
	for _, l := range lines {
		bySlot[l.Slot] = l.PID
	}
	return bySlot
}

// stop sends SIGTERM and waits for the master to exit 0.
func (m *master) stop() {
	m.tb.Helper()
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		m.tb.Fatalf("SIGTERM to the master: %v", err)
	}
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		m.tb.Fatalf("master still running 30 s after SIGTERM")
	}
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		m.tb.Errorf("master exit code %d after SIGTERM, want 0", code)
	}
}

// cleanup kills the master if it still runs, then every child it logged
// that is still alive, and shows the log if the benchmark failed.
func (m *master) cleanup() {
	select {
	case <-m.exited:
	default:
		m.cmd.Process.Kill()
		select {
		case <-m.exited:
		case <-time.After(10 * time.Second):
			m.tb.Errorf("master %d not gone 10 s after SIGKILL", m.cmd.Process.Pid)
		}
	}
	m.mu.Lock()
	pids := slices.Clone(m.pids)
	m.mu.Unlock()
	for _, pid := range pids {
		killIfOurs(pid, m.addr)
	}
	if m.leftovers != nil {
		for _, pid := range m.leftovers(m) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case <-m.logEOF:
	case <-time.After(10 * time.Second):
		m.tb.Errorf("the master's stderr is still open 10 s after every process was killed")
	}
	if m.tb.Failed() {
		m.mu.Lock()
		m.tb.Logf("master log:\n%s", m.raw.String())
		m.mu.Unlock()
	}
}

// startChild execs bin/child by hand with PREFORK_LISTEN=addr and the
// extra environment given; its output is discarded. It is SIGKILLed when
// the benchmark ends if still alive.
func startChild(tb testing.TB, addr string, env ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(filepath.Join(bin, "child"))
	cmd.Env = append(cleanEnv(), append([]string{"PREFORK_LISTEN=" + addr}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	return cmd
}

// stopChild sends SIGTERM to a child started by startChild and waits (up to
// 10 s) until it is gone.
func stopChild(tb testing.TB, cmd *exec.Cmd) {
	tb.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for testkit.Alive(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			tb.Fatalf("child %d still alive 10 s after SIGTERM", cmd.Process.Pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// cleanEnv is this process's environment without what the master or a
// child would read from it.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PREFORK_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") ||
			strings.HasPrefix(kv, "LISTEN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// killIfOurs SIGKILLs pid if it is alive and is still a bin/child serving
// addr: a pid logged long ago may have been reused by another process.
func killIfOurs(pid int, addr string) {
	if !testkit.Alive(pid) {
		return
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if strings.TrimSuffix(exe, " (deleted)") != filepath.Join(bin, "child") ||
		!slices.Contains(strings.Split(string(environ), "\x00"), "PREFORK_LISTEN="+addr) {
		return
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ms converts d to float milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
