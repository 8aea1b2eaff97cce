package proctree

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/prefork/prefork/pkg/sockopt"
)

// pyListener is a child server in child socket mode: it binds its own
// SO_REUSEPORT listener on 127.0.0.1:argv[1] (0: a free port), with a
// backlog of 16, makes itself non-dumpable if argv[2] is "nodump", prints
// "PORT PID" and sleeps without ever accepting.
const pyListener = `
import ctypes, os, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
if sys.argv[2] == "nodump" and ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_DUMPABLE, 0): errno %d" % ctypes.get_errno())
print(s.getsockname()[1], os.getpid(), flush=True)
time.sleep(600)
`

// pyEnv carries pyListener to a shell that starts it as a grandchild.
const pyEnv = "PROCTREE_PY"

// startListener starts pyListener on port as a child, with cred if not
// nil, and returns its pid and address.
func startListener(t testing.TB, port uint16, mode string, cred *syscall.Credential) (int, netip.AddrPort) {
	t.Helper()
	cmd := exec.Command(pythonPath, "-c", pyListener, strconv.Itoa(int(port)), mode)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	_, out := start(t, cmd, false)
	return readListener(t, cmd, out)
}

// readListener reads pyListener's "PORT PID" line.
func readListener(t testing.TB, cmd *exec.Cmd, out *bufio.Reader) (int, netip.AddrPort) {
	t.Helper()
	line, err := readLine(out)
	var port, pid int
	if err == nil {
		_, err = fmt.Sscan(line, &port, &pid)
	}
	if err != nil {
		t.Fatalf("%s: read %q, %v; stderr: %s", cmd.Args[0], line, err, cmd.Stderr)
	}
	return pid, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
}

// takeOK takes the listener on addr from pids, failing the test on an
// error, and closes it with the test.
func takeOK(t testing.TB, pids []int, addr netip.AddrPort) (int, uint64) {
	t.Helper()
	fd, inode, err := TakeListener(pids, addr)
	if err != nil {
		t.Fatalf("TakeListener(%v, %s): %v", pids, addr, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, inode
}

// TestTakeListener: the descriptor taken from a child is its listener,
// close-on-exec, in LISTEN with the child's backlog, and the connection a
// client makes is accepted through it.
func TestTakeListener(t *testing.T) {
	t.Parallel()
	needPython(t)
	other, _ := start(t, exec.Command("sleep", "30"), false)
	pid, addr := startListener(t, 0, "plain", nil)
	fd, inode := takeOK(t, []int{other, pid}, addr)

	ls, err := Listeners(addr)
	if err != nil || len(ls) != 1 || ls[0].Inode != inode {
		t.Fatalf("Listeners(%s) = %+v, %v; want the one taken, inode %d", addr, ls, err, inode)
	}
	if holders, err := Holders([]uint64{inode}); err != nil || !slices.Contains(holders, pid) || !slices.Contains(holders, os.Getpid()) {
		t.Fatalf("Holders(%d) = %v, %v; want the child %d and the test process", inode, holders, err, pid)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("fd flags %#x, %v; want FD_CLOEXEC", flags, err)
	}
	if queued, backlog, err := sockopt.AcceptQueue(fd); queued != 0 || backlog != 16 || err != nil {
		t.Fatalf("AcceptQueue = %d, %d, %v; want 0, 16, nil", queued, backlog, err)
	}

	client, err := net.DialTimeout("tcp", addr.String(), deadline)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	eventually(t, "connection queued", func() (bool, error) {
		queued, _, err := sockopt.AcceptQueue(fd)
		return queued == 1, err
	})
	// The child's socket is blocking: poll first, so a bug fails the test
	// rather than hanging it.
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(deadline.Milliseconds())); n != 1 || err != nil {
		t.Fatalf("poll the taken listener = %d, %v; want 1, nil", n, err)
	}
	conn, peer, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn)
	want := client.LocalAddr().(*net.TCPAddr).AddrPort()
	if p, ok := peer.(*unix.SockaddrInet4); !ok || netip.AddrPortFrom(netip.AddrFrom4(p.Addr), uint16(p.Port)) != want {
		t.Fatalf("accepted a connection from %+v; want the client's %s", peer, want)
	}
}

// TestTakeListenerGrandchild: the listener of a grandchild is found among
// the members of the child's tree.
func TestTakeListenerGrandchild(t *testing.T) {
	t.Parallel()
	needPython(t)
	cmd := exec.Command("sh", "-c", pythonPath+` -c "$`+pyEnv+`" 0 plain & wait`)
	cmd.Env = append(os.Environ(), pyEnv+"="+pyListener)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	root, out := start(t, cmd, false)
	grandchild, addr := readListener(t, cmd, out)
	t.Cleanup(func() { unix.Kill(grandchild, unix.SIGKILL) })

	pids, err := Members(root, "")
	if err != nil || !slices.Contains(pids, grandchild) {
		t.Fatalf("Members(%d) = %v, %v; want the grandchild %d in it", root, pids, err, grandchild)
	}
	_, inode := takeOK(t, pids, addr)
	if want := listenerOf(t, grandchild); inode != want {
		t.Fatalf("took socket:[%d]; the grandchild holds socket:[%d]", inode, want)
	}
}

// TestTakeListenerMany: processes with a SO_REUSEPORT listener each are
// refused together, and each one alone gives its own.
func TestTakeListenerMany(t *testing.T) {
	t.Parallel()
	needPython(t)
	first, addr := startListener(t, 0, "plain", nil)
	second, _ := startListener(t, addr.Port(), "plain", nil)

	_, _, err := TakeListener([]int{first, second}, addr)
	if !errors.Is(err, ErrManyListeners) || !strings.Contains(err.Error(), ": 2 ") {
		t.Fatalf("TakeListener(both) = %v; want ErrManyListeners saying 2", err)
	}
	for _, pid := range []int{first, second} {
		if _, inode := takeOK(t, []int{pid, pid}, addr); inode != listenerOf(t, pid) {
			t.Fatalf("took socket:[%d] from %d; it holds socket:[%d]", inode, pid, listenerOf(t, pid))
		}
	}
}

// TestTakeListenerNone: no listener at all, one held by another process,
// a process gone, no processes: ErrNoListener.
func TestTakeListenerNone(t *testing.T) {
	t.Parallel()
	// A bound socket that does not listen keeps the port free of
	// listeners for the test.
	reserved, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(reserved) })
	if err := unix.Bind(reserved, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(reserved)
	if err != nil {
		t.Fatal(err)
	}
	unused := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))
	_, mine, _ := listenFile(t) // held by the test process alone
	sleeper, _ := start(t, exec.Command("sleep", "30"), false)
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		pids []int
		addr netip.AddrPort
	}{
		{name: "nothing listening", pids: []int{sleeper, os.Getpid()}, addr: unused},
		{name: "held by another process", pids: []int{sleeper}, addr: mine},
		{name: "process gone", pids: []int{exited.Process.Pid}, addr: mine},
		{name: "no pids", pids: nil, addr: mine},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, _, err := TakeListener(tt.pids, tt.addr)
			if !errors.Is(err, ErrNoListener) {
				if err == nil {
					unix.Close(fd)
				}
				t.Fatalf("TakeListener(%v, %s) = %d, %v; want ErrNoListener", tt.pids, tt.addr, fd, err)
			}
		})
	}
}

// TestTakeListenerNotDumpable: root takes the socket of a child that made
// itself non-dumpable, which its own user could not (CAP_SYS_PTRACE).
func TestTakeListenerNotDumpable(t *testing.T) {
	t.Parallel()
	needPython(t)
	needRoot(t)
	pid, addr := startListener(t, 0, "nodump", nobody)
	// A non-dumpable process's /proc/PID/* belong to root.
	var st unix.Stat_t
	if err := unix.Stat(procPath(pid, "/fd"), &st); err != nil || st.Uid != 0 {
		t.Fatalf("/proc/%d/fd is owned by uid %d, %v; want 0 (not dumpable)", pid, st.Uid, err)
	}
	if _, inode := takeOK(t, []int{pid}, addr); inode != listenerOf(t, pid) {
		t.Fatalf("took socket:[%d]; the child holds socket:[%d]", inode, listenerOf(t, pid))
	}
}

// The uids of TestTakeListenerNotAllowed.
var (
	nobody = &syscall.Credential{Uid: 65534, Gid: 65534}
	user   = &syscall.Credential{Uid: 1000, Gid: 1000}
)

// takerEnv switches TestTakeListenerNotAllowed into the taker: it takes
// the listener of "PID ADDR" and prints the outcome.
const takerEnv = "PROCTREE_TAKE"

// TestTakeListenerNotAllowed runs TakeListener in a copy of the test
// binary under another user, without capabilities, against children it
// may and may not take from.
func TestTakeListenerNotAllowed(t *testing.T) {
	if arg := os.Getenv(takerEnv); arg != "" {
		takerMain(arg)
		return
	}
	t.Parallel()
	needPython(t)
	needRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skipf("no setpriv to run the taker with real and effective uids apart: %v", err)
	}
	bin := exportTestBinary(t)
	tests := []struct {
		name   string
		target *syscall.Credential // nil: root
		mode   string
		taker  []string // setpriv's options
		want   string
	}{
		{name: "same user, dumpable", target: nobody, mode: "plain", taker: []string{"--reuid=65534", "--regid=65534"}, want: "ok"},
		{name: "same user, not dumpable", target: nobody, mode: "nodump", taker: []string{"--reuid=65534", "--regid=65534"}, want: "not allowed"},
		{name: "root's child", target: nil, mode: "plain", taker: []string{"--reuid=65534", "--regid=65534"}, want: "not allowed"},
		// /proc/PID/fd is read with the effective (fs) uid, which is the
		// child's, but pidfd_getfd checks the real uid, which is not: the
		// refusal comes from pidfd_getfd itself.
		{name: "real uid another", target: user, mode: "plain", taker: []string{"--ruid=65534", "--euid=1000", "--rgid=65534", "--egid=1000"}, want: "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pid, addr := startListener(t, 0, tt.mode, tt.target)
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			args := append(append([]string{}, tt.taker...), "--clear-groups", "--", bin, "-test.run=^TestTakeListenerNotAllowed$")
			cmd := exec.CommandContext(ctx, setpriv, args...)
			cmd.Dir = filepath.Dir(bin)
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s", takerEnv, pid, addr),
				// The race detector's exit waits a second by default.
				"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
			out, err := cmd.CombinedOutput()
			got, _, _ := strings.Cut(string(out), "\n")
			if err != nil || !strings.HasPrefix(got, tt.want+":") {
				t.Fatalf("taker %v: %v; output:\n%s\nwant a first line %q", tt.taker, err, out, tt.want+": ...")
			}
			t.Logf("taker %v: %s", tt.taker, got)
			if tt.name == "real uid another" && !strings.Contains(got, "pidfd_getfd") {
				t.Fatalf("taker: %s; want pidfd_getfd's refusal", got)
			}
		})
	}
}

// takerMain is the taker of TestTakeListenerNotAllowed: its first line
// of output is "ok: ...", "not allowed: ..." or "error: ...".
func takerMain(arg string) {
	var pid int
	var addr string
	fmt.Sscan(arg, &pid, &addr)
	fd, inode, err := TakeListener([]int{pid}, netip.MustParseAddrPort(addr))
	switch {
	case err == nil:
		fmt.Printf("ok: socket:[%d] as uid %d/%d\n", inode, unix.Getuid(), unix.Geteuid())
		unix.Close(fd)
	case errors.Is(err, ErrNotAllowed):
		fmt.Printf("not allowed: %v\n", err)
	default:
		fmt.Printf("error: %v\n", err)
	}
}

// exportTestBinary copies the test binary where another user can run it:
// go test builds it in a directory only its user can enter.
func exportTestBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "proctree.test")
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestGetfdStale: a fd number that names another file than the listener
// seen is refused as stale, and so retried; a closed one and a process
// gone are retried too.
func TestGetfdStale(t *testing.T) {
	t.Parallel()
	sleeper, _ := start(t, exec.Command("sleep", "30"), false) // fd 0 is /dev/null
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		h    holding
		want error
	}{
		{name: "another file", h: holding{pid: sleeper, fd: 0, inode: 1}, want: errStale},
		{name: "closed", h: holding{pid: sleeper, fd: 999, inode: 1}, want: unix.EBADF},
		{name: "gone", h: holding{pid: exited.Process.Pid, fd: 0, inode: 1}, want: unix.ESRCH},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := getfd(tt.h)
			if !errors.Is(err, tt.want) || !retryable(err) {
				if err == nil {
					got.close()
				}
				t.Fatalf("getfd(%+v) = %v; want %v, retryable", tt.h, err, tt.want)
			}
		})
	}
}

// TestPidfdError: each errno of pidfd_open and pidfd_getfd says what it
// means.
func TestPidfdError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		errno      unix.Errno
		notAllowed bool
		says       string
		retry      bool
	}{
		{errno: unix.EPERM, notAllowed: true, says: "CAP_SYS_PTRACE"},
		{errno: unix.EACCES, notAllowed: true, says: "dumpable"},
		{errno: unix.ENOSYS, says: "kernel before 5.6"},
		{errno: unix.ESRCH, says: "gone", retry: true},
		{errno: unix.EBADF, says: "closed the fd", retry: true},
		{errno: unix.EMFILE, says: "too many open files"},
	}
	for _, tt := range tests {
		t.Run(tt.errno.Error(), func(t *testing.T) {
			err := pidfdError(tt.errno)
			if !errors.Is(err, tt.errno) || errors.Is(err, ErrNotAllowed) != tt.notAllowed ||
				!strings.Contains(err.Error(), tt.says) || retryable(err) != tt.retry {
				t.Fatalf("pidfdError(%v) = %q; want it to wrap the errno, ErrNotAllowed %v, retryable %v, saying %q",
					tt.errno, err, tt.notAllowed, tt.retry, tt.says)
			}
		})
	}
}

// BenchmarkTakeListener: one child with one listener; each take is
// closed at once.
func BenchmarkTakeListener(b *testing.B) {
	if _, err := os.Stat(pythonPath); err != nil {
		b.Skipf("no %s: %v", pythonPath, err)
	}
	pid, addr := startListener(b, 0, "plain", nil)
	pids := []int{pid}
	for b.Loop() {
		fd, _, err := TakeListener(pids, addr)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

// listenerOf returns the inode of the one socket pid holds in LISTEN.
func listenerOf(t testing.TB, pid int) uint64 {
	t.Helper()
	var found []uint64
	err := scanFds(pid, func(_ int, link []byte) bool {
		if ino, ok := parseSocketLink(link); ok {
			found = append(found, ino)
		}
		return false
	})
	if err != nil || len(found) != 1 {
		t.Fatalf("sockets of pid %d: %v, %v; want one", pid, found, err)
	}
	return found[0]
}

// needRoot skips the test unless it runs as root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: it changes users")
	}
}
