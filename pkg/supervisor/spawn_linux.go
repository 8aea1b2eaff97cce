package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunMain runs main in a goroutine and returns its result, and meanwhile
// lends the calling thread to the first spawner of the process (see
// spawner): cmd/master calls it from main, whose goroutine an init
// function locked to the main thread. Called from any other thread it
// runs main alone, and spawners run on threads of their own.
func RunMain(main func() int) int {
	runtime.LockOSThread() // the caller's already; stays so
	done := make(chan struct{})
	code := 0
	start := func() {
		go func() {
			defer close(done)
			code = main()
		}()
	}
	if unix.Gettid() != unix.Getpid() {
		start()
		<-done
		return code
	}
	work := make(chan func())
	mainThread.Lock()
	mainThread.work, mainThread.done = work, done
	mainThread.Unlock()
	defer func() {
		mainThread.Lock()
		mainThread.work, mainThread.done = nil, nil
		mainThread.Unlock()
	}()
	start() // once the main thread can be claimed
	for {
		select {
		case f := <-work:
			f()
		case <-done:
			return code
		}
	}
}

// mainThread is what RunMain serves: work is run on the main thread until
// done is closed (main has returned). claimed says a spawner has had it,
// which then keeps it: another would install a second filter on it.
var mainThread struct {
	sync.Mutex
	work    chan func()
	done    chan struct{}
	claimed bool
}

// mainClaim is the main thread, claimed for one spawner.
type mainClaim struct {
	work chan func()
	done chan struct{}
}

// claimMainThread claims the main thread, or returns nil when RunMain
// does not serve it or a spawner has had it already.
func claimMainThread() *mainClaim {
	mainThread.Lock()
	defer mainThread.Unlock()
	if mainThread.work == nil || mainThread.claimed {
		return nil
	}
	mainThread.claimed = true
	return &mainClaim{work: mainThread.work, done: mainThread.done}
}

// unclaimMainThread gives the main thread back, unused.
func unclaimMainThread() {
	mainThread.Lock()
	mainThread.claimed = false
	mainThread.Unlock()
}

// mainThreadClaim is the claim of adopted, whose guard is on the main
// thread, or a new one.
func mainThreadClaim(adopted *adoptedGuard) *mainClaim {
	if adopted != nil {
		return adopted.main
	}
	return claimMainThread()
}

// lend runs body on the main thread, which it holds until body returns;
// body's argument is closed when RunMain's main has returned. It returns
// false when main had returned already.
func (c *mainClaim) lend(body func(quit <-chan struct{})) bool {
	select {
	case c.work <- func() { body(c.done) }:
		return true
	case <-c.done:
		return false
	}
}

// spawner starts children from one goroutine locked to its OS thread for
// the life of the supervisor. The children's parent-death signal is tied to
// the thread that forked them, not to the process: forking from whatever
// thread the Go scheduler picks would SIGTERM a child whenever the runtime
// retires that thread. With one thread that outlives every child, the signal
// fires exactly when the master dies.
//
// That thread is the process's main thread when RunMain serves it: an
// upgrade execs the new master on the spawner's thread (an exec from any
// other thread would end it, and SIGTERM every child), which makes it the
// new process's main thread, the one thread Go never ends. A new master
// whose spawner runs there again can upgrade again.
type spawner struct {
	reqs  chan func() // run on the spawner's thread
	stdin *os.File    // every child's
	// guardErr says why the reuseport guard (seccomp_linux.go) is not on
	// the children; nnp that installing it set no_new_privs on the
	// thread (or, adopted, that the master it was inherited from had).
	guardErr error
	nnp      bool
	// answerer answers the guard's listener; nil when the filter refuses
	// by itself, for the reason noListener, or when there is none.
	answerer   *guardAnswerer
	noListener string
	// ambient is what the thread's ambient capability set held before
	// it dropped it: its children and its exec get it back.
	ambient []uintptr
	// onMain says the spawner runs on the process's main thread.
	onMain bool
	// nproc is the master's RLIMIT_NPROC as its children get it; nil
	// when the limit does not apply to the master.
	nproc *nprocLimit
}

type spawnRequest struct {
	spawnSpec
	spawnPlace
}

// spawnPlace is where osProcs puts a child: its stdout and stderr (nil:
// the master's own), and the cgroup it is forked into (-1: the master's).
type spawnPlace struct {
	stdout, stderr *os.File
	cgroupFD       int
}

type spawnResult struct {
	pid int
	err error
}

// startSpawner starts the spawning thread; it ends when stop is called.
// It runs on the main thread where RunMain lends it (the first spawner of
// the process), and otherwise on a thread of its own. adopted, when not
// nil, is the guard the thread already has (adoptGuard): no second filter
// is installed.
func startSpawner(stdin *os.File, nproc *nprocLimit, adopted *adoptedGuard, log *slog.Logger) *spawner {
	s := &spawner{reqs: make(chan func()), stdin: stdin, nproc: nproc}
	ready := make(chan struct{})
	body := func(quit <-chan struct{}) {
		// Ambient capabilities pass through exec, also to a child of
		// another identity. Capabilities are per thread: this one drops
		// the master's ambient set, and each child gets back only what it
		// should (see forkExec); the master's other threads keep theirs.
		s.ambient = dropAmbient()
		if adopted == nil {
			// Filters are per thread too: every child of this thread
			// is guarded, the master's other threads are not.
			var listener int
			listener, s.noListener, s.nnp, s.guardErr = installGuard()
			if listener >= 0 {
				s.answerer, s.guardErr = startAnswerer(listener, log)
				if s.guardErr != nil {
					// Closed, the listener fails the children's
					// guarded calls with ENOSYS.
					unix.Close(listener)
					s.answerer, s.noListener, s.guardErr = nil, s.guardErr.Error(), nil
				}
			}
		} else {
			s.answerer, s.nnp = adopted.answerer, adopted.nnp
		}
		close(ready)
		for {
			select {
			case f, ok := <-s.reqs:
				if !ok {
					return
				}
				f()
			case <-quit:
				return // RunMain's main has returned: the process ends
			}
		}
	}
	main := mainThreadClaim(adopted)
	if main != nil && main.lend(body) {
		s.onMain = true
	} else {
		go func() {
			// Never unlocked: when this goroutine returns, the runtime
			// ends the thread, which is only right once no child is
			// left.
			runtime.LockOSThread()
			body(nil)
		}()
	}
	<-ready
	return s
}

// spawn starts the program of spec, with its descriptors extra as fd 3, 4
// and so on, and returns its pid. The caller owns reaping.
func (s *spawner) spawn(spec spawnSpec, place spawnPlace) (int, error) {
	reply := make(chan spawnResult, 1)
	req := spawnRequest{spawnSpec: spec, spawnPlace: place}
	s.reqs <- func() {
		pid, err := forkExec(req, s.stdin, s.ambient, s.nproc)
		reply <- spawnResult{pid: pid, err: err}
	}
	r := <-reply
	return r.pid, r.err
}

// exec replaces the master with the program at path, on the spawner's
// thread: the children's parent-death signal stays with it, and they stay
// the children of the same pid. The thread's ambient capabilities are
// raised again first, so the new program starts with those the master
// was given, and the guard's listener stays open across the exec, at the
// same number, for the new master to adopt (adoptGuard). It returns only
// when the exec fails, with the thread as it was.
func (s *spawner) exec(path string, argv, env []string) error {
	reply := make(chan error, 1)
	s.reqs <- func() { reply <- s.execHere(path, argv, env) }
	return <-reply
}

func (s *spawner) execHere(path string, argv, env []string) error {
	if err := raiseAmbient(s.ambient); err != nil {
		dropAmbient()
		return fmt.Errorf("exec %s: raise the master's ambient capabilities again: %w", path, err)
	}
	fd, _ := s.guardListener()
	if fd >= 0 {
		if err := setCloseOnExec(fd, false); err != nil {
			dropAmbient()
			return fmt.Errorf("exec %s: keep the seccomp listener open: %w", path, err)
		}
		s.answerer.pause()
	}
	err := syscall.Exec(path, argv, env)
	if fd >= 0 {
		s.answerer.resume()
		setCloseOnExec(fd, true)
	}
	dropAmbient()
	return fmt.Errorf("exec %s: %w", path, err)
}

// guardListener returns the reuseport guard's listener, which an upgrade
// hands to the new master (adoptGuard). fd is -1 when there is none: why
// then says why the filter on the thread refuses the guarded calls itself
// (the new master would be refused its own steering program: no upgrade
// in place), or is "" when the thread has no filter at all (guardErr):
// the new master installs its own.
func (s *spawner) guardListener() (fd int, why string) {
	if s.answerer != nil {
		return s.answerer.fd, ""
	}
	return -1, s.noListener
}

// stop ends the spawner's thread (or gives the main thread back to
// RunMain) and the guard's answerer.
func (s *spawner) stop() {
	close(s.reqs)
	if s.answerer != nil {
		s.answerer.stop()
	}
}

func forkExec(req spawnRequest, stdin *os.File, ambient []uintptr, nproc *nprocLimit) (int, error) {
	// Every descriptor of the master is close-on-exec; these are the only
	// ones a child inherits.
	stdout, stderr := os.Stdout, os.Stderr
	if req.stdout != nil {
		stdout, stderr = req.stdout, req.stderr
	}
	files := []uintptr{stdin.Fd(), stdout.Fd(), stderr.Fd()}
	for _, fd := range req.extra {
		files = append(files, uintptr(fd))
	}
	sys := &syscall.SysProcAttr{
		// A process group of its own keeps a terminal's Ctrl-C away from
		// the children: the master decides how they stop.
		Setpgid: true,
		// Set after the identity switch, which would clear it.
		Pdeathsig: syscall.SIGTERM,
	}
	if req.cgroupFD >= 0 {
		// Forked straight into its cgroup (clone3 CLONE_INTO_CGROUP):
		// nothing it forks can be outside it, even for an instant.
		sys.UseCgroupFD, sys.CgroupFD = true, req.cgroupFD
	}
	uid := os.Getuid()
	switch {
	case req.id == nil:
		// The children are the master's own kind: as its own exec
		// would, they keep its ambient capabilities (systemd's
		// AmbientCapabilities=CAP_NET_BIND_SERVICE, say).
		sys.AmbientCaps = ambient
	default:
		// Another identity gets no capability of the master's, only the
		// one it needs to bind a low port itself.
		sys.Credential = req.id.credential()
		uid = int(sys.Credential.Uid)
		if req.id.bindCap {
			sys.AmbientCaps = []uintptr{capNetBindService}
		}
	}
	pid, err := nproc.forkWith(uid, func() (int, error) {
		return syscall.ForkExec(req.path, req.argv, &syscall.ProcAttr{Env: req.env, Files: files, Sys: sys})
	})
	if err != nil {
		return 0, fmt.Errorf("exec %s: %w", req.argv[0], explainFork(err, uid, nproc))
	}
	return pid, nil
}

// childEnv returns the master's environment without the variables that
// belong to the master alone (its own sd_notify socket, watchdog and
// socket activation, and every PREFORK_* setting), plus the child's own,
// which replace the master's of the same name: a variable twice in an
// environment is read as its first value by some programs (Go's own
// os.Getenv) and its last by others.
func childEnv(base []string, own map[string]string) []string {
	env := make([]string, 0, len(base)+len(own))
	for _, kv := range base {
		key, _, _ := strings.Cut(kv, "=")
		if _, ok := own[key]; ok {
			continue
		}
		if strings.HasPrefix(key, "PREFORK_") || masterOwned(key) {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range own {
		env = append(env, k+"="+v)
	}
	return env
}

// setCloseOnExec sets or clears FD_CLOEXEC on fd.
func setCloseOnExec(fd int, on bool) error {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return err
	}
	if on {
		flags |= unix.FD_CLOEXEC
	} else {
		flags &^= unix.FD_CLOEXEC
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags)
	return err
}
