//go:build !linux

package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/prefork/prefork/pkg/metrics"
	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// The supervisor relies on Linux: SO_PASSCRED, close_range, parent-death
// signals, SO_REUSEPORT groups. Elsewhere it compiles, and New fails with
// errUnsupported.

var errUnsupported = errors.New("prefork supervises on Linux only")

const notifyMaxDatagram = 4096

var credentialsSpace = 0

type notifyServer struct{ addr string }

func listenNotify() (*notifyServer, error)                       { return nil, errUnsupported }
func (*notifyServer) read(_, _ []byte) (int, int, []byte, error) { return 0, -1, nil, errUnsupported }
func (*notifyServer) setReadDeadline(time.Time) error            { return errUnsupported }
func (*notifyServer) close() error                               { return nil }
func (*Supervisor) foldConnections(*steer.Steerer)               {}
func (*Supervisor) snapshotConnections(*metrics.Snapshot)        {}

type spawner struct{}

// RunMain runs main: off Linux there is no spawner to lend a thread to.
func RunMain(main func() int) int { return main() }

func startSpawner(*os.File) *spawner          { return &spawner{} }
func (*spawner) spawn(spawnSpec) (int, error) { return 0, errUnsupported }
func (*spawner) stop()                        {}

type socketSet struct {
	steer  bool
	retire func(*steer.Steerer)
	store  *fdStore
}

// fdStore holds nothing off Linux.
type fdStore struct{}

func openFDStore(*slog.Logger) *fdStore { return nil }
func (*fdStore) sort(Config)            {}
func (*fdStore) holds(string) bool      { return false }
func (*fdStore) closeKept()             {}
func (*socketSet) keepStored()          {}

func newSocketSet() *socketSet                               { return &socketSet{} }
func (*socketSet) ensure(Listeners, int) error               { return errUnsupported }
func (*socketSet) has(string) bool                           { return false }
func (*socketSet) fd(string, int) (int, error)               { return -1, errUnsupported }
func (*socketSet) release(func(string, int) bool)            {}
func (*socketSet) closeAll()                                 {}
func closeOnExecAll() error                                  { return errUnsupported }
func childEnv(base []string, own map[string]string) []string { return base }

// osProcs starts nothing off Linux; New fails before it is used.
type osProcs struct {
	stdin *os.File
	log   *slog.Logger
}

func (*osProcs) run(func()) func()                   { return func() {} }
func (*osProcs) start(spawnSpec) (int, error)        { return 0, errUnsupported }
func (*osProcs) signal(int, unix.Signal, bool) error { return errUnsupported }
func (*osProcs) reap(func(exitStatus))               {}
func (*osProcs) parent(int) (int, error)             { return 0, errUnsupported }
func (*osProcs) rss(int) (uint64, error)             { return 0, errUnsupported }
func (*osProcs) release(int)                         {}
func (*osProcs) cpu(int) (time.Duration, bool)       { return 0, false }

// ShimCommand is the first argument that makes the master's binary act as
// the exec shim of master socket mode; Linux only.
const ShimCommand = "__prefork_exec"

const envShimParent = "PREFORK_SHIM_PARENT"

// ExecShim is Linux only.
func ExecShim([]string) error { return errUnsupported }

func (*socketSet) inode(string, int) uint64 { return 0 }

func (*socketSet) steerer(string) *steer.Steerer          { return nil }
func (*socketSet) renew(string, int) (bool, error)        { return false, nil }
func (*socketSet) acceptQueue(string, int) (uint32, bool) { return 0, false }

type identity struct {
	name, user, home string
	uid, gid         uint32
	groups           []uint32
	bindCap          bool
}

func resolveIdentity(Config) (*identity, error) { return nil, errUnsupported }

// execShimPath is Linux only; the spawner fails before using it.
func execShimPath() string { return "/proc/self/exe" }

type noObserver struct{}

func newObserver(*osProcs) observer                        { return noObserver{} }
func (noObserver) waiting(context.Context, waitSpec) error { return errUnsupported }
func (noObserver) addressInUse(Listener) ([]int, bool)     { return nil, false }
func (noObserver) freeze(context.Context, []int) (func() error, bool, error) {
	return func() error { return nil }, false, errUnsupported
}
func (noObserver) take(context.Context, int, string) (int, uint64, error) {
	return -1, 0, errUnsupported
}
func closeFD(int) {}

// takenSet holds nothing off Linux.
type takenSet struct {
	on        bool
	noMigrate bool
	off       map[string]string
	steerers  map[string]*steer.Steerer
	retire    func(*steer.Steerer)
}

func newTakenSet() *takenSet                                      { return &takenSet{} }
func (*takenSet) steerer(string) *steer.Steerer                   { return nil }
func (*takenSet) add(string, int, int, int, uint64) (bool, error) { return false, errUnsupported }
func (*takenSet) drop(int)                                        {}
func (*takenSet) turnOff(string, string) bool                     { return false }
func (*takenSet) acceptQueue(string, int) (uint32, bool)          { return 0, false }
func (*takenSet) holder(string, int) int                          { return 0 }
func (*takenSet) inode(string, int) uint64                        { return 0 }
func (*takenSet) requeue(string, int) (uint32, error)             { return 0, errUnsupported }
func (*takenSet) anyFD(string) int                                { return -1 }
func (*takenSet) release(func(string) bool)                       {}
func (*takenSet) closeAll()                                       {}

func (*socketSet) requeue(string, int) (uint32, error) { return 0, errUnsupported }

type outputFile struct{ PID, Slot, Out, Err int }

type adoptedGuard struct{}

func adoptGuard(int, bool, *slog.Logger) (*adoptedGuard, error) { return nil, errUnsupported }
func (*Supervisor) captureFDs(*upgradeState) error              { return errUnsupported }
func (*Supervisor) adoptFDs(*upgradeState) error                { return errUnsupported }
func (*socketSet) held(string, int) int                         { return -1 }

type osUpgrader struct{ procs *osProcs }

func (osUpgrader) open(string) (newBinary, error) { return nil, errUnsupported }
func (*Supervisor) unsteer() func()               { return func() {} }

func checkSealed(int) error                                 { return errUnsupported }
func ownChildren(c []childFile, _ *slog.Logger) []childFile { return c }
