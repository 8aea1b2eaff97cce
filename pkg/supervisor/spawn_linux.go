package supervisor

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
)

// spawner starts children from one goroutine locked to its OS thread for
// the life of the supervisor. The children's parent-death signal is tied to
// the thread that forked them, not to the process: forking from whatever
// thread the Go scheduler picks would SIGTERM a child whenever the runtime
// retires that thread. With one thread that outlives every child, the signal
// fires exactly when the master dies.
type spawner struct {
	reqs chan spawnRequest
	// guardErr says why the reuseport guard (seccomp_linux.go) is not on
	// the children; nnp that installing it set no_new_privs on them.
	guardErr error
	nnp      bool
	// nproc is the master's RLIMIT_NPROC as its children get it; nil
	// when the limit does not apply to the master.
	nproc *nprocLimit
}

type spawnRequest struct {
	spawnSpec
	spawnPlace
	reply chan spawnResult
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
func startSpawner(stdin *os.File, nproc *nprocLimit) *spawner {
	s := &spawner{reqs: make(chan spawnRequest), nproc: nproc}
	ready := make(chan struct{})
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends the
		// thread, which is only right once no child is left.
		runtime.LockOSThread()
		// Ambient capabilities pass through exec, also to a child of
		// another identity. Capabilities are per thread: this one drops
		// the master's ambient set, and each child gets back only what it
		// should (see forkExec); the master's other threads keep theirs.
		ambient := dropAmbient()
		// Filters are per thread too: every child of this thread is
		// forbidden to replace the steering program, the master is not.
		s.nnp, s.guardErr = installGuard()
		close(ready)
		for req := range s.reqs {
			pid, err := forkExec(req, stdin, ambient, s.nproc)
			req.reply <- spawnResult{pid: pid, err: err}
		}
	}()
	<-ready
	return s
}

// spawn starts the program of spec, with its descriptors extra as fd 3, 4
// and so on, and returns its pid. The caller owns reaping.
func (s *spawner) spawn(spec spawnSpec, place spawnPlace) (int, error) {
	reply := make(chan spawnResult, 1)
	s.reqs <- spawnRequest{spawnSpec: spec, spawnPlace: place, reply: reply}
	r := <-reply
	return r.pid, r.err
}

func (s *spawner) stop() { close(s.reqs) }

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
