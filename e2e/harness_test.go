package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// master is a running bin/master under test.
type master struct {
	t       *testing.T
	cmd     *exec.Cmd
	addr    string // the --listen address
	control string // the --control socket
	done    chan struct{}
	err     error // Wait's result, once done is closed

	mu   sync.Mutex
	logs []logLine
	raw  bytes.Buffer
	pids map[int]bool // every child pid the master logged as started
	// nsPIDs is set when the master runs in a pid namespace of its own: the
	// pids it logs are not this test's to signal.
	nsPIDs bool
	change chan struct{}
}

// logLine is one JSON log line of the master.
type logLine map[string]any

func (l logLine) msg() string { s, _ := l["msg"].(string); return s }
func (l logLine) int(key string) int {
	switch v := l[key].(type) {
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return -1
}
func (l logLine) str(key string) string { s, _ := l[key].(string); return s }

// startMaster runs bin/master run with JSON logs on a free port, and makes
// sure that it and every child it started are gone when the test ends.
func startMaster(t *testing.T, args ...string) *master {
	t.Helper()
	addr := testkit.FreeAddr(t)
	return startMasterOn(t, addr, nil, args...)
}

// startMasterOn is startMaster with the address and extra environment
// given.
func startMasterOn(t *testing.T, addr string, env []string, args ...string) *master {
	t.Helper()
	return startMasterSys(t, addr, env, &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}, args...)
}

// startMasterSys is startMasterOn with the process attributes given. Give
// them Pdeathsig: if the test binary dies (a timeout panic, say) before
// its cleanups run, the master must die with it, and its children with it.
func startMasterSys(t *testing.T, addr string, env []string, sys *syscall.SysProcAttr, args ...string) *master {
	t.Helper()
	return startMasterBin(t, filepath.Join(bin, "master"), addr, env, sys, args...)
}

// startMasterBin is startMasterSys with the master's binary given.
func startMasterBin(t *testing.T, binary, addr string, env []string, sys *syscall.SysProcAttr, args ...string) *master {
	t.Helper()
	return startMasterOut(t, binary, addr, env, sys, io.Discard, args...)
}

// startMasterOut is startMasterBin with the master's stdout given.
func startMasterOut(t *testing.T, binary, addr string, env []string, sys *syscall.SysProcAttr, stdout io.Writer, args ...string) *master {
	t.Helper()
	control := filepath.Join(t.TempDir(), "ctl.sock")
	// No metrics endpoint unless a test asks for one: the default port
	// is one per machine.
	full := []string{"run", "--log-format", "json", "--control", control, "--metrics", ""}
	if addr != "" { // "": the address comes from the config file
		full = append(full, "--listen", addr)
	}
	full = append(full, args...)
	m := &master{t: t, addr: addr, control: control, done: make(chan struct{}), pids: map[int]bool{}, change: make(chan struct{})}
	m.cmd = exec.Command(binary, full...)
	m.cmd.Env = append(os.Environ(), env...)
	// A process group of its own, so a test can send a terminal's Ctrl-C.
	m.cmd.SysProcAttr = sys
	m.nsPIDs = sys != nil && sys.Cloneflags&syscall.CLONE_NEWPID != 0
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdout = stdout
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go m.readLogs(stderr)
	t.Cleanup(m.cleanup)
	return m
}

// jsonTail returns the master's JSON record in line: the children share
// the master's stderr (--child-output inherit), and a child's line cut
// short (Python writes a traceback in pieces) puts the master's next
// record after it on the same line.
func jsonTail(line []byte) []byte {
	if i := bytes.LastIndex(line, []byte(`{"time":`)); i > 0 {
		return line[i:]
	}
	return line
}

func (m *master) readLogs(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var l logLine
		line := sc.Bytes()
		m.mu.Lock()
		m.raw.Write(line)
		m.raw.WriteByte('\n')
		if json.Unmarshal(jsonTail(line), &l) == nil {
			m.logs = append(m.logs, l)
			if l.msg() == "child started" {
				m.pids[l.int("pid")] = true
			}
		}
		close(m.change)
		m.change = make(chan struct{})
		m.mu.Unlock()
	}
	m.err = m.cmd.Wait()
	close(m.done)
}

// cleanup kills what the test left running: the master, then every child
// it started, by pid.
func (m *master) cleanup() {
	select {
	case <-m.done:
	default:
		m.cmd.Process.Kill()
		<-m.done
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for pid := range m.pids {
		// Killing the init of a pid namespace killed all of it already.
		if !m.nsPIDs && testkit.Alive(pid) && m.oursStill(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if m.t.Failed() {
		m.t.Logf("master log:\n%s", m.raw.String())
	}
}

// oursStill reports whether pid, a child the master logged, is still
// that child: where the master runs its children in cgroups, a pid that
// left them has been reused by another process since. m.mu is held.
func (m *master) oursStill(pid int) bool {
	cgroups := false
	for _, l := range m.logs {
		if l.msg() == "each child runs in a cgroup of its own" {
			cgroups = true
		}
	}
	if !cgroups {
		return true
	}
	ours, _ := testkit.InChildCgroupOf(pid, m.cmd.Process.Pid)
	return ours
}

// waitLog waits until match accepts n log lines, and returns them.
func (m *master) waitLog(timeout time.Duration, n int, what string, match func(logLine) bool) []logLine {
	m.t.Helper()
	deadline := time.After(timeout)
	for {
		m.mu.Lock()
		var got []logLine
		for _, l := range m.logs {
			if match(l) {
				got = append(got, l)
			}
		}
		change := m.change
		m.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-change:
		case <-deadline:
			m.t.Fatalf("waited %v for %d log lines %s, saw %d", timeout, n, what, len(got))
		case <-m.done:
			m.t.Fatalf("master exited (%v) while waiting for %d log lines %s, saw %d", m.err, n, what, len(got))
		}
	}
}

// waitMsg waits for n lines with message msg.
func (m *master) waitMsg(timeout time.Duration, n int, msg string) []logLine {
	m.t.Helper()
	return m.waitLog(timeout, n, strconv.Quote(msg), func(l logLine) bool { return l.msg() == msg })
}

// lines returns the log lines with message msg so far.
func (m *master) lines(msg string) []logLine {
	m.mu.Lock()
	defer m.mu.Unlock()
	var got []logLine
	for _, l := range m.logs {
		if l.msg() == msg {
			got = append(got, l)
		}
	}
	return got
}

// readyPIDs waits until every slot 0..n-1 has a ready child and returns
// their pids by slot, from the log.
func (m *master) waitReady(n int) map[int]int {
	m.t.Helper()
	m.waitMsg(30*time.Second, n, "child ready")
	bySlot := map[int]int{}
	for _, l := range m.lines("child ready") {
		bySlot[l.int("slot")] = l.int("pid")
	}
	return bySlot
}

// signal sends sig to the master.
func (m *master) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatalf("signal master: %v", err)
	}
}

// wait waits for the master to exit and returns its exit code.
func (m *master) wait(timeout time.Duration) int {
	m.t.Helper()
	select {
	case <-m.done:
	case <-time.After(timeout):
		m.t.Fatalf("master still running %v later", timeout)
	}
	var ee *exec.ExitError
	if errors.As(m.err, &ee) {
		return ee.ExitCode()
	}
	if m.err != nil {
		m.t.Fatalf("master: %v", m.err)
	}
	return 0
}

// startedPIDs returns every child pid the master logged as started.
func (m *master) startedPIDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var pids []int
	for pid := range m.pids {
		pids = append(pids, pid)
	}
	return pids
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// whoami is the reference child's answer to GET /whoami.
type whoami struct {
	Slot       int `json:"slot"`
	Generation int `json:"generation"`
	PID        int `json:"pid"`
}

// get makes one request on a new connection and returns status and body.
func get(addr, path string) (int, []byte, error) {
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func getWhoami(addr string) (whoami, error) {
	code, body, err := get(addr, "/whoami")
	if err != nil {
		return whoami{}, err
	}
	if code != 200 {
		return whoami{}, fmt.Errorf("GET /whoami: status %d", code)
	}
	var w whoami
	return w, json.Unmarshal(body, &w)
}

// portFree reports whether nothing listens on addr any more.
func portFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func decodeJSON(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// killPID sends SIGKILL to a process this test started.
func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// sendSlow sends GET /?sleep=d on a new connection and returns once a child
// has accepted it (no listener on addr's port has anything queued), so the
// request is in flight. The returned func reads the answer.
func sendSlow(t *testing.T, addr, d string) func() (int, error) {
	t.Helper()
	return sendPath(t, addr, "/?sleep="+d)
}

// sendPath sends GET path on a new connection and returns once a process
// has accepted it (nothing is queued on the port). The returned func
// reads the answer, within 2 minutes.
func sendPath(t *testing.T, addr, path string) func() (int, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: prefork\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	eventually(t, 5*time.Second, "the request to "+path+" accepted", func() bool {
		q, err := acceptQueued(port)
		return err == nil && q == 0
	})
	return func() (int, error) {
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
}

// acceptQueued returns how many connections wait in the accept queues of
// the listeners on port, from /proc/net/tcp (a listener's rx_queue is its
// accept queue length).
func acceptQueued(port string) (int, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, err
	}
	return testkit.AcceptQueued(p)
}

// dialTimeout opens a TCP connection to addr, giving up after 5 s.
func dialTimeout(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
