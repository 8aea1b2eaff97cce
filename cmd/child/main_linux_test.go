package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// runChildEnv makes the test binary run main, as the reference child.
const runChildEnv = "PREFORK_CMD_CHILD_TEST_RUN"

func TestMain(m *testing.M) {
	if os.Getenv(runChildEnv) != "" {
		main() // os.Args is the binary alone: the options come from env
		os.Exit(0)
	}
	goleak.VerifyTestMain(m) // exits; fails on a goroutine left running
}

// Timings for WATCHDOG_USEC=100000: pings every 50ms, so six periods
// without one mean the pings stopped.
const (
	quietWindow = 300 * time.Millisecond
	waitTimeout = 10 * time.Second
)

// servingLine is the log line that gives the child's address.
var servingLine = regexp.MustCompile(`msg="child serving" addr=(\S+)`)

// runningChild is main running in a re-executed test binary, with a
// notify socket of the test's own.
type runningChild struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
	stderr <-chan string
	exited chan error
	addr   string
}

// startChild runs the reference child with WATCHDOG_USEC=100000, env,
// and a listener on a free port; cleanup kills it.
func startChild(t *testing.T, env ...string) *runningChild {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { notify.Close() })
	c := &runningChild{notify: notify, exited: make(chan error, 1)}
	c.cmd = exec.Command(os.Args[0])
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WATCHDOG_") && !strings.HasPrefix(kv, envHangAfter+"=") &&
			!strings.HasPrefix(kv, envCrashAfter+"=") && !strings.HasPrefix(kv, envBallast+"=") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.cmd.Env = append(c.cmd.Env, runChildEnv+"=1", "GORACE=atexit_sleep_ms=0",
		"NOTIFY_SOCKET="+path, "WATCHDOG_USEC=100000", "PREFORK_LISTEN=127.0.0.1:0")
	c.cmd.Env = append(c.cmd.Env, env...)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	c.stderr = lines
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	go func() { c.exited <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
	})
	m := servingLine.FindStringSubmatch(c.waitLog(t, "child serving"))
	if m == nil {
		t.Fatal("no address in the serving line")
	}
	c.addr = m[1]
	return c
}

// waitLog returns the first stderr line that contains s.
func (c *runningChild) waitLog(t *testing.T, s string) string {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case line, ok := <-c.stderr:
			if !ok {
				t.Fatalf("stderr closed before a line with %q", s)
			}
			if strings.Contains(line, s) {
				return line
			}
		case <-deadline:
			t.Fatalf("no stderr line with %q", s)
		}
	}
}

// read returns the next datagram, or ok false when none came within d.
func (c *runningChild) read(t *testing.T, d time.Duration) (msg string, ok bool) {
	t.Helper()
	if err := c.notify.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, err := c.notify.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), true
}

// expect reads the next datagram, which must be msg.
func (c *runningChild) expect(t *testing.T, msg string) {
	t.Helper()
	got, ok := c.read(t, waitTimeout)
	if !ok || got != msg {
		t.Fatalf("got %q (ok %v), want %s", got, ok, msg)
	}
}

// alive fails the test if the child has exited or is a zombie.
func (c *runningChild) alive(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.exited:
		c.exited <- err // for the cleanup
		t.Fatalf("child exited: %v", err)
	default:
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(status), "\nState:\tZ") {
		t.Fatal("child is a zombie")
	}
}

// By default the reference child serves and pings on.
func TestChildPings(t *testing.T) {
	c := startChild(t)
	c.expect(t, "READY=1")
	client := &http.Client{Timeout: waitTimeout}
	resp, err := client.Get("http://" + c.addr + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	for range 10 { // about half a second of pings
		c.expect(t, "WATCHDOG=1")
	}
}

// With CHILD_HANG_AFTER the child pings, then stops for good while it
// stays alive, and its requests hang: what the master's watchdog is for.
func TestChildHangs(t *testing.T) {
	c := startChild(t, envHangAfter+"=400ms")
	c.expect(t, "READY=1")
	pings := 0
	for {
		msg, ok := c.read(t, quietWindow)
		if !ok {
			break
		}
		if msg != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", msg)
		}
		if pings++; pings > 1000 {
			t.Fatal("pings do not stop")
		}
	}
	if pings < 2 {
		t.Errorf("%d pings before the hang, want several", pings)
	}
	c.waitLog(t, "child hangs now")
	c.waitLog(t, "watchdog pings stop")
	c.alive(t)
	client := &http.Client{Timeout: quietWindow}
	if resp, err := client.Get("http://" + c.addr + "/"); err == nil {
		resp.Body.Close()
		t.Fatalf("answered %d during the hang", resp.StatusCode)
	}
	if msg, ok := c.read(t, quietWindow); ok {
		t.Fatalf("got %q after the pings stopped", msg)
	}
	c.alive(t)
}

// With CHILD_CRASH_AFTER the child serves, then exits with code 1 and a
// line on stderr, no sooner than the delay after READY: a build that
// passes the readiness gate and crashes under traffic.
func TestChildCrashes(t *testing.T) {
	const after = 300 * time.Millisecond
	// A bound the child's timer cannot precede: it starts after READY is
	// sent, and the test may read READY later than that under load.
	started := time.Now()
	c := startChild(t, envCrashAfter+"="+after.String())
	c.expect(t, "READY=1")
	client := &http.Client{Timeout: waitTimeout}
	resp, err := client.Get("http://" + c.addr + "/")
	if err != nil {
		t.Fatalf("request before the crash: %v", err)
	}
	resp.Body.Close()
	c.waitLog(t, "child crashes now")
	var exit error
	select {
	case exit = <-c.exited:
		c.exited <- exit // for the cleanup
	case <-time.After(waitTimeout):
		t.Fatal("the child did not exit after its crash line")
	}
	if took := time.Since(started); took < after {
		t.Errorf("exited %v after the start, want no sooner than %v", took, after)
	}
	var ee *exec.ExitError
	if !errors.As(exit, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("child exit %v, want code 1", exit)
	}
}

// With CHILD_BALLAST the child is ready with at least that much resident.
func TestChildBallast(t *testing.T) {
	const size = 64 << 20
	c := startChild(t, envBallast+"=64MiB")
	c.expect(t, "READY=1")
	rss, err := residentBytes(c.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss < size {
		t.Errorf("VmRSS %d MiB at READY, want at least %d MiB", rss>>20, size>>20)
	}
	c.alive(t)
}

// residentBytes reads VmRSS from /proc/PID/status.
func residentBytes(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// listenerAddr waits for the "child serving" line of listener name and
// returns its address.
func (c *runningChild) listenerAddr(t *testing.T, name string) string {
	t.Helper()
	m := servingLine.FindStringSubmatch(c.waitLog(t, "listener="+name+" "))
	if m == nil {
		t.Fatalf("no address in the serving line of %s", name)
	}
	return m[1]
}

// askUDP sends one datagram to addr and returns the answer.
func askUDP(t *testing.T, addr string) []byte {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("who?")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no UDP answer from %s: %v", addr, err)
	}
	return buf[:n]
}

// stop sends SIGTERM and waits for exit 0 and the drained line.
func (c *runningChild) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.waitLog(t, "child drained")
	select {
	case err := <-c.exited:
		c.exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("child exit %v after SIGTERM, want 0", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the child did not exit after SIGTERM")
	}
}

// A child with an HTTP and a UDP listener answers a datagram with the
// body of GET /whoami, sent back to the sender, and drains both on
// SIGTERM.
func TestChildAnswersUDP(t *testing.T) {
	c := startChild(t, "PREFORK_LISTENERS=web,dns", "PREFORK_LISTEN_WEB=127.0.0.1:0",
		"PREFORK_LISTEN_DNS=udp://127.0.0.1:0", "PREFORK_SLOT=2", "PREFORK_GENERATION=5")
	dnsAddr := c.listenerAddr(t, "dns")
	c.expect(t, "READY=1") // only once both are served
	answer := askUDP(t, dnsAddr)
	var me struct{ Slot, Generation, PID int }
	if err := json.Unmarshal(answer, &me); err != nil {
		t.Fatalf("UDP answer %q: %v", answer, err)
	}
	if me.Slot != 2 || me.Generation != 5 || me.PID != c.cmd.Process.Pid {
		t.Errorf("UDP answer %+v, want slot 2, generation 5, pid %d", me, c.cmd.Process.Pid)
	}
	client := &http.Client{Timeout: waitTimeout}
	resp, err := client.Get("http://" + c.addr + "/whoami")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != string(answer) {
		t.Errorf("GET /whoami %q, UDP answer %q: want the same", body, answer)
	}
	c.stop(t)
}

// A child whose only listener is UDP serves and drains as well.
func TestChildUDPOnly(t *testing.T) {
	c := startChild(t, "PREFORK_LISTEN=udp://127.0.0.1:0")
	c.expect(t, "READY=1")
	if answer := askUDP(t, c.addr); !strings.Contains(string(answer), fmt.Sprintf(`"pid":%d`, c.cmd.Process.Pid)) {
		t.Errorf("UDP answer %q, want this child's pid", answer)
	}
	c.stop(t)
}
