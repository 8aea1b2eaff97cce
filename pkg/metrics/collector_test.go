package metrics

import (
	"errors"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func fixedSnapshot() Snapshot {
	var h HistogramSnapshot
	h.Observe(0.04)
	h.Observe(0.3)
	return Snapshot{
		Generation: 3,
		Workers:    2,
		Slots: []SlotSnapshot{
			// Master socket mode: the master's sockets, by inode.
			{Slot: 0, Restarts: 1, WatchdogKills: 1,
				Recycles: map[string]uint64{"max_accepts": 4}, SteeredAway: true, SteerChanges: 2, Connections: 1190, Rescued: 40,
				Listeners: []SlotListener{
					{Name: "http", Network: "tcp", Port: 8080, Count: 1200, Inode: 100},
					{Name: "admin", Network: "tcp", Port: 8081, Count: 30, Inode: 110},
					{Name: "dns", Network: "udp", Port: 5353, Count: 4000, Inode: 120},
					{Name: "old", Network: "tcp", Count: 5}, // removed: its count only
				}},
			// Child socket mode: the ready child's sockets, found by pid.
			{Slot: 1, PID: 102, Connections: 1187,
				Listeners: []SlotListener{
					{Name: "http", Network: "tcp", Port: 8080, Count: 1187},
					{Name: "admin", Network: "tcp", Port: 8081, Count: 12},
					{Name: "dns", Network: "udp", Port: 5353, Count: 3900},
					{Name: "old", Network: "tcp", Count: 7},
				}},
		},
		Children: []ChildSnapshot{
			{Slot: 0, Generation: 3, PID: 101, State: "ready"},
			{Slot: 1, Generation: 2, PID: 99, State: "draining"},
			{Slot: 1, Generation: 3, PID: 102, State: "ready"},
		},
		Reloads:          map[ReloadKey]uint64{{"success", "generation"}: 2, {"rolled_back", "rolling"}: 1},
		ReloadInProgress: true,
		DrainKilled:      3,
		ReloadDuration:   h,
		LogDropped:       5,
		NotifyDropped:    9,
		Steered:          true,
		Unplaced:         12,
		Refused: []Refusal{{Endpoint: "control", Reason: RefusedPeer, Count: 2},
			{Endpoint: "control", Reason: RefusedBusy}, {Endpoint: "control", Reason: RefusedEvicted, Count: 1}},
	}
}

// fixedKernel answers as a kernel where slot 0's sockets are the master's
// (inodes 100, 110, 120: 3 connections, 1 connection, 768 bytes waiting)
// and slot 1's child (pid 102) holds its own, opened in listener order
// (200, 210, 220: 0, 4 connections, 0 bytes). Inode 300 is a listener of
// no slot's.
var fixedKernel = Kernel{
	ListenQueues: func(port int) (map[uint64]uint64, error) {
		switch port {
		case 8080:
			return map[uint64]uint64{100: 3, 200: 0, 300: 9}, nil
		case 8081:
			return map[uint64]uint64{110: 1, 210: 4}, nil
		}
		return nil, nil
	},
	ReceiveQueues: func(port int) (map[uint64]uint64, error) {
		if port != 5353 {
			return nil, nil
		}
		return map[uint64]uint64{120: 768, 220: 0}, nil
	},
	ListenOverflows: func() (uint64, error) { return 7, nil },
	ListenerOf:      fdWalk(map[int][]uint64{102: {200, 210, 220}}),
}

// fdWalk answers ListenerOf as the real one does: the first of pid's
// sockets, in descriptor order, that is among queues.
func fdWalk(sockets map[int][]uint64) func(int, map[uint64]uint64) (uint64, bool) {
	return func(pid int, queues map[uint64]uint64) (uint64, bool) {
		for _, inode := range sockets[pid] {
			if _, ok := queues[inode]; ok {
				return inode, true
			}
		}
		return 0, false
	}
}

// The collector's output for a fixed snapshot, against testdata.
func TestCollectorFixture(t *testing.T) {
	c := NewCollector(func() (Snapshot, error) { return fixedSnapshot(), nil }, fixedKernel)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	f, err := os.Open("testdata/snapshot.prom")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// Every result and strategy of prefork_reloads_total is there from the
// start, at 0.
func TestCollectorZeroSeries(t *testing.T) {
	c := NewCollector(func() (Snapshot, error) {
		return Snapshot{Generation: 1, Workers: 1, Slots: []SlotSnapshot{{Slot: 0,
			Listeners: []SlotListener{{Name: "default", Network: "tcp", Port: 8080}}}}}, nil
	}, fixedKernel)
	if n := testutil.CollectAndCount(c, "prefork_reloads_total"); n != len(ReloadResults)*len(ReloadStrategies) {
		t.Errorf("prefork_reloads_total has %d series, want %d", n, len(ReloadResults)*len(ReloadStrategies))
	}
	if n := testutil.CollectAndCount(c, "prefork_child_accepts_total"); n != 1 {
		t.Errorf("prefork_child_accepts_total has %d series, want 1", n)
	}
	if n := testutil.CollectAndCount(c, "prefork_child_watchdog_kills_total"); n != 1 {
		t.Errorf("prefork_child_watchdog_kills_total has %d series, want 1", n)
	}
	if n := testutil.CollectAndCount(c, "prefork_child_recycles_total"); n != len(RecycleReasons) {
		t.Errorf("prefork_child_recycles_total has %d series, want %d", n, len(RecycleReasons))
	}
}

// prefork_child_connections_total and the unplaced count are exported
// for every slot, from the start, when the master steers, and not at all
// when it does not (no program counts: 0 would say "no connections"); a
// count that cannot be read fails the scrape rather than going down.
func TestCollectorConnections(t *testing.T) {
	for _, tt := range []struct {
		name              string
		steered           bool
		err               error
		series, unplaced  int
		wantGatherFailure bool
	}{
		{name: "not steered"},
		{name: "steered", steered: true, series: 2, unplaced: 1},
		{name: "unreadable", steered: true, err: errors.New("read failed"), wantGatherFailure: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(func() (Snapshot, error) {
				return Snapshot{Generation: 1, Workers: 2, Slots: []SlotSnapshot{{Slot: 0}, {Slot: 1}},
					Steered: tt.steered, ConnectionsErr: tt.err}, nil
			}, fixedKernel)
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			_, err := reg.Gather()
			if (err != nil) != tt.wantGatherFailure {
				t.Fatalf("gather: %v, want failure %v", err, tt.wantGatherFailure)
			}
			if tt.wantGatherFailure {
				return
			}
			if n := testutil.CollectAndCount(c, "prefork_child_connections_total"); n != tt.series {
				t.Errorf("prefork_child_connections_total has %d series, want %d", n, tt.series)
			}
			if n := testutil.CollectAndCount(c, "prefork_steer_unplaced_connections_total"); n != tt.unplaced {
				t.Errorf("prefork_steer_unplaced_connections_total has %d series, want %d", n, tt.unplaced)
			}
		})
	}
}

func TestHistogramObserve(t *testing.T) {
	var h HistogramSnapshot
	h.Observe(0.02)
	h.Observe(7)
	if h.Count != 2 || h.Sum != 7.02 || h.Buckets[0.025] != 1 || h.Buckets[10] != 2 || h.Buckets[5] != 1 {
		t.Errorf("histogram %+v", h)
	}
	c := h.Clone()
	c.Buckets[10] = 99
	if h.Buckets[10] != 2 {
		t.Error("Clone shares its buckets")
	}
}

// BenchmarkScrape256 is one scrape of the collector with 256 slots and
// children (the kernel's answers fixed, so that the collector's own cost
// is what is measured).
func BenchmarkScrape256(b *testing.B) {
	snap := Snapshot{Generation: 7, Workers: 256, Reloads: map[ReloadKey]uint64{{"success", "generation"}: 6}}
	queues := map[uint64]uint64{}
	for i := range 256 {
		snap.Slots = append(snap.Slots, SlotSnapshot{Slot: i, Restarts: 1, Listeners: []SlotListener{
			{Name: "default", Network: "tcp", Port: 8080, Count: uint64(i * 1000), Inode: uint64(1000 + i)}}})
		snap.Children = append(snap.Children, ChildSnapshot{Slot: i, Generation: 7, PID: 10000 + i, State: "ready"})
		queues[uint64(1000+i)] = 0
	}
	kernel := Kernel{
		ListenQueues:    func(int) (map[uint64]uint64, error) { return queues, nil },
		ReceiveQueues:   func(int) (map[uint64]uint64, error) { return nil, nil },
		ListenOverflows: func() (uint64, error) { return 0, nil },
		ListenerOf:      func(int, map[uint64]uint64) (uint64, bool) { return 0, false },
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(func() (Snapshot, error) { return snap, nil }, kernel))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
