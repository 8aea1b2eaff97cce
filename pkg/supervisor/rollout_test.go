package supervisor

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// trace renders actions as "start 0, drain-old 1, ...".
func trace(acts []rollAction) string {
	names := map[rollActionKind]string{actStartNew: "start", actDrainOld: "drain-old", actWatch: "watch",
		actStartOld: "restore", actRetryOld: "retry", actDrainNew: "drain-new", actCommitted: "commit",
		actRolledBack: "rolled-back", actAdopt: "adopt"}
	var out []string
	for _, a := range acts {
		s := names[a.kind]
		if a.kind != actWatch && a.kind != actCommitted && a.kind != actRolledBack {
			s += fmt.Sprintf(" %d", a.slot)
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func ready(slot int) rollInput    { return rollInput{kind: rollReady, slot: slot, fresh: true} }
func failed(slot int) rollInput   { return rollInput{kind: rollFailed, slot: slot, fresh: true} }
func restored(slot int) rollInput { return rollInput{kind: rollReady, slot: slot} }
func notBack(slot int) rollInput  { return rollInput{kind: rollFailed, slot: slot} }
func watchOver() rollInput        { return rollInput{kind: rollWatchOver} }
func giveUp(slot int) rollInput   { return rollInput{kind: rollGiveUp, slot: slot} }
func begin() rollInput            { return rollInput{kind: rollBegin} }
func rolling(surge int) Config    { return Config{ReloadStrategy: StrategyRolling, MaxSurge: surge} }
func canaries(c Config, n int) Config {
	c.Canary, c.CanaryFor = n, time.Second
	return c
}

// Each step's actions, for a sequence of inputs.
func TestRolloutMachine(t *testing.T) {
	t.Parallel()
	type step struct {
		in   rollInput
		want string
	}
	tests := []struct {
		name    string
		oldN, n int
		cfg     Config
		steps   []step
	}{
		{name: "one at a time", oldN: 3, n: 3, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, start 1"},
			{ready(1), "drain-old 1, start 2"},
			{ready(2), "drain-old 2, commit"},
		}},
		{name: "two at a time, out of order", oldN: 3, n: 3, cfg: rolling(2), steps: []step{
			{begin(), "start 0, start 1"},
			{ready(1), "drain-old 1, start 2"},
			{ready(2), "drain-old 2"},
			{ready(0), "drain-old 0, commit"},
		}},
		{name: "a stray ready changes nothing", oldN: 2, n: 2, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{ready(1), ""},
			{ready(0), "drain-old 0, start 1"},
			{ready(0), ""},
		}},
		{name: "more slots than before: the new ones first", oldN: 1, n: 3, cfg: rolling(1), steps: []step{
			{begin(), "start 1"},
			{ready(1), "drain-old 1, start 2"}, // the loop finds no old child in slot 1
			{ready(2), "drain-old 2, start 0"},
			{ready(0), "drain-old 0, commit"},
		}},
		{name: "the first new child fails", oldN: 3, n: 3, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{failed(0), "drain-new 0, rolled-back"},
		}},
		{name: "a later one fails: the replaced slots go back, surge at a time", oldN: 4, n: 4, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, start 1"},
			{ready(1), "drain-old 1, start 2"},
			{failed(2), "drain-new 2, restore 0"},
			{restored(0), "drain-new 0, restore 1"},
			{ready(3), ""}, // nothing of the forward way counts now
			{restored(1), "drain-new 1, rolled-back"},
			{failed(0), ""}, // done: nothing more
		}},
		{name: "a replaced child dies: its slot goes back at once", oldN: 3, n: 3, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, start 1"},
			{failed(0), "restore 0, drain-new 1"},
			{restored(0), "drain-new 0, rolled-back"},
		}},
		{name: "going back past the surge for a dead slot", oldN: 3, n: 3, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, start 1"},
			{ready(1), "drain-old 1, start 2"},
			{failed(2), "drain-new 2, restore 0"},
			{failed(1), "restore 1"},
			{restored(1), "drain-new 1"},
			{restored(0), "drain-new 0, rolled-back"},
		}},
		{name: "an old child that does not come back is retried", oldN: 2, n: 2, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, start 1"},
			{failed(1), "drain-new 1, restore 0"},
			{notBack(0), "retry 0"},
			{notBack(0), "retry 0"},
			{restored(0), "drain-new 0, rolled-back"},
		}},
		{name: "a new slot the old generation lacked fails", oldN: 1, n: 3, cfg: rolling(1), steps: []step{
			{begin(), "start 1"},
			{ready(1), "drain-old 1, start 2"},
			{failed(2), "drain-new 1, drain-new 2, rolled-back"},
		}},
		{name: "a canary among new slots", oldN: 1, n: 2, cfg: canaries(rolling(1), 1), steps: []step{
			{begin(), "start 1"},
			{ready(1), "drain-old 1, watch"},
			{watchOver(), "start 0"},
			{ready(0), "drain-old 0, commit"},
		}},
		{name: "an old child that never comes back: its slot keeps the new one", oldN: 3, n: 3, cfg: rolling(1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, start 1"},
			{ready(1), "drain-old 1, start 2"},
			{failed(2), "drain-new 2, restore 0"},
			{notBack(0), "retry 0"},
			{giveUp(0), "adopt 0, restore 1"},
			{giveUp(0), ""},
			{restored(1), "drain-new 1, rolled-back"},
		}},
		{name: "canary then the rest, rolling", oldN: 3, n: 3, cfg: canaries(rolling(1), 1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, watch"},
			{watchOver(), "start 1"},
			{ready(1), "drain-old 1, start 2"},
			{ready(2), "drain-old 2, commit"},
		}},
		{name: "two canaries, one at a time", oldN: 3, n: 3, cfg: canaries(rolling(1), 2), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, start 1"},
			{ready(1), "drain-old 1, watch"},
			{watchOver(), "start 2"},
			{ready(2), "drain-old 2, commit"},
		}},
		{name: "a canary fails during its watch", oldN: 3, n: 3, cfg: canaries(rolling(2), 2), steps: []step{
			{begin(), "start 0, start 1"},
			{ready(0), "drain-old 0"},
			{ready(1), "drain-old 1, watch"},
			{failed(1), "restore 1, restore 0"},
			{watchOver(), ""},
			{restored(0), "drain-new 0"},
			{restored(1), "drain-new 1, rolled-back"},
		}},
		{name: "every slot a canary: watched, then committed", oldN: 2, n: 2, cfg: canaries(rolling(2), 5), steps: []step{
			{begin(), "start 0, start 1"},
			{ready(0), "drain-old 0"},
			{ready(1), "drain-old 1, watch"},
			{watchOver(), "commit"},
		}},
		{name: "canary then the rest as a generation", oldN: 4, n: 4, cfg: canaries(Config{}, 1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, watch"},
			{watchOver(), "start 1, start 2, start 3"},
			{ready(2), ""},
			{ready(1), ""},
			{ready(3), "drain-old 1, drain-old 2, drain-old 3, commit"},
		}},
		{name: "the generation after the canary fails", oldN: 3, n: 3, cfg: canaries(Config{}, 1), steps: []step{
			{begin(), "start 0"},
			{ready(0), "drain-old 0, watch"},
			{watchOver(), "start 1, start 2"},
			{ready(1), ""},
			{failed(2), "drain-new 1, drain-new 2, restore 0"},
			{restored(0), "drain-new 0, rolled-back"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRollout(tt.oldN, tt.n, tt.cfg)
			for i, st := range tt.steps {
				if got := trace(r.step(st.in)); got != st.want {
					t.Fatalf("step %d (%+v): actions %q, want %q", i, st.in, got, st.want)
				}
			}
		})
	}
}

// FuzzRollout feeds random inputs and checks what must always hold: the
// surge is kept going forward, the rollout ends once, and at its end
// every slot is wholly old or wholly new.
func FuzzRollout(f *testing.F) {
	f.Add(uint8(3), uint8(3), uint8(1), uint8(0), false, []byte{1, 0, 2, 1, 0})
	f.Add(uint8(4), uint8(2), uint8(2), uint8(1), true, []byte{1, 0, 4, 0, 1, 2, 3, 1})
	f.Fuzz(func(t *testing.T, oldN, n, surge, canary uint8, generation bool, script []byte) {
		oldN, n, surge = oldN%9+1, n%9+1, surge%4+1
		cfg := rolling(int(surge))
		if generation {
			cfg.ReloadStrategy = StrategyGeneration
		}
		cfg = canaries(cfg, int(canary%5))
		r := newRollout(int(oldN), int(n), cfg)
		ends := 0
		check := func(acts []rollAction) {
			for _, a := range acts {
				if a.kind == actCommitted || a.kind == actRolledBack {
					ends++
					if r.phase != rollDone {
						t.Fatalf("ended in phase %d", r.phase)
					}
					want := slotOld
					if a.kind == actCommitted {
						want = slotNew
					}
					for i, st := range r.slots {
						if st != want {
							t.Fatalf("ended (%v) with slot %d in state %d: %v", a.kind, i, st, r.slots)
						}
					}
				}
			}
			if r.phase == rollBack {
				// Every slot is on its way back, waits for it, or is old.
				for i, st := range r.slots {
					queued := indexOf(r.back, i) >= 0
					if st == slotNew && !queued || st != slotNew && queued || st == slotStarting || st == slotWaiting {
						t.Fatalf("going back with slot %d in state %d (queued %v): %v", i, st, queued, r.slots)
					}
				}
			}
			if r.phase == rollForward || r.phase == rollWatching {
				if busy := r.count(slotStarting) + r.count(slotWaiting); busy > r.surge && !(r.batch && r.watched) {
					t.Fatalf("%d slots starting, surge %d", busy, r.surge)
				}
			}
		}
		check(r.step(begin()))
		for k := 0; k+1 < len(script); k += 2 {
			in := rollInput{kind: rollInputKind(script[k]%4 + 2), slot: int(script[k+1] % n), fresh: script[k+1]&0x80 == 0}
			check(r.step(in))
		}
		if ends > 1 {
			t.Fatalf("ended %d times", ends)
		}
		if ends == 0 && r.phase == rollDone {
			t.Fatal("done without an end")
		}
	})
}
