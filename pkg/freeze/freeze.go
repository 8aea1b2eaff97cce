package freeze

import (
	"sync"

	"github.com/prefork/prefork/pkg/cgroup"
)

// Target is one child to freeze: its cgroup of its own, if it has one, else
// its processes.
type Target struct {
	// Cgroup is the child's group; when set, Pids is not used, as the
	// group holds every process of the child, its forks included.
	Cgroup *cgroup.Group
	// Pids are the child's processes, stopped with SIGSTOP, each with all
	// its threads. The caller passes only pids it has not reaped (see the
	// package's limits).
	Pids []int
}

// Frozen is what one Freeze did, for its Thaw: the groups it froze and the
// processes it stopped, not those someone else had frozen or stopped.
// Its methods may be called from any goroutine.
type Frozen struct {
	mu       sync.Mutex
	groups   []*cgroup.Group // frozen by Freeze, thawed by Thaw
	stopped  []int           // sent SIGSTOP by Freeze, sent SIGCONT by Thaw
	complete bool
	thawed   bool
}

// Complete reports whether Freeze saw every target stopped: each group
// frozen and each process's threads stopped (or the target gone). When it
// is false, a child may still be running, and the caller should not count
// on the freeze.
func (f *Frozen) Complete() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.complete
}
