package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spawnRole, in the environment, makes the test binary play a part in the
// spawner's tests before any test runs (in init, on the main thread, as
// cmd/master's main does):
//
//	attach       attach a reuseport program to fd 3; write the outcome
//	             ("ok" or the errno's name) to fd 4
//	sleep        sleep a minute (SIGTERM, the parent-death signal, ends it)
//	upgrade-old  a master: RunMain, a spawner on the main thread, a child,
//	             then exec itself as upgrade-new on the spawner's thread
//	upgrade-new  the master after the exec: adopt the guard, check the
//	             child is still its own and alive, attach its own program
const spawnRole = "SUPERVISOR_SPAWN_ROLE"

// What upgrade-old tells upgrade-new.
const (
	envUpgradePID      = "SUPERVISOR_TEST_PID"
	envUpgradeChild    = "SUPERVISOR_TEST_CHILD"
	envUpgradeListener = "SUPERVISOR_TEST_LISTENER"
	envUpgradeNNP      = "SUPERVISOR_TEST_NNP"
	envUpgradeAmbient  = "SUPERVISOR_TEST_AMBIENT"
)

func init() {
	role := os.Getenv(spawnRole)
	if role == "" {
		return
	}
	runtime.LockOSThread() // main runs on the main thread, as cmd/master's
	var code int
	switch role {
	case "attach":
		code = playAttacher()
	case "sleep":
		time.Sleep(time.Minute)
	case "upgrade-old":
		code = RunMain(playUpgradeOld)
	case "upgrade-new":
		code = RunMain(playUpgradeNew)
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		code = 3
	}
	os.Exit(code)
}

func playAttacher() int {
	out := "ok"
	if err := attachRet0(3); err != nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			return 1
		}
		out = unix.ErrnoName(errno)
	}
	if _, err := unix.Write(4, []byte(out)); err != nil {
		return 1
	}
	return 0
}

// forkAttacher forks, from the calling thread, the test binary as an
// attacher of fd's group, and returns its pid and outcome.
func forkAttacher(fd int) (int, string, error) {
	return spawnAttacher(fd, func(argv, env []string, files []uintptr) (int, error) {
		return syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{Env: env, Files: files})
	})
}

// spawnAttacher starts the attacher with start and returns its pid and
// outcome once it has exited.
func spawnAttacher(fd int, start func(argv, env []string, files []uintptr) (int, error)) (int, string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, "", err
	}
	defer r.Close()
	env := append(environWithout(spawnRole), spawnRole+"=attach")
	pid, err := start([]string{os.Args[0]}, env, []uintptr{0, 1, 2, uintptr(fd), w.Fd()})
	w.Close()
	if err != nil {
		return 0, "", fmt.Errorf("start the attacher: %w", err)
	}
	out, err := io.ReadAll(r)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
	if err != nil || len(out) == 0 {
		return pid, "", fmt.Errorf("the attacher said nothing (%v; %v)", err, ws)
	}
	return pid, string(out), nil
}

// playUpgradeOld is a master before its upgrade in place.
func playUpgradeOld() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "upgrade-old: "+format+"\n", args...)
		return 1
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return fail("%v", err)
	}
	defer devnull.Close()
	s := startSpawner(devnull, nil, nil, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if !s.onMain {
		return fail("the spawner does not run on the main thread")
	}
	fd, why := s.guardListener()
	if fd < 0 {
		return fail("no seccomp listener: %s (%v)", why, s.guardErr)
	}
	base := environWithout(spawnRole)
	pid, err := s.spawn(spawnSpec{path: os.Args[0], argv: []string{os.Args[0]}, env: append(slices.Clone(base), spawnRole+"=sleep")},
		spawnPlace{cgroupFD: -1})
	if err != nil {
		return fail("spawn: %v", err)
	}
	// A failed exec leaves everything as it was.
	if err := s.exec("/nonexistent/master", []string{"master"}, base); !errors.Is(err, unix.ENOENT) {
		return fail("exec of a missing binary: %v, want ENOENT", err)
	}
	if err := unix.Kill(pid, 0); err != nil {
		return fail("the child after a failed exec: %v", err)
	}
	env := append(base, spawnRole+"=upgrade-new",
		envUpgradePID+"="+strconv.Itoa(os.Getpid()),
		envUpgradeChild+"="+strconv.Itoa(pid),
		envUpgradeListener+"="+strconv.Itoa(fd),
		envUpgradeNNP+"="+strconv.FormatBool(s.nnp),
		envUpgradeAmbient+"="+fmt.Sprint(s.ambient))
	err = s.exec(os.Args[0], []string{os.Args[0]}, env)
	return fail("exec: %v", err)
}

// playUpgradeNew is the master after the exec: same pid, the child still
// its own, every thread filtered, the guard's listener adopted.
func playUpgradeNew() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "upgrade-new: "+format+"\n", args...)
		return 1
	}
	if got := strconv.Itoa(os.Getpid()); got != os.Getenv(envUpgradePID) {
		return fail("pid %s, want the old master's %s", got, os.Getenv(envUpgradePID))
	}
	child, _ := strconv.Atoi(os.Getenv(envUpgradeChild))
	fd, _ := strconv.Atoi(os.Getenv(envUpgradeListener))
	// The child survived the exec, and is still ours.
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(child, &ws, unix.WNOHANG, nil); pid != 0 || err != nil {
		if ws.Signaled() {
			return fail("child %d after the exec: killed by %v", child, ws.Signal())
		}
		return fail("child %d after the exec: wait4 %d %v (%v), want running", child, pid, err, ws)
	}
	if cst := procStatusOf(child); cst["PPid"] != strconv.Itoa(os.Getpid()) {
		return fail("child %d after the exec: PPid %q, want %d", child, cst["PPid"], os.Getpid())
	}
	logs := &logRecorder{}
	g, err := adoptGuard(fd, os.Getenv(envUpgradeNNP) == "true", slog.New(logs))
	if err != nil {
		return fail("%v", err)
	}
	st := procStatusOf(os.Getpid())
	if st["Seccomp"] != "2" {
		return fail("Seccomp %q, want 2: the filter stays on the thread that exec'd", st["Seccomp"])
	}
	amb, _ := strconv.ParseUint(st["CapAmb"], 16, 64)
	if want := os.Getenv(envUpgradeAmbient); want != "[]" && amb&(1<<capNetBindService) == 0 {
		return fail("CapAmb %s, want CAP_NET_BIND_SERVICE (%s) raised again before the exec", st["CapAmb"], want)
	}
	// The new master's own threads are filtered: attaching goes through
	// the answerer.
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail("%v", err)
	}
	defer unix.Close(ln)
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return fail("%v", err)
	}
	if err := unix.Listen(ln, 8); err != nil {
		return fail("%v", err)
	}
	if err := attachRet0(ln); err != nil {
		return fail("the new master attaching its own program: %v", err)
	}
	// A new spawner on the main thread takes the guard over; its
	// children are refused.
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return fail("%v", err)
	}
	defer devnull.Close()
	s := startSpawner(devnull, nil, g, slog.New(logs))
	defer s.stop()
	if !s.onMain || s.guardErr != nil || s.answerer != g.answerer {
		return fail("the new spawner: on the main thread %v, guard %v", s.onMain, s.guardErr)
	}
	_, got, err := spawnAttacher(ln, func(argv, env []string, files []uintptr) (int, error) {
		extra := []int{int(files[3]), int(files[4])}
		return s.spawn(spawnSpec{path: argv[0], argv: argv, env: env, extra: extra}, spawnPlace{cgroupFD: -1})
	})
	if err != nil || got != "EPERM" {
		return fail("a child of the new spawner attaching cbpf: %q %v, want EPERM", got, err)
	}
	// Not SIGTERMed by the exec: it ends with the SIGKILL sent now.
	unix.Kill(child, unix.SIGKILL)
	if _, err := unix.Wait4(child, &ws, 0, nil); err != nil || !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		return fail("child %d: %v %v, want killed by SIGKILL", child, ws, err)
	}
	fmt.Println("upgrade-new: ok")
	return 0
}

// environWithout is the environment without key, which a child's own
// value replaces: Go's os.Getenv reads the first of two.
func environWithout(key string) []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
}

// procStatusOf reads /proc/PID/status as a map.
func procStatusOf(pid int) map[string]string {
	data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	st := map[string]string{}
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(line, ":")
		st[k] = strings.TrimSpace(v)
	}
	return st
}

// A master whose spawner runs on its main thread (RunMain) execs a new
// binary on that thread: its child survives, is still its child, and was
// never sent SIGTERM; the new master, under the filter it inherited,
// adopts the listener and attaches its own reuseport program, and the
// children of its spawner are still refused. Ambient capabilities the
// old master had reach the new one.
func TestExecKeepsChildren(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(environWithout(spawnRole), spawnRole+"=upgrade-old")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if haveAmbientRoom() {
		// Given CAP_NET_BIND_SERVICE in its ambient set, as systemd's
		// AmbientCapabilities= does.
		cmd.SysProcAttr.AmbientCaps = []uintptr{capNetBindService}
	}
	err := cmd.Run()
	if cmd.Process != nil {
		unix.Kill(-cmd.Process.Pid, unix.SIGKILL) // the sleeper, on failure
	}
	if err != nil || !strings.Contains(stdout.String(), "upgrade-new: ok") {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
}

// haveAmbientRoom says whether the test may give a child an ambient
// capability: it must be in the permitted and inheritable sets, and
// os/exec raises the inheritable one itself when permitted.
func haveAmbientRoom() bool {
	_, prm, err := capabilities()
	return err == nil && prm.has(capNetBindService)
}

// A failed exec leaves the spawner's thread as it was: its ambient
// capabilities dropped again, the listener close-on-exec again.
func TestFailedExecRestoresThread(t *testing.T) {
	t.Parallel()
	if !haveAmbientRoom() {
		t.Skip("needs CAP_NET_BIND_SERVICE in the permitted set")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	s := startSpawner(devnull, nil, nil, slog.New(slog.DiscardHandler))
	defer s.stop()
	onThread := func(f func() error) error {
		reply := make(chan error, 1)
		s.reqs <- func() { reply <- f() }
		return <-reply
	}
	// As the spawner had dropped it: inheritable, and saved.
	if err := onThread(func() error { return setInheritable(capNetBindService) }); err != nil {
		t.Fatal(err)
	}
	s.ambient = []uintptr{capNetBindService}
	if err := s.exec("/nonexistent/master", []string{"master"}, nil); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("exec: %v, want ENOENT", err)
	}
	var set int
	if err := onThread(func() (err error) {
		set, err = unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, capNetBindService, 0, 0)
		return err
	}); err != nil || set != 0 {
		t.Errorf("CAP_NET_BIND_SERVICE ambient after the failed exec: %d %v, want dropped again", set, err)
	}
	if fd, why := s.guardListener(); fd < 0 {
		t.Errorf("no listener: %s", why)
	} else if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("listener flags %#x %v after the failed exec, want close-on-exec", flags, err)
	}
	// Without the capability inheritable, raising fails before any exec.
	if err := onThread(func() error { return clearInheritable() }); err != nil {
		t.Fatal(err)
	}
	if err := s.exec("/nonexistent/master", []string{"master"}, nil); err == nil || !strings.Contains(err.Error(), "raise") {
		t.Errorf("exec without the capability inheritable: %v, want the raise refused", err)
	}
}

// setInheritable adds capability c to the calling thread's inheritable set.
func setInheritable(c uint) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Inheritable |= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}

// clearInheritable empties the calling thread's inheritable set.
func clearInheritable() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	return unix.Capset(&hdr, &data[0])
}

// adoptGuard refuses what is not a seccomp listener, and a master whose
// main thread is not free for the spawner (tests never call RunMain).
func TestAdoptGuardRefuses(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := adoptGuard(int(r.Fd()), false, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "not a seccomp listener") {
		t.Errorf("adopt a pipe: %v", err)
	}
	listener := make(chan int, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends filtered
		fd, _, _, _ := installGuard()
		listener <- fd
	}()
	fd := <-listener
	if fd < 0 {
		t.Skip("no seccomp listener here")
	}
	defer unix.Close(fd)
	if _, err := adoptGuard(fd, false, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "RunMain") {
		t.Errorf("adopt without RunMain: %v", err)
	}
}
