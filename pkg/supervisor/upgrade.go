package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prefork/prefork/pkg/version"
)

// Upgrading the master in place (`master upgrade`, SIGUSR2, POST
// /upgrade), as nginx's USR2 and HAProxy's master re-exec do, but keeping
// the pid: the loop runs the new binary's check (it must run, and read
// this state), waits for a quiet moment (no reload, recycle or rescue
// under way), writes its state (upgradestate.go) and execs the new binary
// on the thread that forked the children, whose parent-death signal is
// tied to it. The new master reads the state (Resume) and goes on with
// the same children, sockets and counts. A binary that fails its check
// leaves this master as it was.

// UpgradeCheckFlag is the flag of `master run` that makes a new binary
// check the state at UpgradeStateEnv instead of running.
const UpgradeCheckFlag = "upgrade-check"

// ErrUpgradeRejected wraps why an upgrade was refused before the exec;
// nothing changed.
var ErrUpgradeRejected = errors.New("upgrade rejected")

// Bounds of an upgrade's steps.
const (
	// upgradeCheckTimeout bounds the new binary's check.
	upgradeCheckTimeout = 10 * time.Second
	// upgradeQuietTimeout bounds the wait for no reload, recycle or
	// rescue to be under way.
	upgradeQuietTimeout = 5 * time.Second
	// upgradeQuietPoll is how often that wait looks again.
	upgradeQuietPoll = 20 * time.Millisecond
	// upgradeAnswerTimeout bounds the wait for the caller to have sent
	// its answer before the exec ends its connection.
	upgradeAnswerTimeout = 2 * time.Second
)

// upgrader opens new master binaries (upgrade_linux.go); the loop's
// tests fake it.
type upgrader interface {
	// open opens binary and vets it (a regular file of root's or the
	// master's user, that others may not write). The check and the exec
	// run that file, whatever is at its path by then.
	open(binary string) (newBinary, error)
}

// newBinary is a new master binary, opened.
type newBinary interface {
	// check runs it in check mode on state and returns the version it
	// reports, or why it refused.
	check(ctx context.Context, state []byte) (version string, err error)
	// exec replaces the master by it, handing it state and the
	// descriptors keep. It returns only on failure, with everything as
	// it was.
	exec(state []byte, keep []int) error
	// close lets it go.
	close()
}

// UpgradeResult is the outcome of an upgrade request up to the exec.
type UpgradeResult struct {
	// From and To are the versions of this binary and of the new one.
	From, To string
	// PID is the master's, which the new binary keeps.
	PID int
	// Err says why the upgrade was refused; nil: the exec follows once
	// Answered is called (or after upgradeAnswerTimeout).
	Err error

	answered chan struct{}
}

// Answered lets the exec go ahead: the caller has sent its answer, which
// the exec would otherwise cut.
func (r UpgradeResult) Answered() {
	if r.answered != nil {
		close(r.answered)
	}
}

// upgradeRun is the upgrade under way, owned by the loop.
type upgradeRun struct {
	running  bool
	binary   string
	bin      newBinary // once opened
	to       string    // the new binary's version, once checked
	reply    chan<- UpgradeResult
	deadline time.Time // of the wait for quiet
	lastErr  string    // why the last exec failed, for master status
}

type (
	// upgradeChecked: the new binary's check ended.
	upgradeChecked struct {
		bin     newBinary // nil when it could not be opened
		version string
		err     error
	}
	// upgradeRetry: look again whether it is quiet enough to exec.
	upgradeRetry struct{}
)

// requestUpgrade starts an upgrade to binary ("": the master's own path,
// where a package manager put the new one); reply, if not nil, gets the
// outcome up to the exec.
func (s *Supervisor) requestUpgrade(binary string, reply chan<- UpgradeResult) {
	if binary == "" {
		binary = s.self
	}
	refuse := func(err error) {
		s.tally.upgrades["rejected"]++
		s.log.Error("upgrade rejected; the master runs on as it was", "binary", binary, "err", err)
		if reply != nil {
			reply <- UpgradeResult{From: version.String(), PID: s.pid(), Err: fmt.Errorf("%w: %w", ErrUpgradeRejected, err)}
		}
	}
	switch {
	case s.stopping != 0:
		refuse(ErrStopping)
		return
	case s.upgrade.running:
		refuse(errors.New("an upgrade is already under way"))
		return
	case !s.reload.idle():
		refuse(errors.New("a reload is under way: upgrade once it has ended"))
		return
	}
	if err := s.upgradable(); err != nil {
		refuse(err)
		return
	}
	st, err := s.captureState(binary)
	if err == nil {
		var data []byte
		if data, err = encodeState(st); err == nil {
			s.upgrade = upgradeRun{running: true, binary: binary, reply: reply, lastErr: s.upgrade.lastErr}
			s.log.Info("upgrade: checking the new binary", "binary", binary)
			go func() {
				// Opened here, off the loop: the path is the operator's,
				// and may be a fifo or on a hung filesystem.
				bin, err := s.env.upgrade.open(binary)
				var v string
				if err == nil {
					ctx, cancel := context.WithTimeout(context.Background(), upgradeCheckTimeout)
					v, err = bin.check(ctx, data)
					cancel()
				}
				if !s.sendOr(upgradeChecked{bin: bin, version: v, err: err}) && bin != nil {
					bin.close()
				}
			}()
			return
		}
	}
	refuse(err)
}

// upgradable says why this master cannot upgrade in place at all; nil
// when it can.
func (s *Supervisor) upgradable() error {
	if s.env.upgrade == nil {
		return errors.New("this master cannot upgrade in place here")
	}
	if h, ok := s.env.procs.(handsOn); ok {
		if err := h.handOnErr(); err != nil {
			return err
		}
	}
	return nil
}

// upgradeCheckDone acts on the end of the new binary's check.
func (s *Supervisor) upgradeCheckDone(ev upgradeChecked) {
	if !s.upgrade.running {
		if ev.bin != nil {
			ev.bin.close()
		}
		return
	}
	s.upgrade.bin = ev.bin
	if ev.err != nil {
		s.endUpgrade("rejected", fmt.Errorf("%w: %w", ErrUpgradeRejected, ev.err))
		return
	}
	s.upgrade.to = ev.version
	s.upgrade.deadline = s.env.clock.Now().Add(upgradeQuietTimeout)
	s.upgradeWhenQuiet()
}

// upgradeWhenQuiet execs once nothing is under way that the exec would
// cut (a reload's new generation, a recycle's successor, a rescue with
// children frozen), waiting for that at most upgradeQuietTimeout.
func (s *Supervisor) upgradeWhenQuiet() {
	if !s.upgrade.running {
		return
	}
	busy := s.upgradeBusy()
	switch {
	case s.stopping != 0 || s.stopAsked.Load():
		s.endUpgrade("rejected", fmt.Errorf("%w: %w", ErrUpgradeRejected, ErrStopping))
	case busy == "":
		s.execUpgrade()
	case !s.env.clock.Now().Before(s.upgrade.deadline):
		s.endUpgrade("rejected", fmt.Errorf("%w: still busy after %v: %s", ErrUpgradeRejected, upgradeQuietTimeout, busy))
	default:
		s.env.clock.AfterFunc(upgradeQuietPoll, func() { s.send(upgradeRetry{}) })
	}
}

// upgradeBusy says what is under way that an exec would cut; "" when
// nothing is.
func (s *Supervisor) upgradeBusy() string {
	if !s.reload.idle() {
		return "a reload is under way"
	}
	for i, sl := range s.cur.slots {
		if sl.successor != nil {
			return fmt.Sprintf("slot %d is being recycled", i)
		}
	}
	if len(s.steering.rescue.inFlight) > 0 {
		return "a stuck slot's queue is being rescued"
	}
	return ""
}

// execUpgrade writes the state and execs the new binary. It returns only
// if the exec failed.
func (s *Supervisor) execUpgrade() {
	if reply := s.upgrade.reply; reply != nil {
		answered := make(chan struct{})
		reply <- UpgradeResult{From: version.String(), To: s.upgrade.to, PID: s.pid(), answered: answered}
		s.upgrade.reply = nil
		select {
		case <-answered:
		case <-time.After(upgradeAnswerTimeout):
		}
	}
	if s.stopAsked.Load() {
		// A stop asked for while the loop waited: it wins, and the
		// loop handles it next.
		s.endUpgrade("rejected", fmt.Errorf("%w: %w", ErrUpgradeRejected, ErrStopping))
		return
	}
	// Taken last, so that nothing the loop did before the exec is
	// missing from it.
	st, err := s.captureState(s.upgrade.binary)
	var data []byte
	if err == nil {
		data, err = encodeState(st)
	}
	if err != nil {
		s.endUpgrade("failed", fmt.Errorf("write the state: %w", err))
		return
	}
	s.log.Info("upgrade: the new binary passed its check; exec", "binary", s.upgrade.binary, "from", version.String(),
		"to", s.upgrade.to, "children", len(st.Children))
	s.notifySystemd(fmt.Sprintf("RELOADING=1\nSTATUS=upgrading the master to %s\nMONOTONIC_USEC=%d", s.upgrade.to, monotonicMicros()))
	undo := s.unsteer()
	err = s.upgrade.bin.exec(data, st.descriptors())
	// Still here: the exec failed, and nothing changed.
	undo()
	if s.announced {
		s.notifySystemd("READY=1")
	}
	s.endUpgrade("failed", fmt.Errorf("exec %s: %w", s.upgrade.binary, err))
}

// endUpgrade ends the upgrade under way with err, counting it as result.
func (s *Supervisor) endUpgrade(result string, err error) {
	s.tally.upgrades[result]++
	msg := "upgrade failed; the master runs on as it was"
	if result == "rejected" {
		msg = "upgrade rejected; the master runs on as it was"
	}
	s.log.Error(msg, "binary", s.upgrade.binary, "err", err)
	if s.upgrade.reply != nil {
		s.upgrade.reply <- UpgradeResult{From: version.String(), To: s.upgrade.to, PID: s.pid(), Err: err}
	}
	if s.upgrade.bin != nil {
		s.upgrade.bin.close()
	}
	s.upgrade = upgradeRun{lastErr: err.Error()}
}

// descriptors returns every descriptor st names, which the exec must
// keep.
func (st *upgradeState) descriptors() []int {
	var fds []int
	for _, fd := range []int{st.Control, st.Metrics, st.Notify, st.Guard} {
		if fd >= 0 {
			fds = append(fds, fd)
		}
	}
	for _, so := range st.Sockets {
		fds = append(fds, so.FD)
	}
	for _, c := range st.Children {
		if c.Page >= 0 {
			fds = append(fds, c.Page)
		}
	}
	for _, o := range st.Outputs {
		for _, fd := range []int{o.Out, o.Err} {
			if fd >= 0 {
				fds = append(fds, fd)
			}
		}
	}
	return fds
}
