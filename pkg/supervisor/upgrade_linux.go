package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// captureFDs names in st the descriptors the new master takes over:
// master socket mode's listeners, the control socket, the metrics
// endpoint and the notify socket.
func (s *Supervisor) captureFDs(st *upgradeState) error {
	for k, h := range s.sockets.m {
		st.Sockets = append(st.Sockets, socketFile{Addr: k.addr, Slot: k.slot, FD: h.fd})
	}
	var err error
	if s.control != nil {
		if st.Control, err = connFD(s.control.(syscall.Conn)); err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
	}
	if s.metrics != nil {
		if st.Metrics, err = connFD(s.metrics.(syscall.Conn)); err != nil {
			return fmt.Errorf("metrics endpoint: %w", err)
		}
	}
	if st.Notify, err = connFD(s.notify.conn); err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	st.NotifyAddr = s.notify.addr
	return nil
}

// connFD returns the descriptor under c, which keeps owning it.
func connFD(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := raw.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// adoptFDs takes over the descriptors captureFDs named.
func (s *Supervisor) adoptFDs(st *upgradeState) (err error) {
	for _, so := range st.Sockets {
		if err := s.sockets.adopt(so.Addr, so.Slot, so.FD); err != nil {
			// Serving goes on, unsteered: the kernel's hash places
			// every connection, as with --steer off.
			s.log.Error("steering is off after the upgrade: a socket taken over could not be steered", "err", err)
			s.sockets.steer, s.steering.off = false, err.Error()
		}
	}
	// Without its control socket or metrics endpoint, the master still
	// supervises: said, not fatal.
	if st.Control >= 0 {
		if s.control, err = fileListener(st.Control, "control"); err != nil {
			s.log.Error("the control socket could not be taken over; the admin API is off until a restart", "err", err)
		}
	}
	if st.Metrics >= 0 {
		if s.metrics, err = fileListener(st.Metrics, "metrics"); err != nil {
			s.log.Error("the metrics endpoint could not be taken over; it is off until a restart", "err", err)
		}
	}
	f := os.NewFile(uintptr(st.Notify), "notify")
	c, err := net.FileConn(f)
	f.Close() // FileConn holds a copy
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return fmt.Errorf("notify socket: a %T", c)
	}
	s.notify = &notifyServer{conn: uc, addr: st.NotifyAddr}
	return nil
}

// fileListener takes over the listener at fd.
func fileListener(fd int, name string) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), name)
	l, err := net.FileListener(f)
	f.Close() // FileListener holds a copy
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return l, nil
}

// adopt takes over the listener of slot on addr at fd, which an old
// master held, and steers it as fd would be.
// The socket is kept whatever happens to its steering: the children
// serve on it, and a master that cannot resume has nowhere to go back to.
// The error says why it is not steered.
func (s *socketSet) adopt(addr string, slot, fd int) error {
	unix.CloseOnExec(fd)
	s.m[socketKey{addr: addr, slot: slot}] = &heldSocket{fd: fd}
	if s.steer {
		return s.steerSocket(addr, slot, fd)
	}
	return nil
}

// held returns the descriptor of the listener of slot on addr, or -1
// when the set has none; it binds nothing.
func (s *socketSet) held(addr string, slot int) int {
	if h, ok := s.m[socketKey{addr: addr, slot: slot}]; ok {
		return h.fd
	}
	return -1
}

// osUpgrader checks and execs new master binaries for real.
type osUpgrader struct{ procs *osProcs }

// checkOutputMax bounds what is kept of the check's output.
const checkOutputMax = 64 << 10

func (u osUpgrader) open(binary string) (newBinary, error) {
	if !filepath.IsAbs(binary) {
		return nil, fmt.Errorf("binary %q: not an absolute path", binary)
	}
	// O_NONBLOCK: a fifo at the path must not hang the open.
	fd, err := unix.Open(binary, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", binary, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", binary, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("%s is not a regular file", binary)
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		// The master would run, with its privileges, what another
		// user wrote.
		err = fmt.Errorf("%s belongs to uid %d, neither root nor the master's user", binary, st.Uid)
	case st.Mode&0o002 != 0:
		err = fmt.Errorf("%s is writable by every user", binary)
	case !isELF(fd):
		// A script would pass its check (run through /proc/PID/fd/N)
		// and fail its exec (through a descriptor closed by then, for
		// its interpreter), past the point of no return.
		err = fmt.Errorf("%s is not an ELF executable: give the master binary itself, not a script that runs it", binary)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &osBinary{procs: u.procs, name: binary, fd: fd}, nil
}

// osBinary is a new master binary, open: its check and its exec run the
// file opened, through /proc, whatever is at its path by then.
type osBinary struct {
	procs *osProcs
	name  string
	fd    int
}

func (b *osBinary) close() { unix.Close(b.fd) }

func (b *osBinary) check(ctx context.Context, state []byte) (string, error) {
	mfd, err := stateMemfd(state)
	if err != nil {
		return "", err
	}
	defer unix.Close(mfd)
	argv, err := upgradeArgv(b.name, true)
	if err != nil {
		return "", err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	env := upgradeEnv(3)
	files := []uintptr{b.procs.stdin.Fd(), w.Fd(), w.Fd(), uintptr(mfd)}
	out := make(chan []byte, 1)
	go func() {
		data, _ := io.ReadAll(io.LimitReader(r, checkOutputMax))
		io.Copy(io.Discard, r) // a flood past the limit must not block it
		r.Close()
		out <- data
	}()
	// The master's descriptor of the file, seen from the check process.
	path := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), b.fd)
	ws, err := b.procs.runHelper(ctx, path, argv, env, files)
	w.Close()
	// A process the check left behind may hold the pipe open: what it
	// has not written within a second is not waited for.
	r.SetReadDeadline(time.Now().Add(time.Second))
	data := <-out
	if err != nil {
		return "", fmt.Errorf("check %s: %w", b.name, err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return "", fmt.Errorf("check %s: %s: %s", b.name, describeExit(ws), lastLine(data))
	}
	v := strings.TrimSpace(string(firstLine(data)))
	if v == "" {
		return "", fmt.Errorf("check %s: it said no version", b.name)
	}
	return v, nil
}

func (b *osBinary) exec(state []byte, keep []int) error {
	mfd, err := stateMemfd(state)
	if err != nil {
		return err
	}
	argv, err := upgradeArgv(b.name, false)
	if err != nil {
		unix.Close(mfd)
		return err
	}
	keep = append(keep, mfd)
	for _, fd := range keep {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			restoreCloseOnExec(keep)
			unix.Close(mfd)
			return fmt.Errorf("keep descriptor %d: %w", fd, err)
		}
	}
	err = b.procs.spawner.exec(fmt.Sprintf("/proc/self/fd/%d", b.fd), argv, upgradeEnv(mfd))
	restoreCloseOnExec(keep)
	unix.Close(mfd)
	return err
}

// restoreCloseOnExec marks fds close-on-exec again after a failed exec.
func restoreCloseOnExec(fds []int) {
	for _, fd := range fds {
		unix.CloseOnExec(fd)
	}
}

// stateMemfd returns a sealed memfd holding state, close-on-exec.
func stateMemfd(state []byte) (int, error) {
	fd, err := unix.MemfdCreate("prefork-upgrade-state", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("state: memfd_create: %w", err)
	}
	for rest := state; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("state: write: %w", err)
		}
		rest = rest[n:]
	}
	seals := unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("state: seal: %w", err)
	}
	return fd, nil
}

// upgradeArgv returns the new master's arguments: this master's, with
// the check flag after `run` for a check.
func upgradeArgv(binary string, check bool) ([]string, error) {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		return nil, fmt.Errorf("the master was not started as `master run` (%q)", os.Args)
	}
	argv := append([]string{binary, "run"}, os.Args[2:]...)
	if check {
		argv = append([]string{binary, "run", "--" + UpgradeCheckFlag}, os.Args[2:]...)
	}
	return argv, nil
}

// upgradeEnv returns this master's environment for the new one, naming
// the state's descriptor.
func upgradeEnv(fd int) []string {
	env := []string{UpgradeStateEnv + "=" + strconv.Itoa(fd)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, UpgradeStateEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// firstLine and lastLine return the first and the last non-empty line of
// data.
func firstLine(data []byte) []byte {
	line, _, _ := bytes.Cut(bytes.TrimSpace(data), []byte("\n"))
	return line
}

func lastLine(data []byte) string {
	data = bytes.TrimSpace(data)
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[i+1:]
	}
	if len(data) == 0 {
		return "it said nothing"
	}
	return string(data)
}

// runHelper runs a process of the master's own (the check of a new
// binary) and waits for its end or ctx's, when it is killed. The loop's
// reaper hands its exit here instead of reporting it.
func (p *osProcs) runHelper(ctx context.Context, path string, argv, env []string, files []uintptr) (unix.WaitStatus, error) {
	done := make(chan unix.WaitStatus, 1)
	// Held across the fork, so that the reaper, which takes the lock
	// too, cannot reap the helper before it is known.
	p.helperMu.Lock()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{Env: env, Files: files,
		Sys: &syscall.SysProcAttr{Setpgid: true}})
	if err == nil {
		if p.helpers == nil {
			p.helpers = make(map[int]chan<- unix.WaitStatus)
		}
		p.helpers[pid] = done
	}
	p.helperMu.Unlock()
	if err != nil {
		return 0, err
	}
	select {
	case ws := <-done:
		return ws, nil
	case <-ctx.Done():
		unix.Kill(-pid, unix.SIGKILL)
		unix.Kill(pid, unix.SIGKILL)
		<-done
		return 0, fmt.Errorf("no answer within its deadline: %w", ctx.Err())
	}
}

// helperExited hands the exit of a helper to runHelper, and reports
// whether pid was one.
func (p *osProcs) helperExited(pid int, ws unix.WaitStatus) bool {
	p.helperMu.Lock()
	done, ok := p.helpers[pid]
	delete(p.helpers, pid)
	p.helperMu.Unlock()
	if ok {
		done <- ws
	}
	return ok
}

func (p *osProcs) handOnErr() error {
	if p.spawner == nil {
		return errors.New("the master has not started")
	}
	if _, why := p.spawner.guardListener(); why != "" {
		return fmt.Errorf("the children's seccomp guard would bind the new master too: %s", why)
	}
	return nil
}

func (p *osProcs) handOn() procsFile {
	fd, _ := p.spawner.guardListener()
	p.mu.Lock()
	defer p.mu.Unlock()
	f := procsFile{Guard: fd, NNP: p.spawner.nnp, CgroupToken: p.token, CgroupsMade: p.made,
		Cgroups: make(map[int]string, len(p.groups))}
	for pid, g := range p.groups {
		f.Cgroups[pid] = g.Dir
	}
	if p.output != nil {
		f.Outputs = p.output.handOn()
	}
	return f
}

func (p *osProcs) takeOver(f procsFile) {
	p.adopted = &f
	p.guard = f.guard
}

// unsteer empties the live steering programs' socket arrays just before
// the exec: a socket is in one program's array at a time, and the new
// master's programs take them. Until it attaches them, the kernel's hash
// places new connections. It returns what puts the sockets back, for an
// exec that failed.
func (s *Supervisor) unsteer() (undo func()) {
	type entry struct {
		st       *steer.Steerer
		slot, fd int
	}
	var put []entry
	programs := map[*steer.Steerer]bool{}
	for k, h := range s.sockets.m {
		if st := s.sockets.steerers[k.addr]; st != nil {
			put = append(put, entry{st, k.slot, h.fd})
			programs[st] = true
		}
	}
	for k, ts := range s.taken.bySlot {
		if st := s.taken.steerers[k.addr]; st != nil {
			put = append(put, entry{st, k.slot, ts.fd})
			programs[st] = true
		}
	}
	for st := range programs {
		st.SetSlots(0) // nothing to choose from: the kernel's hash
	}
	for _, e := range put {
		e.st.ClearSocket(e.slot)
	}
	return func() {
		for _, e := range put {
			if err := e.st.SetSocket(e.slot, e.fd); err != nil {
				s.log.Error("could not put a socket back under steering after the failed exec", "slot", e.slot, "err", err)
			}
		}
		s.steering.slots = -1 // set them again
		s.syncSteerSlots()
	}
}

// checkSealed refuses a state that is not the sealed memfd an old master
// writes: the variable that names it is in the environment, which any
// caller of the master sets.
func checkSealed(fd int) error {
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("descriptor %d is not a sealed memfd: %w", fd, err)
	}
	if want := unix.F_SEAL_WRITE | unix.F_SEAL_SEAL; seals&want != want {
		return fmt.Errorf("descriptor %d is not sealed against writes", fd)
	}
	return nil
}

// ownChildren keeps the children of the state that are children of this
// process: a state that names another process must not make the master
// signal it.
func ownChildren(children []childFile, log *slog.Logger) []childFile {
	self := os.Getpid()
	var own []childFile
	for _, c := range children {
		if ppid, err := parentPID(c.PID); err != nil || ppid != self {
			log.Warn("the state names a process that is not a child of this master; ignored", "pid", c.PID)
			continue
		}
		own = append(own, c)
	}
	return own
}

// isELF reports whether the file at fd starts as an ELF executable does.
func isELF(fd int) bool {
	var magic [4]byte
	n, err := unix.Pread(fd, magic[:], 0)
	return err == nil && n == 4 && string(magic[:]) == "\x7fELF"
}
