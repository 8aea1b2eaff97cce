package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
	"golang.org/x/sys/unix"
)

// noticeMsg is the message of the line the master writes where its log
// lost lines (pkg/logwriter.NoticeMessage).
const noticeMsg = "log lines dropped: the log output was blocked or failing"

// A master whose stderr nobody reads, shared with a process that floods
// it (--child-output inherit, the default), still restarts a killed child
// at once: its log lines wait in a bounded buffer or are dropped, and
// what was dropped is counted in prefork_log_dropped_total and said in
// the log once it is read again.
//
// Under --child-output prefix the children's lines reach the same stderr
// through copying goroutines, which block; the loop must not.
func TestBlockedStderrDelaysNoRestart(t *testing.T) {
	t.Parallel()
	for _, output := range []string{"inherit", "prefix"} {
		t.Run(output, func(t *testing.T) {
			t.Parallel()
			testBlockedStderr(t, "--child-output", output)
		})
	}
}

func testBlockedStderr(t *testing.T, args ...string) {
	metricsAddr := testkit.FreeAddr(t)
	m, stderr := startMasterGated(t, append([]string{"--workers", "1", "--metrics", metricsAddr}, args...)...)
	old := m.waitReady(1)[0]

	stderr.pause()
	startFlooder(t, stderr)
	stderr.waitFull(t, 10*time.Second)

	start := time.Now()
	if err := killPID(old); err != nil {
		t.Fatal(err)
	}
	// Generous, for a loaded machine (the master's log has the precise
	// figure): a loop blocked on its log never restarts the child while
	// the pipe stays full.
	var replacement int
	eventually(t, 15*time.Second, "no replacement of the killed child started with stderr blocked", func() bool {
		for _, c := range childInfo(scrapeWithin(metricsAddr, 5*time.Second)) {
			if c.slot == 0 && c.pid != old {
				replacement = c.pid
				return true
			}
		}
		return false
	})
	seen := time.Since(start)

	// More lines than the buffer holds: each SIGTTOU at one worker logs
	// the signal and the refused scale, from the signal goroutine.
	stopStorm := make(chan struct{})
	storm := make(chan struct{})
	go func() {
		defer close(storm)
		for {
			select {
			case <-stopStorm:
				return
			default:
				syscall.Kill(m.cmd.Process.Pid, syscall.SIGTTOU)
				// About as fast as the master handles them; more
				// would be merged with those pending.
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var dropped uint64
	eventually(t, 60*time.Second, "no log line dropped after a storm of SIGTTOU", func() bool {
		dropped = logDropped(scrapeWithin(metricsAddr, 5*time.Second))
		return dropped > 0
	})
	close(stopStorm)
	<-storm
	stderr.stopFlooder()
	stderr.resume()
	// Once read again, the log says what it lost: its notices count what
	// the metric counts.
	eventually(t, 30*time.Second, "the dropped lines were not announced", func() bool {
		total := logDropped(scrapeWithin(metricsAddr, 5*time.Second))
		var said uint64
		for _, l := range m.lines(noticeMsg) {
			said += uint64(l.int("lines"))
		}
		return total >= dropped && said == total
	})
	// The master's own figure, from its log: from the exit it saw to the
	// replacement it started.
	exited := m.waitLog(10*time.Second, 1, "of the killed child's exit", func(l logLine) bool {
		return l.msg() == "child exited unexpectedly" && l.int("pid") == old
	})[0]
	started := m.waitLog(10*time.Second, 1, "of the replacement's start", func(l logLine) bool {
		return l.msg() == "child started" && l.int("pid") == replacement
	})[0]
	took := logTime(t, started).Sub(logTime(t, exited))
	t.Logf("kill -9 to replacement with stderr blocked: %v in the master's log, %v seen from outside", took, seen.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the replacement started %v after the exit", took)
	}
	eventually(t, 30*time.Second, "the replacement never became ready", func() bool {
		for _, c := range childInfo(scrapeWithin(metricsAddr, 5*time.Second)) {
			if c.slot == 0 && c.pid == replacement && c.state == "ready" {
				return true
			}
		}
		return false
	})
}

// A master whose stderr is full and unread still exits when told to,
// giving up on its last log lines after a bounded wait.
func TestBlockedStderrExit(t *testing.T) {
	t.Parallel()
	m, stderr := startMasterGated(t, "--workers", "1")
	m.waitReady(1)
	stderr.pause()
	startFlooder(t, stderr)
	stderr.waitFull(t, 10*time.Second)
	start := time.Now()
	m.signal(syscall.SIGQUIT) // fast: children blocked on stderr need no drain
	eventually(t, 15*time.Second, "the master did not exit with its stderr blocked", func() bool {
		return !testkit.Alive(m.cmd.Process.Pid)
	})
	t.Logf("exited %v after SIGQUIT, stderr blocked", time.Since(start).Round(time.Millisecond))
	stderr.stopFlooder()
	stderr.resume()
	if code := m.wait(20 * time.Second); code != 0 {
		t.Errorf("master exit %d, want 0", code)
	}
}

// gatedStderr is the master's stderr: a pipe the test reads, and can stop
// reading.
type gatedStderr struct {
	r, w    *os.File
	mu      sync.Mutex
	open    chan struct{} // closed while reading is allowed
	flooder *exec.Cmd
}

func (g *gatedStderr) Read(p []byte) (int, error) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	<-open
	return g.r.Read(p)
}

func (g *gatedStderr) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.open = make(chan struct{})
}

func (g *gatedStderr) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

// waitFull waits until the pipe is full: every page of it in use, so
// that a write of a line blocks.
func (g *gatedStderr) waitFull(t *testing.T, timeout time.Duration) {
	t.Helper()
	raw, err := g.r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the master's stderr pipe never filled", func() bool {
		var queued, size int
		raw.Control(func(fd uintptr) {
			queued, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
			size, _ = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0)
		})
		return size > 0 && queued > size-os.Getpagesize()
	})
}

// startMasterGated is startMaster with the master's stderr a pipe that
// the test can stop reading; it is read (and the JSON lines parsed) until
// pause.
func startMasterGated(t *testing.T, args ...string) (*master, *gatedStderr) {
	t.Helper()
	control := filepath.Join(t.TempDir(), "ctl.sock")
	full := append([]string{"run", "--log-format", "json", "--control", control,
		"--listen", testkit.FreeAddr(t)}, args...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedStderr{r: r, w: w, open: make(chan struct{})}
	close(g.open)
	m := &master{t: t, control: control, done: make(chan struct{}), pids: map[int]bool{}, change: make(chan struct{})}
	m.cmd = exec.Command(filepath.Join(bin, "master"), full...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	m.cmd.Stdout = io.Discard
	m.cmd.Stderr = w
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go m.readLogs(g)
	t.Cleanup(func() { r.Close() })
	t.Cleanup(m.cleanup)
	// Before m.cleanup waits for the end of the pipe: read it again, and
	// let go of the test's own write end and the flooder's.
	t.Cleanup(func() {
		g.stopFlooder()
		w.Close()
		g.resume()
	})
	return m, g
}

// startFlooder starts a process that writes lines to the master's stderr
// as fast as it can, as a child that shares it would.
func startFlooder(t *testing.T, g *gatedStderr) {
	t.Helper()
	g.flooder = exec.Command("sh", "-c", "while :; do echo flood flood flood flood; done >&2")
	g.flooder.Stderr = g.w
	g.flooder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := g.flooder.Start(); err != nil {
		t.Fatal(err)
	}
	// The master and the flooder have theirs: the pipe ends with them.
	g.w.Close()
}

// stopFlooder kills the flooder, by pid, and reaps it.
func (g *gatedStderr) stopFlooder() {
	if g.flooder == nil {
		return
	}
	g.flooder.Process.Kill()
	g.flooder.Wait()
	g.flooder = nil
}

// scrapeWithin returns GET /metrics, or "" if it fails or takes longer
// than timeout (a master whose loop is stuck does not answer).
func scrapeWithin(addr string, timeout time.Duration) string {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(body)
}

var (
	childInfoLine  = regexp.MustCompile(`(?m)^prefork_child_info\{generation="\d+",pid="(\d+)",slot="(\d+)",state="(\w+)"\} 1$`)
	logDroppedLine = regexp.MustCompile(`(?m)^prefork_log_dropped_total (\d+)$`)
)

type liveChild struct {
	slot, pid int
	state     string
}

// childInfo returns the live children of prefork_child_info.
func childInfo(text string) []liveChild {
	var got []liveChild
	for _, m := range childInfoLine.FindAllStringSubmatch(text, -1) {
		pid, _ := strconv.Atoi(m[1])
		slot, _ := strconv.Atoi(m[2])
		got = append(got, liveChild{slot: slot, pid: pid, state: m[3]})
	}
	return got
}

// logDropped returns prefork_log_dropped_total, 0 if absent.
func logDropped(text string) uint64 {
	m := logDroppedLine.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}
