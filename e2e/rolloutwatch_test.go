package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// rolloutStatus is GET /status with the reload in progress.
type rolloutStatus struct {
	statusReply
	Reload *struct {
		Strategy          string  `json:"strategy"`
		Phase             string  `json:"phase"`
		Generation        int     `json:"generation"`
		Slots             int     `json:"slots"`
		SlotsDone         int     `json:"slots_done"`
		Canary            int     `json:"canary"`
		CanaryLeftSeconds float64 `json:"canary_left_seconds"`
		ElapsedSeconds    float64 `json:"elapsed_seconds"`
	} `json:"reload"`
}

// rolloutStatusClient is statusClient with the reload's fields.
func rolloutStatusClient(t *testing.T, m *master) func(context.Context) (rolloutStatus, error) {
	return statusClient[rolloutStatus](t, m.control, 5*time.Second)
}

// liveChildren returns the master's child processes that have not ended
// (a zombie has), whatever the master's table says.
func liveChildren(masterPID int) []int {
	return testkit.AliveOf(testkit.ChildrenOf(masterPID))
}

// rolloutWatch samples a master while reloads run: the number of its
// live child processes every 2 ms, from /proc, and its status every
// 20 ms. The surge a rollout allows is of children starting or ready
// (status); the processes also count the old children still draining,
// which may take up to --drain-timeout each.
type rolloutWatch struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// maxLive is the most live children seen at once; maxLiveWho says
	// who they were.
	maxLive    int
	maxLiveWho string
	// gens is the status' generation, each change of it in order.
	gens []int
	// phases counts the samples of a reload in each phase; slotsDone is
	// slots_done, each change of it in order while a reload runs (0
	// again at the next reload's start).
	phases    map[string]int
	slotsDone []int
	// reloads are the samples with a reload in progress.
	reloads []rolloutStatus
	// mixed counts samples with ready children of two generations.
	mixed int
	// maxActive is the most children starting or ready (not draining)
	// in one status sample; maxActiveWho lists that sample's rows.
	maxActive    int
	maxActiveWho string
	// statusErrs counts failed status requests; lastErr is the latest.
	statusErrs int
	lastErr    error
	samples    int
}

// watchRollout starts sampling m; stop ends it (also at cleanup).
func watchRollout(t *testing.T, m *master) *rolloutWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &rolloutWatch{cancel: cancel, phases: map[string]int{}}
	status := rolloutStatusClient(t, m)
	pid := m.cmd.Process.Pid
	w.wg.Go(func() {
		for tk := time.NewTicker(2 * time.Millisecond); next(ctx, tk); {
			live := liveChildren(pid)
			w.mu.Lock()
			if len(live) > w.maxLive {
				// Described now: they may be gone when the test reports.
				w.maxLive, w.maxLiveWho = len(live), commands(live)
			}
			w.mu.Unlock()
		}
	})
	w.wg.Go(func() {
		for tk := time.NewTicker(20 * time.Millisecond); next(ctx, tk); {
			st, err := status(ctx)
			if ctx.Err() != nil {
				return
			}
			w.record(st, err)
		}
	})
	t.Cleanup(w.stop)
	return w
}

func (w *rolloutWatch) record(st rolloutStatus, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.statusErrs++
		w.lastErr = err
		return
	}
	w.samples++
	if len(w.gens) == 0 || w.gens[len(w.gens)-1] != st.Generation {
		w.gens = append(w.gens, st.Generation)
	}
	if r := st.Reload; r != nil {
		w.phases[r.Phase]++
		w.reloads = append(w.reloads, st)
		if len(w.slotsDone) == 0 || w.slotsDone[len(w.slotsDone)-1] != r.SlotsDone {
			w.slotsDone = append(w.slotsDone, r.SlotsDone)
		}
	}
	ready := map[int]bool{}
	for _, c := range st.Children {
		if c.State == "ready" {
			ready[c.Generation] = true
		}
	}
	if len(ready) > 1 {
		w.mixed++
	}
	active := 0
	for _, c := range st.Children {
		if c.State == "starting" || c.State == "ready" {
			active++
		}
	}
	if active > w.maxActive {
		w.maxActive = active
		var b strings.Builder
		for _, c := range st.Children {
			fmt.Fprintf(&b, "\n  slot %d generation %d pid %d %s", c.Slot, c.Generation, c.PID, c.State)
		}
		w.maxActiveWho = b.String()
	}
}

// surge returns the most children starting or ready at once, in a status
// sample, and that sample's rows.
func (w *rolloutWatch) surge() (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxActive, w.maxActiveWho
}

// stop ends the sampling and waits for it.
func (w *rolloutWatch) stop() {
	w.cancel()
	w.wg.Wait()
}

// peak returns the most live children seen at once, and who they were.
func (w *rolloutWatch) peak() (int, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxLive, w.maxLiveWho
}

func (w *rolloutWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("peak %d live children, %d starting or ready; %d status samples (%d failed, last %v): generations %v, phases %v, slots_done %v, %d with two generations ready",
		w.maxLive, w.maxActive, w.samples, w.statusErrs, w.lastErr, w.gens, w.phases, w.slotsDone, w.mixed)
}

// commands describes pids for a failure message: each one's command
// line and generation.
func commands(pids []int) string {
	var b strings.Builder
	for _, pid := range pids {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		gen := "?"
		for _, kv := range environOf(pid) {
			if g, ok := strings.CutPrefix(kv, "PREFORK_GENERATION="); ok {
				gen = g
			}
		}
		fmt.Fprintf(&b, "\n  %d (generation %s): %s", pid, gen,
			strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "))
	}
	return b.String()
}

// environOf returns pid's environment, empty if it is gone.
func environOf(pid int) []string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	return strings.Split(string(data), "\x00")
}
