package steer

import (
	"testing"
)

// connections reads s's counts for slots 0..n-1, and the unplaced ones.
func connections(t testing.TB, s *Steerer, n int) ([]int64, int64) {
	t.Helper()
	per, unplaced, err := s.Connections(n)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]int64, len(per))
	for i, v := range per {
		got[i] = int64(v)
	}
	return got, int64(unplaced)
}

// The program counts the new connections it places in each slot: the
// counts equal, slot by slot and to the unit, what each listener accepted,
// with every slot healthy, with one unhealthy (its share placed on the
// others through the spares path), and with none healthy, when the kernel
// chooses and they are counted as unplaced.
func TestConnectionsPerSlot(t *testing.T) {
	s := needSteerer(t)
	g := newGroup(t, 4)
	g.steer(s, 4)
	g.serve()
	for _, step := range []struct {
		name      string
		unhealthy []int
		k         int
	}{
		{name: "all healthy", k: 400},
		{name: "slot 2 unhealthy", unhealthy: []int{2}, k: 400},
		{name: "none healthy", unhealthy: []int{0, 1, 2, 3}, k: 100},
	} {
		for i := range 4 {
			if err := s.SetHealthy(i, true); err != nil {
				t.Fatal(err)
			}
		}
		for _, i := range step.unhealthy {
			if err := s.SetHealthy(i, false); err != nil {
				t.Fatal(err)
			}
		}
		before, unplacedBefore := connections(t, s, 4)
		accepted := g.connect(step.k)
		after, unplacedAfter := connections(t, s, 4)
		placed := make([]int64, 4)
		for i := range placed {
			placed[i] = after[i] - before[i]
		}
		unplaced := unplacedAfter - unplacedBefore
		t.Logf("%s: accepted %v, counted %v, unplaced %d", step.name, accepted, placed, unplaced)
		if len(step.unhealthy) == 4 {
			if unplaced != int64(step.k) || sum(placed) != 0 {
				t.Errorf("%s: counted %v and %d unplaced, want all %d unplaced", step.name, placed, unplaced, step.k)
			}
			continue
		}
		if unplaced != 0 {
			t.Errorf("%s: %d unplaced, want 0", step.name, unplaced)
		}
		for i := range placed {
			if placed[i] != accepted[i] {
				t.Errorf("%s: slot %d counted %d, accepted %d", step.name, i, placed[i], accepted[i])
			}
		}
	}
	s.Close()
	if _, _, err := s.Connections(4); err == nil {
		t.Error("Connections of a closed steerer")
	}
}

// A connection moved from a closing listener's queue to another slot is
// counted once, where the program first placed it: the counts add up to
// the connections, not to more.
func TestConnectionsMigratedCountedOnce(t *testing.T) {
	s := needSteerer(t)
	if !s.Migrates() {
		t.Skip("the kernel does not run the program for migrating connections")
	}
	g := newGroup(t, 4)
	g.steer(s, 4)
	var queued int64
	if lost := closeQueued(t, g, func() {
		per, _ := connections(t, s, 4)
		queued = per[3]
		if err := s.SetSlots(3); err != nil {
			t.Fatal(err)
		}
	}); lost != 0 {
		t.Fatalf("%d queued connections were reset", lost)
	}
	per, unplaced := connections(t, s, 4)
	accepted := g.snapshot()
	t.Logf("counted %v (slot 3's before its close: %d), unplaced %d; accepted %v", per, queued, unplaced, accepted)
	if sum(per)+unplaced != sum(accepted) {
		t.Errorf("counted %d connections in all (%v, %d unplaced), accepted %d: a migrated connection was counted again",
			sum(per)+unplaced, per, unplaced, sum(accepted))
	}
	if per[3] != queued || queued < 20 {
		t.Errorf("slot 3 counted %d after its close, %d before (want at least 20, unchanged)", per[3], queued)
	}
}
