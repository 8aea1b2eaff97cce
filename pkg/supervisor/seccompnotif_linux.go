package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The reuseport guard's filter (seccomp_linux.go) stops a thread that
// attaches or detaches a reuseport program and sends the master a
// notification on the filter's listener; the thread waits until the master
// answers. The master answers every one: a thread of its own goes on with
// its call (SECCOMP_USER_NOTIF_FLAG_CONTINUE), anyone else's call fails
// with EPERM. Before an upgrade only the spawner's thread and the children
// have the filter, so only the children ask, and are refused; after one,
// every thread of the new master has it too, and its own steering
// attaches go through.
//
// Letting a call go on is safe only for a caller whose memory nobody else
// can change between the answer and the call (seccomp_unotify(2)): here
// only the master's own threads, which are the master.
//
// Once the listener is closed (the master is gone), the kernel fails every
// guarded call with ENOSYS: still refused.

// seccompNotif is struct seccomp_notif (linux/seccomp.h).
type seccompNotif struct {
	id  uint64
	pid uint32   // the caller's thread id in the master's pid namespace; 0 when not visible there
	_   uint32   // flags
	_   [64]byte // struct seccomp_data: the filter has looked at it
}

// seccompNotifResp is struct seccomp_notif_resp.
type seccompNotifResp struct {
	id    uint64
	_     int64 // val: the call's result, when it does not go on
	error int32
	flags uint32
}

// The ioctls' numbers encode these sizes: the structs must match.
var (
	_ [80 - unsafe.Sizeof(seccompNotif{})]byte
	_ [unsafe.Sizeof(seccompNotif{}) - 80]byte
	_ [24 - unsafe.Sizeof(seccompNotifResp{})]byte
	_ [unsafe.Sizeof(seccompNotifResp{}) - 24]byte
)

// refusalsSayEvery is how often at most the answerer logs the guarded
// calls it refused: a child that floods it gets its answers, and one line
// a minute.
const refusalsSayEvery = time.Minute

// guardAnswerer answers, in a goroutine of its own, every notification of
// a reuseport guard's listener. It owns the listener: stop closes it.
type guardAnswerer struct {
	fd   int
	log  *slog.Logger
	self int // the master's pid, which its threads share

	wake     int           // eventfd that pause writes
	done     chan struct{} // closed when run returns
	stopOnce sync.Once
	tally    refusals
	rounds   atomic.Uint64 // polls returned, for the tests: it must not spin
}

// startAnswerer starts answering the notifications of listener fd, which
// it takes over.
func startAnswerer(fd int, log *slog.Logger) (*guardAnswerer, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("answer the seccomp filter: eventfd: %w", err)
	}
	a := &guardAnswerer{fd: fd, log: log, self: os.Getpid(), wake: wake, tally: refusals{every: refusalsSayEvery}}
	a.resume()
	return a, nil
}

// resume starts the goroutine that answers.
func (a *guardAnswerer) resume() {
	a.done = make(chan struct{})
	go a.run(a.done)
}

// pause ends the goroutine that answers, between two notifications, and
// leaves the listener open: before an exec, so that no notification is
// taken and left unanswered by a process that is being replaced; the
// callers wait for the new master's answer.
func (a *guardAnswerer) pause() {
	one := [8]byte{1} // a nonzero uint64 in either byte order
	unix.Write(a.wake, one[:])
	<-a.done
	var count [8]byte
	unix.Read(a.wake, count[:]) // nonzero: returns at once, and resets it
}

// stop ends the answerer and closes the listener: guarded calls fail with
// ENOSYS from then on, instead of waiting for an answer that never comes.
func (a *guardAnswerer) stop() {
	a.stopOnce.Do(func() {
		a.pause()
		unix.Close(a.wake)
		unix.Close(a.fd)
	})
}

// run waits in poll(2) for a notification or for pause, and answers each.
func (a *guardAnswerer) run(done chan struct{}) {
	defer close(done)
	fds := []unix.PollFd{{Fd: int32(a.fd), Events: unix.POLLIN}, {Fd: int32(a.wake), Events: unix.POLLIN}}
	for {
		timeout := -1 // no refusal to say: wait for as long as it takes
		if wait, pending := a.tally.due(time.Now()); pending {
			timeout = int(wait.Milliseconds()) + 1
		}
		_, err := unix.Poll(fds, timeout)
		a.rounds.Add(1)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			// ENOMEM: try again later rather than spin.
			a.log.Warn("the seccomp filter's answerer cannot poll its listener; guarded calls wait", "err", err)
			time.Sleep(time.Second)
			continue
		}
		if fds[1].Revents != 0 {
			a.tally.say(a.log, time.Now(), true)
			return
		}
		switch ev := fds[0].Revents; {
		case ev&unix.POLLIN != 0:
			a.answer()
		case ev&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0:
			// No task uses the filter any more: nothing will ask. Poll
			// the eventfd alone (poll skips a negative fd).
			fds[0].Fd = -1
		}
		a.tally.say(a.log, time.Now(), false)
	}
}

// answer receives one notification and answers it.
func (a *guardAnswerer) answer() {
	var n seccompNotif // RECV wants it zeroed
	if err := notifIoctl(a.fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&n)); err != nil {
		// ENOENT: the caller was killed (or interrupted) since the poll.
		return
	}
	tid := int(n.pid)
	resp := seccompNotifResp{id: n.id, error: -int32(unix.EPERM)}
	// The caller waits in its call, so its tid is still its own; ID_VALID
	// after the check makes sure it is still the caller that waits (not a
	// thread of ours that took a freed tid).
	own := a.ownThread(tid) && notifIoctl(a.fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&n.id)) == nil
	if own {
		resp.error, resp.flags = 0, unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
	}
	err := notifIoctl(a.fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp))
	if own && errors.Is(err, unix.EINVAL) {
		// A kernel without SECCOMP_USER_NOTIF_FLAG_CONTINUE (before
		// 5.5; installGuard does not ask for a listener there): a
		// refusal is better than a thread waiting for good.
		resp.error, resp.flags = -int32(unix.EPERM), 0
		notifIoctl(a.fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp))
		own = false
	}
	if !own {
		a.tally.add(tid)
	}
}

// ownThread says whether tid is a thread of the master: tgkill with signal
// 0 checks that it belongs to our thread group and sends nothing. A
// caller outside our pid namespace comes as 0.
func (a *guardAnswerer) ownThread(tid int) bool {
	return tid > 0 && unix.Tgkill(a.self, tid, 0) == nil
}

// notifIoctl makes one of the listener's ioctls.
func notifIoctl(fd int, req uint, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

// refusals counts the guarded calls refused since they were last said, by
// caller, and says them at most once per every.
type refusals struct {
	every time.Duration
	last  time.Time   // when they were last said
	by    map[int]int // refused calls by thread id
}

func (r *refusals) add(tid int) {
	if r.by == nil {
		r.by = map[int]int{}
	}
	r.by[tid]++
}

// due says whether refusals are waiting to be said, and how long until
// they may be.
func (r *refusals) due(now time.Time) (wait time.Duration, pending bool) {
	if len(r.by) == 0 {
		return 0, false
	}
	return max(r.last.Add(r.every).Sub(now), 0), true
}

// say logs the refusals counted, when it is time or when final.
func (r *refusals) say(log *slog.Logger, now time.Time, final bool) {
	wait, pending := r.due(now)
	if !pending || wait > 0 && !final {
		return
	}
	total, byPID := 0, map[int]int{}
	for tid, n := range r.by {
		total += n
		byPID[processOf(tid)] += n
	}
	log.Warn("refused processes' calls to replace or remove the steering program of their listeners' group (SO_ATTACH_REUSEPORT_*, SO_DETACH_REUSEPORT_BPF): EPERM",
		"calls", total, "by_pid", formatCounts(byPID))
	r.by, r.last = nil, now
}

// processOf returns the pid of the process thread tid belongs to, or tid
// itself when it is gone (or not visible).
func processOf(tid int) int {
	if tid <= 0 {
		return tid
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return tid
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if pid, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return pid
			}
		}
	}
	return tid
}

// formatCounts writes counts as "pid=n pid=n", the largest first, at most
// eight and the rest summed (0 is a caller outside the pid namespace).
func formatCounts(counts map[int]int) string {
	pids := make([]int, 0, len(counts))
	for pid := range counts {
		pids = append(pids, pid)
	}
	slices.SortFunc(pids, func(a, b int) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return a - b
	})
	var b strings.Builder
	rest := 0
	for i, pid := range pids {
		if i >= 8 {
			rest += counts[pid]
			continue
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d=%d", pid, counts[pid])
	}
	if rest > 0 {
		fmt.Fprintf(&b, " others=%d", rest)
	}
	return b.String()
}

// adoptedGuard is the reuseport guard a master inherits from the master it
// replaced (spawner.exec): the filter is on its main thread, which was the
// old spawner's thread, and so on every thread of the new master; the
// listener is still open at the number the old master had.
type adoptedGuard struct {
	main     *mainClaim // the main thread, for the spawner
	answerer *guardAnswerer
	nnp      bool // the old spawner set no_new_privs
}

// adoptGuard starts answering the inherited listener fd at once: every
// thread of the new master is filtered, and its own first guarded call
// (attaching a steering program) waits for the answer, so call it before
// any. It claims the main thread, where the spawner that forked the
// adopted children ran and where the new spawner must run (RunMain), and
// hands both to startSpawner (osProcs.guard), which installs no second
// filter: a second one refusing with EPERM would win over this one's
// notifications. nnp is whether the old spawner set no_new_privs. A
// master that fails after adoptGuard exits: there is nothing to undo.
func adoptGuard(fd int, nnp bool, log *slog.Logger) (*adoptedGuard, error) {
	if target, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); target != "anon_inode:seccomp notify" {
		return nil, fmt.Errorf("adopt the seccomp filter: fd %d is not a seccomp listener (%q)", fd, target)
	}
	main := claimMainThread()
	if main == nil {
		return nil, errors.New("adopt the seccomp filter: the main thread, where the children's parent-death signal is tied, is not free for the spawner (master not run through supervisor.RunMain)")
	}
	a, err := startAnswerer(fd, log)
	if err != nil {
		unclaimMainThread()
		return nil, err
	}
	return &adoptedGuard{main: main, answerer: a, nnp: nnp}, nil
}
