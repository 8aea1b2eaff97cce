package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestNprocHeadroomAndReserve(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ soft, want uint64 }{{1, 4}, {25, 4}, {64, 8}, {4096, 64}, {1 << 40, 64}} {
		if got := nprocHeadroom(tc.soft); got != tc.want {
			t.Errorf("nprocHeadroom(%d) = %d, want %d", tc.soft, got, tc.want)
		}
	}
	for _, tc := range []struct{ procs, room, want int }{{2, -1, 8}, {2, 20, 5}, {2, 1000, 8}, {64, -1, 70}, {2, 0, 0}, {2, -5, 8}} {
		if got := threadReserve(tc.procs, tc.room); got != tc.want {
			t.Errorf("threadReserve(%d, %d) = %d, want %d", tc.procs, tc.room, got, tc.want)
		}
	}
}

func TestParseStatusTasks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		in           string
		uid, threads int
		ok           bool
	}{
		{"both", "Name:\tx\nUid:\t1000\t0\t0\t0\nThreads:\t7\n", 1000, 7, true},
		{"no threads", "Uid:\t1000\t1000\t1000\t1000\n", 0, 0, false},
		{"garbage", "Uid:\tx\nThreads:\t7\n", 0, 0, false},
		{"empty", "", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid, threads, ok := parseStatusTasks([]byte(tc.in))
			if ok != tc.ok || ok && (uid != tc.uid || threads != tc.threads) {
				t.Errorf("got %d %d %v, want %d %d %v", uid, threads, ok, tc.uid, tc.threads, tc.ok)
			}
		})
	}
}

func TestPidsDirs(t *testing.T) {
	t.Parallel()
	const hybrid = `25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
30 25 0:27 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
`
	const container = `40 30 0:29 /system.slice/app.service /sys/fs/cgroup rw - cgroup2 cgroup2 rw
`
	for _, tc := range []struct {
		name, mountinfo, cgroup string
		want                    []cgroupDir
	}{
		{"hybrid", hybrid, "8:pids:/user.slice\n4:memory:/x\n0::/user.slice/s.scope\n", []cgroupDir{
			{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified/user.slice/s.scope"},
			{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/pids/user.slice"},
		}},
		{"pure v2 in a container", container, "0::/system.slice/app.service/sub\n", []cgroupDir{
			{"/sys/fs/cgroup", "/sys/fs/cgroup/sub"},
		}},
		{"outside the mount's root", container, "0::/system.slice/app.service2\n", nil},
		{"no pids", "31 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", "4:memory:/x\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pidsDirs([]byte(tc.mountinfo), []byte(tc.cgroup))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// reserveThreads makes its threads, more than the process had, and idle
// threads stay: the reserve is still there after a GC.
func TestReserveThreadsStay(t *testing.T) {
	before := threadsNow(t)
	n := before + 12
	reserveThreads(n)
	after := threadsNow(t)
	if after < n {
		t.Fatalf("%d threads after reserving %d (%d before)", after, n, before)
	}
	for range 3 {
		runtime.GC()
		if n := threadsNow(t); n < after {
			t.Fatalf("threads went from %d to %d: the runtime ended idle ones", after, n)
		}
	}
}

func threadsNow(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	_, n, ok := parseStatusTasks(data)
	if !ok {
		t.Fatal("no Threads in /proc/self/status")
	}
	return n
}

// forkWith starts the child under the children's limit, soft and hard,
// and gives the master its own back.
func TestForkWithLowersChildLimit(t *testing.T) {
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &own); err != nil {
		t.Fatal(err)
	}
	if own.Cur != unix.RLIM_INFINITY && own.Cur < 1000 {
		t.Skipf("RLIMIT_NPROC %d is already low", own.Cur)
	}
	l := &nprocLimit{uid: os.Getuid(), soft: 100000, child: 777}
	sleep := "/bin/sleep"
	pid, err := l.forkWith(os.Getuid(), func() (int, error) {
		return syscall.ForkExec(sleep, []string{sleep, "10"}, &syscall.ProcAttr{})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	})
	limits, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "limits"))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.SplitSeq(string(limits), "\n") {
		if strings.HasPrefix(l, "Max processes") {
			line = strings.Join(strings.Fields(l), " ")
		}
	}
	if line != "Max processes 777 777 processes" {
		t.Errorf("child: %q, want 777 soft and hard", line)
	}
	var after unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &after); err != nil || after != own {
		t.Errorf("master's limit after: %+v (%v), want %+v", after, err, own)
	}
}

// If the master's limit cannot be set back after the fork (here a seccomp
// filter that the fork installs on the forking thread refuses every
// change of RLIMIT_NPROC from then on), forkWith kills the child and
// fails, and sets the limit back before its next fork.
func TestForkWithRestoreFails(t *testing.T) {
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &own); err != nil {
		t.Fatal(err)
	}
	if own.Cur != unix.RLIM_INFINITY && own.Cur < 1000 {
		t.Skipf("RLIMIT_NPROC %d is already low", own.Cur)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NPROC, &own) })
	// Lowered a little only: the whole test process lives under it until
	// the next fork.
	child := uint64(1 << 20)
	if own.Cur != unix.RLIM_INFINITY {
		child = own.Cur - 1
	}
	l := &nprocLimit{uid: os.Getuid(), soft: 1 << 21, child: child}
	sleep := []string{"/bin/sleep", "10"}
	var forked int
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends filtered
		_, err := l.forkWith(os.Getuid(), func() (int, error) {
			if err := refuseNprocChange(); err != nil {
				return 0, err
			}
			pid, err := syscall.ForkExec(sleep[0], sleep, &syscall.ProcAttr{})
			forked = pid
			return pid, err
		})
		done <- err
	}()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "cannot be set back") || errors.Is(err, unix.EPERM) {
		t.Fatalf("forkWith: %v, want the restore's error, not one that is EPERM", err)
	}
	if forked == 0 {
		t.Fatal("no child was forked")
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(forked, &ws, 0, nil); err != nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("the child: %v (%v), want killed", ws, err)
	}
	var now unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &now); err != nil || now.Cur != child {
		t.Errorf("master's soft limit after the failed restore: %d (%v), want %d", now.Cur, err, child)
	}
	pid, err := l.forkWith(os.Getuid(), func() (int, error) {
		return syscall.ForkExec(sleep[0], sleep, &syscall.ProcAttr{})
	})
	if err != nil {
		t.Fatalf("the next fork: %v", err)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	syscall.Wait4(pid, &ws, 0, nil)
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &now); err != nil || now != own || l.unrestored != nil {
		t.Errorf("master's limit after the next fork: %+v (%v, unrestored %v), want %+v", now, err, l.unrestored, own)
	}
}

// refuseNprocChange installs, on the calling thread, a seccomp filter that
// refuses prlimit64 of RLIMIT_NPROC with EPERM.
func refuseNprocChange() error {
	var a bpfAsm
	a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompNR, "")
	a.jeq(unix.SYS_PRLIMIT64, "", "allow", "")
	a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, seccompArgLow(1), "")
	a.jeq(unix.RLIMIT_NPROC, "", "allow", "")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM), "")
	a.stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW, "allow")
	prog, err := a.assemble()
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	return setFilter(prog)
}

func TestExplainForkNamesTheLimit(t *testing.T) {
	t.Parallel()
	const (
		nprocMsg = "the process limit of uid 4242 (RLIMIT_NPROC 25, of which the children may use 21) is reached"
		pidsMsg  = "the pids limit of cgroup /sys/fs/cgroup/app.service (pids.max 64) is reached"
	)
	l := &nprocLimit{uid: 4242, soft: 25, child: 21}
	for _, tc := range []struct {
		name string
		pids []pidsLimit
		want string
	}{
		{"no pids limit", nil, nprocMsg},
		{"pids limit with room", []pidsLimit{{dir: "/sys/fs/cgroup/app.service", max: 64, current: 20}}, nprocMsg},
		{"pids limit reached", []pidsLimit{
			{dir: "/sys/fs/cgroup/app.service", max: 64, current: 62},
			{dir: "/sys/fs/cgroup", max: 10000, current: 300},
		}, pidsMsg},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := explainForkLimits(unix.EAGAIN, 4242, l, tc.pids)
			var le *forkLimitError
			if !errors.As(err, &le) || !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("%v: not a forkLimitError wrapping EAGAIN", err)
			}
			if want := "resource temporarily unavailable: " + tc.want; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
		})
	}
	if err := explainFork(unix.ENOENT, 4242, l); err != unix.ENOENT {
		t.Errorf("ENOENT became %v", err)
	}
	var le *forkLimitError
	if err := explainFork(unix.EAGAIN, 4242, l); !errors.As(err, &le) {
		t.Errorf("EAGAIN became %v, not a forkLimitError", err)
	}
}
