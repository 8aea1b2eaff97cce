package supervisor

import (
	"testing"
	"time"
)

func TestSlotHealth(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	type tick struct {
		in   healthInput
		want bool // healthy after the tick
	}
	ready := func(at int, accepts uint64, queued uint32) healthInput {
		return healthInput{ready: true, accepts: accepts, queued: queued, now: ms(at), window: 100 * time.Millisecond, counting: true}
	}
	with := func(in healthInput, f func(*healthInput)) healthInput { f(&in); return in }
	// paced: the checks' usual period is 25 ms, though they may back off.
	paced := func(at int, accepts uint64, queued uint32) healthInput {
		return with(ready(at, accepts, queued), func(in *healthInput) { in.interval = 25 * time.Millisecond })
	}
	tests := []struct {
		name  string
		ticks []tick
	}{
		{name: "accepting with a queue", ticks: []tick{
			{ready(0, 10, 3), true}, {ready(50, 20, 3), true}, {ready(150, 30, 5), true}, {ready(300, 40, 1), true},
		}},
		{name: "idle", ticks: []tick{
			{ready(0, 10, 0), true}, {ready(500, 10, 0), true},
		}},
		{name: "stopped: queue held, no accept for the window", ticks: []tick{
			{ready(0, 10, 0), true}, {ready(50, 10, 2), true}, {ready(99, 10, 4), true}, {ready(100, 10, 6), false},
			{ready(400, 10, 6), false},
			// SIGCONT: it accepts, and is healthy at once.
			{ready(420, 16, 0), true},
		}},
		{name: "healthy again on one accept, queue still long", ticks: []tick{
			{ready(0, 5, 0), true}, {ready(200, 5, 9), false}, {ready(210, 6, 8), true},
		}},
		{name: "backed off: a queue first seen after a quiet gap counts from one interval before", ticks: []tick{
			{paced(0, 10, 0), true}, {paced(400, 10, 3), true}, {paced(474, 10, 3), true}, {paced(475, 10, 3), false},
		}},
		{name: "no ready child", ticks: []tick{
			{with(ready(0, 0, 0), func(in *healthInput) { in.ready = false }), false},
			{ready(10, 0, 0), true},
		}},
		{name: "watchdog missed", ticks: []tick{
			{ready(0, 1, 0), true},
			{with(ready(10, 2, 0), func(in *healthInput) { in.hung = true }), false},
		}},
		{name: "not counting: progress by the queue going down", ticks: []tick{
			{with(ready(0, 0, 5), func(in *healthInput) { in.counting = false }), true},
			{with(ready(80, 0, 4), func(in *healthInput) { in.counting = false }), true},
			{with(ready(170, 0, 3), func(in *healthInput) { in.counting = false }), true},
			{with(ready(300, 0, 3), func(in *healthInput) { in.counting = false }), false},
		}},
		{name: "not counting: progress by CPU used, queue steady", ticks: []tick{
			{with(ready(0, 0, 5), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 10 }), true},
			{with(ready(80, 0, 5), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 20 }), true},
			{with(ready(170, 0, 5), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 30 }), true},
			// SIGSTOP: no CPU, queue steady.
			{with(ready(260, 0, 5), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 30 }), true},
			{with(ready(270, 0, 6), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 30 }), false},
		}},
		{name: "not counting: the first CPU reading after an empty queue is a baseline", ticks: []tick{
			// The CPU is read only while a queue waits (steerTick): the
			// first reading, the total so far, is not progress.
			{with(ready(0, 0, 0), func(in *healthInput) { in.counting = false }), true},
			{with(ready(25, 0, 3), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 400 }), true},
			{with(ready(75, 0, 3), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 400 }), true},
			// Stopped since the queue appeared: stuck a window after the
			// last empty queue, not a window after the baseline.
			{with(ready(100, 0, 3), func(in *healthInput) { in.counting, in.timed, in.cpu = false, true, 400 }), false},
		}},
		{name: "counting: CPU used without accepts is not progress", ticks: []tick{
			{with(ready(0, 7, 5), func(in *healthInput) { in.timed, in.cpu = true, 10 }), true},
			{with(ready(120, 7, 5), func(in *healthInput) { in.timed, in.cpu = true, 90 }), false},
		}},
		{name: "counting: a queue going down without accepts is not progress", ticks: []tick{
			{ready(0, 7, 5), true}, {ready(120, 7, 4), false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h slotHealth
			was := false
			for i, tk := range tt.ticks {
				changed := h.update(tk.in)
				if h.healthy != tk.want {
					t.Fatalf("tick %d (%+v): healthy %v, want %v", i, tk.in, h.healthy, tk.want)
				}
				if changed != (was != tk.want) {
					t.Errorf("tick %d: changed %v, but healthy went %v -> %v", i, changed, was, tk.want)
				}
				was = tk.want
			}
		})
	}
}

// A child that just got ready gets a whole stuck window for the queue it
// found, from the check after its READY.
func TestSlotHealthRestart(t *testing.T) {
	t0 := time.Unix(1000, 0)
	in := func(ms int) healthInput {
		return healthInput{ready: true, accepts: 10, queued: 5, now: t0.Add(time.Duration(ms) * time.Millisecond),
			window: 100 * time.Millisecond, interval: 25 * time.Millisecond, counting: true}
	}
	var h slotHealth
	h.update(in(0))
	if h.update(in(200)); h.healthy {
		t.Fatal("queue held for 200 ms without an accept: healthy")
	}
	h.restart()
	for _, tk := range []struct {
		at   int
		want bool
	}{{210, true}, {309, true}, {310, false}} {
		if h.update(in(tk.at)); h.healthy != tk.want {
			t.Errorf("at %d ms, after a restart: healthy %v, want %v", tk.at, h.healthy, tk.want)
		}
	}
}
