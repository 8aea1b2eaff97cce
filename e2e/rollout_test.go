package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// The rollouts of issue 15 end to end: rolling reloads (--reload-strategy
// rolling, --max-surge), their rollback, canary reloads, the cap on
// draining generations (--max-draining-generations) and the reload's
// progress in GET /status, with bin/master and the reference child.

// lightLoad runs runLoad with clients clients in each mode, keep-alive
// and a new connection per request, until ctx ends; it sends both
// results.
func lightLoad(ctx context.Context, addr string, clients int) <-chan *loadResult {
	results := make(chan *loadResult, 2)
	for _, mode := range []loadMode{keepAlive, perRequest} {
		go func() {
			r := runLoad(ctx, addr, mode, clients, 1_000_000)
			r.mode = mode
			results <- r
		}()
	}
	return results
}

// rollingUnderLoad runs reloads rolling reloads, N = 4 and --max-surge 1,
// under continuous load (runBothLoads) in a socket mode. Each reload must
// succeed with the generation one higher, no request may fail, and at no
// moment may the master have more than N+1 children starting or ready: a
// rolling reload with a surge of one starts a slot's new child only once
// the last slot's new child is ready and its old child told to drain.
// (The old children still draining come on top: under keep-alive load a
// drain lasts up to child.DrainGrace, and the process count peaks higher;
// the log says how high.)
func rollingUnderLoad(t *testing.T, sockets string, reloads int) {
	const n = 4
	cfg := filepath.Join(t.TempDir(), "prefork.yaml")
	writeConfig(t, cfg, childConfig(n, ""))
	args := []string{"--config", cfg, "--sockets", sockets, "--drain-timeout", "10s",
		"--reload-strategy", "rolling", "--max-surge", "1"}
	if sockets == "master" {
		args = append(args, "--steer", "on") // as reloadUnderLoad: steering is on by default where it loads
	}
	m := startMaster(t, args...)
	m.waitReady(n)
	watch := watchRollout(t, m)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	results := runBothLoads(ctx, m.addr)
	for i := range reloads {
		waitServed(t, m, 50)
		gen := i + 2
		code, out, errOut := m.ctl("reload")
		if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d serves", gen)) {
			t.Fatalf("rolling reload %d: exit %d, stdout %q, stderr %q; want generation %d", i+1, code, out, errOut, gen)
		}
		if st := m.status(); st.Generation != gen {
			t.Errorf("status after rolling reload %d: generation %d, want %d", i+1, st.Generation, gen)
		}
	}
	waitServed(t, m, 50)
	gen := reloads + 1
	eventually(t, 30*time.Second, fmt.Sprintf("every child of generation %d, none older", gen), func() bool {
		return m.status().settled(gen, n)
	})
	eventually(t, 30*time.Second, fmt.Sprintf("only the %d serving children left alive", n), func() bool {
		return len(liveChildren(m.cmd.Process.Pid)) == n
	})
	cancel()
	keep, perConn := <-results, <-results
	watch.stop()
	t.Logf("%d rolling reloads, --sockets %s: %v", reloads, sockets, watch)
	assertNoFailures(t, fmt.Sprintf("%d rolling reloads, --sockets %s", reloads, sockets), keep, perConn)
	assertSurge(t, watch, n+1)
	want := make([]int, 0, gen)
	for g := 1; g <= gen; g++ {
		want = append(want, g)
	}
	if !slices.Equal(watch.gens, want) {
		t.Errorf("the status' generations, in order: %v, want %v (one up per reload)", watch.gens, want)
	}
}

// Child socket mode with tcp_migrate_req=1: 3 rolling reloads under load
// lose nothing, and never run more than N+1 children.
func TestRolloutUnderLoadChildMode(t *testing.T) {
	if !inNetns(t, 1) {
		return
	}
	rollingUnderLoad(t, "child", 3)
}

// Master socket mode, with steering and tcp_migrate_req=0: the same.
func TestRolloutUnderLoadMasterMode(t *testing.T) {
	if !inNetns(t, 0) {
		return
	}
	rollingUnderLoad(t, "master", 3)
}

// failingScript is a shell command line that fails (exit 1, with a line
// on stderr) in slots from from on, and runs the reference child in the
// others.
func failingScript(from int) string {
	return fmt.Sprintf(`if [ "$PREFORK_SLOT" -ge %d ]; then echo "slot $PREFORK_SLOT fails, as the test asked" >&2; exit 1; fi; exec %s`,
		from, filepath.Join(bin, "child"))
}

// rolledBackSlot matches the reason of a rollback and gives the slot;
// canaryFailed, that of a canary's, with how far into its watch it failed.
var (
	rolledBackSlot = regexp.MustCompile(`slot (\d+) pid \d+: exited with code 1`)
	canaryFailed   = regexp.MustCompile(`slot (\d+) pid \d+: a canary, ([0-9.]+)s into its 5s watch: exited with code 1`)
)

// A rolling reload whose new command fails is rolled back, under light
// load: `master reload` exits 1 with "rolled back", the slot and the
// reason; the generation stays; the slots not reached keep their
// children (pids); the slots already replaced run the old config again;
// and no request fails. When the first slot fails nothing was replaced
// (child socket mode: no listener closes, so this needs no sysctl); when
// the third does, slots 0 and 1 go back (master socket mode, which loses
// nothing when a child drains on any kernel).
func TestRolloutRollsBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sockets  string
		failFrom int // the first slot whose new child fails
	}{
		{name: "first slot fails", sockets: "child", failFrom: 0},
		{name: "third slot fails", sockets: "master", failFrom: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 4
			cfg := filepath.Join(t.TempDir(), "prefork.yaml")
			writeConfig(t, cfg, childConfig(n, ""))
			m := startMaster(t, "--config", cfg, "--sockets", tt.sockets, "--reload-strategy", "rolling",
				"--max-surge", "1", "--drain-timeout", "10s")
			m.waitReady(n)
			before := m.status()
			watch := watchRollout(t, m)

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			results := lightLoad(ctx, m.addr, 4)
			waitServed(t, m, 50)
			writeConfig(t, cfg, fmt.Sprintf("workers: %d\ncommand: [/bin/sh, -c, '%s']\nenv: {ROLLOUT_CONFIG: new}\n",
				n, failingScript(tt.failFrom)))
			code, out, errOut := m.ctl("reload")
			match := rolledBackSlot.FindStringSubmatch(errOut)
			if code != 1 || !strings.Contains(errOut, "rolled back") || match == nil {
				t.Fatalf("rolling reload of a failing command: exit %d, stdout %q, stderr %q; want 1, rolled back and %q",
					code, out, errOut, rolledBackSlot)
			}
			if slot, _ := strconv.Atoi(match[1]); slot < tt.failFrom {
				t.Errorf("rollback names slot %d, whose new child does not fail: %q", slot, errOut)
			}
			waitServed(t, m, 50)

			eventually(t, 30*time.Second, "every slot ready in generation 1, no child of the new config left", func() bool {
				if !m.status().settled(1, n) {
					return false
				}
				for _, pid := range testkit.AliveOf(m.startedPIDs()) {
					if slices.Contains(environOf(pid), "ROLLOUT_CONFIG=new") {
						return false
					}
				}
				return true
			})
			cancel()
			assertNoFailuresMin(t, "rolling reload rolled back", 100, <-results, <-results)
			watch.stop()
			t.Logf("%v", watch)

			after := m.status()
			if after.Generation != 1 {
				t.Errorf("generation %d after the rollback, want 1", after.Generation)
			}
			old, now := before.pidsBySlot(), after.pidsBySlot()
			for slot := range n {
				switch {
				case slot >= tt.failFrom && now[slot] != old[slot]:
					t.Errorf("slot %d, never replaced: pid %d after the rollback, want %d unchanged", slot, now[slot], old[slot])
				case slot < tt.failFrom && now[slot] == old[slot]:
					t.Errorf("slot %d: pid %d unchanged, but its child was replaced before the failure and then restored", slot, now[slot])
				}
			}
			assertSurge(t, watch, n+1)
		})
	}
}

// canaryRollsBack reloads N = 4 children to a build that crashes 2 s after
// READY, with `master reload --canary 1 --canary-for 5s`, under light load
// (2 clients of each kind). The canary's crash rolls the reload back as
// soon as it happens: `master reload` exits 1 with "rolled back", the slot
// and the exit, within the canary time; the generation stays; the other
// slots are never replaced (no child of the new config started there,
// pids unchanged); the canary's slot runs the old config again.
//
// The crash is a real one (exit 1 while serving): the requests the
// crashed child had in hand fail with it (accepted, or in its
// connection's keep-alive), as they would in production. Each client has
// at most one request outstanding, so at most one failure per client
// (4); anything more would be a failure of the rollout itself.
func canaryRollsBack(t *testing.T, sockets string) {
	const n, clients = 4, 2
	cfg := filepath.Join(t.TempDir(), "prefork.yaml")
	writeConfig(t, cfg, childConfig(n, ""))
	m := startMaster(t, "--config", cfg, "--sockets", sockets, "--drain-timeout", "10s")
	m.waitReady(n)
	before := m.status()
	watch := watchRollout(t, m)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := lightLoad(ctx, m.addr, clients)
	waitServed(t, m, 50)
	writeConfig(t, cfg, childConfig(n, "env: {CHILD_CRASH_AFTER: 2s}\n"))
	start := time.Now()
	code, out, errOut := m.ctl("reload", "--canary", "1", "--canary-for", "5s")
	took := time.Since(start)
	match := canaryFailed.FindStringSubmatch(errOut)
	if code != 1 || !strings.Contains(errOut, "rolled back") || match == nil {
		t.Fatalf("canary reload to a crashing build: exit %d, stdout %q, stderr %q; want 1, rolled back and %q",
			code, out, errOut, canaryFailed)
	}
	canary, _ := strconv.Atoi(match[1])
	// The child counts its 2 s from its own READY=1; the master's watch
	// from when it read it, a little later.
	if into, _ := strconv.ParseFloat(match[2], 64); into < 1.5 || into >= 5 {
		t.Errorf("the canary failed %ss into its watch; it crashes 2 s after READY", match[2])
	}
	if took < 2*time.Second || took >= 5*time.Second {
		t.Errorf("the canary reload ended after %v; want its crash (2 s after READY) to end it before --canary-for (5 s)", took)
	}
	waitServed(t, m, 50)
	eventually(t, 30*time.Second, "every slot ready in generation 1", func() bool { return m.status().settled(1, n) })
	cancel()
	keep, perConn := <-results, <-results
	watch.stop()
	t.Logf("canary reload to a build crashing 2 s after READY, --sockets %s, took %v: %q; %v", sockets, took, errOut, watch)

	m.mu.Lock()
	crashed := strings.Contains(m.raw.String(), "child crashes now")
	m.mu.Unlock()
	if !crashed {
		t.Errorf("no crash line of the canary in the log: it failed some other way")
	}
	for _, l := range m.lines("child started") {
		if l.int("generation") != 1 && l.int("slot") != canary {
			t.Errorf("slot %d got a child of generation %d (pid %d); only the canary's slot %d may be replaced",
				l.int("slot"), l.int("generation"), l.int("pid"), canary)
		}
	}
	after := m.status()
	if after.Generation != 1 {
		t.Errorf("generation %d after the canary's rollback, want 1", after.Generation)
	}
	old, now := before.pidsBySlot(), after.pidsBySlot()
	for slot := range n {
		if slot != canary && now[slot] != old[slot] {
			t.Errorf("slot %d: pid %d after the canary's rollback, want %d unchanged", slot, now[slot], old[slot])
		}
		if env := environOf(now[slot]); slices.Contains(env, "CHILD_CRASH_AFTER=2s") {
			t.Errorf("slot %d (pid %d) runs the crashing build after the rollback", slot, now[slot])
		}
	}
	if phases := watch.phases; phases["canary"] == 0 {
		t.Errorf("no status sample in phase canary: %v", phases)
	}
	failed := keep.failed() + perConn.failed()
	t.Logf("failed requests: %d (at most %d, one per client, in the crashed canary's hands): %v; %v", failed, 2*clients, keep, perConn)
	if failed > 2*clients {
		t.Errorf("%d failed requests, more than the %d clients could have had with the crashed canary", failed, 2*clients)
	}
	if keep.ok+perConn.ok < 100 {
		t.Errorf("only %d requests served; the load did not run", keep.ok+perConn.ok)
	}
	assertSurge(t, watch, n+1)
}

// Master socket mode: the canary's queue waits for the slot's next
// child; nothing needs a sysctl.
func TestRolloutCanaryMasterMode(t *testing.T) {
	t.Parallel()
	canaryRollsBack(t, "master")
}

// Child socket mode, with tcp_migrate_req=1: the old child of the
// canary's slot drains without losing its queue, and so does the crashed
// canary's listener.
func TestRolloutCanaryChildMode(t *testing.T) {
	if !inNetns(t, 1) {
		return
	}
	canaryRollsBack(t, "child")
}

// --max-draining-generations 1: a reload that would leave two generations
// draining first kills (SIGKILL) the oldest one. The children linger in
// their drain: the stop signal is SIGINT, which the reference child
// ignores under a master (pkg/child leaves SIGINT to the master, as a
// terminal's Ctrl-C reaches the whole group), so only the 2-minute drain
// timeout would end them, as long connections keep a real server.
func TestRolloutMaxDrainingGenerations(t *testing.T) {
	t.Parallel()
	const n = 2
	m := startMaster(t, "--workers", strconv.Itoa(n), "--stop-signal", "INT", "--drain-timeout", "2m",
		"--max-draining-generations", "1")
	gen1 := m.waitReady(n)

	if code, out, errOut := m.ctl("reload"); code != 0 || !strings.Contains(out, "generation 2 serves") {
		t.Fatalf("reload 1: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	eventually(t, 20*time.Second, "generation 2 ready", func() bool { return m.status().Generation == 2 })
	gen2 := m.status().pidsBySlot()
	// Generation 1 lingers: still alive and draining a while after.
	hold := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(hold) {
		for slot, pid := range gen1 {
			if !testkit.Alive(pid) {
				t.Fatalf("slot %d's child %d of generation 1 ended its drain: it should linger", slot, pid)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := draining(m.status()); !slices.Equal(d, []int{1, 1}) {
		t.Fatalf("draining children's generations %v after reload 1, want [1 1]", d)
	}

	if code, out, errOut := m.ctl("reload"); code != 0 || !strings.Contains(out, "generation 3 serves") {
		t.Fatalf("reload 2: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	var st statusReply
	eventually(t, 10*time.Second, "generation 1 killed, long before its drain timeout, and only generation 2 draining", func() bool {
		for _, pid := range gen1 {
			if testkit.Alive(pid) {
				return false
			}
		}
		st = m.status()
		return slices.Equal(draining(st), []int{2, 2})
	})
	for slot, pid := range gen2 {
		if !testkit.Alive(pid) {
			t.Errorf("slot %d's child %d of generation 2 is gone; it should be draining", slot, pid)
		}
	}
	if !settledReady(st, 3, n) {
		t.Errorf("after reload 2: %+v, want %d ready children of generation 3", st.Children, n)
	}
	for slot, pid := range gen1 {
		exit := m.waitLog(10*time.Second, 1, fmt.Sprintf("the exit of generation 1's child %d", pid), func(l logLine) bool {
			return l.int("pid") == pid && strings.HasPrefix(l.msg(), "child exited")
		})[0]
		if exit.str("signal") != "SIGKILL" {
			t.Errorf("slot %d's child %d of generation 1 ended %v, want by SIGKILL", slot, pid, exit)
		}
	}
}

// draining returns the generations of the draining children, sorted.
func draining(st statusReply) []int {
	var gens []int
	for _, c := range st.Children {
		if c.State == "draining" {
			gens = append(gens, c.Generation)
		}
	}
	slices.Sort(gens)
	return gens
}

// settledReady reports whether exactly workers children are ready, all of
// generation gen (draining ones aside).
func settledReady(st statusReply, gen, workers int) bool {
	ready := 0
	for _, c := range st.Children {
		if c.State == "ready" {
			if c.Generation != gen {
				return false
			}
			ready++
		}
	}
	return ready == workers && st.Generation == gen
}

// While a rolling reload runs (`master reload --strategy rolling` over a
// configuration that says generation), GET /status shows it: strategy
// rolling, phase rolling, the new generation's number and slot count,
// slots_done going up one slot at a time, elapsed_seconds going up, the
// status' own generation still the old one, and ready children of both
// generations. Once it is over, no reload is shown. Each child says
// READY=1 400 ms after its start at the earliest (a shell sleeps, then
// execs the reference child in its place), so the reload lasts long
// enough to watch.
func TestRolloutStatus(t *testing.T) {
	t.Parallel()
	const n = 4
	m := startMaster(t, "--workers", strconv.Itoa(n), "--",
		"/bin/sh", "-c", "sleep 0.4; exec "+filepath.Join(bin, "child"))
	m.waitReady(n)
	watch := watchRollout(t, m)
	code, out, errOut := m.ctl("reload", "--strategy", "rolling")
	if code != 0 || !strings.Contains(out, "generation 2 serves") {
		t.Fatalf("rolling reload: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	eventually(t, 20*time.Second, "a status with generation 2 and no reload", func() bool {
		st, err := rolloutStatusClient(t, m)(context.Background())
		return err == nil && st.Reload == nil && st.settled(2, n)
	})
	watch.stop()
	t.Logf("%v", watch)

	if watch.phases["rolling"] == 0 {
		t.Errorf("no status sample in phase rolling: %v", watch.phases)
	}
	elapsed := -1.0
	for _, st := range watch.reloads {
		r := st.Reload
		if r.Phase == "loading" {
			continue // the configuration, and so the slots, are not known yet
		}
		if r.Strategy != "rolling" || r.Slots != n || r.Generation != 2 || r.SlotsDone < 0 || r.SlotsDone > n {
			t.Errorf("reload in status %+v, want strategy rolling, %d slots, generation 2, 0..%d done", *r, n, n)
		}
		if st.Generation != 1 && r.SlotsDone < n {
			t.Errorf("status generation %d with %d of %d slots done; it goes up once, with the last slot", st.Generation, r.SlotsDone, n)
		}
		if r.ElapsedSeconds < elapsed {
			t.Errorf("elapsed_seconds went down: %v after %v", r.ElapsedSeconds, elapsed)
		}
		elapsed = r.ElapsedSeconds
	}
	done := watch.slotsDone
	if !slices.IsSorted(done) {
		t.Errorf("slots_done went down: %v", done)
	}
	for k := 1; k < n; k++ {
		if !slices.Contains(done, k) {
			t.Errorf("slots_done never showed %d: %v (one slot at a time, 400 ms each, sampled every 20 ms)", k, done)
		}
	}
	if watch.mixed == 0 {
		t.Errorf("no status sample with ready children of both generations")
	}
	assertSurge(t, watch, n+1)
}

// assertSurge fails the test if a status sample of watch had more than
// most children starting or ready; it logs the peak of live processes,
// draining ones included.
func assertSurge(t *testing.T, watch *rolloutWatch, most int) {
	t.Helper()
	if n, who := watch.surge(); n > most {
		t.Errorf("%d children starting or ready at once, want at most %d:%s", n, most, who)
	}
	live, who := watch.peak()
	t.Logf("at most %d live child processes at once, draining ones included:%s", live, who)
}
