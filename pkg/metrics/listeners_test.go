package metrics

import (
	"errors"
	"maps"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// countingKernel is a kernel whose socket tables are fixed and whose reads
// are counted, by network and port, and lookups of a child's socket, by pid.
type countingKernel struct {
	mu       sync.Mutex
	tcp, udp map[int]map[uint64]uint64 // by port
	sockets  map[int][]uint64          // a child's sockets in descriptor order, by pid
	reads    map[portKey]int
	lookups  map[int]int
}

func newCountingKernel() *countingKernel {
	return &countingKernel{
		tcp:     map[int]map[uint64]uint64{},
		udp:     map[int]map[uint64]uint64{},
		sockets: map[int][]uint64{},
		reads:   map[portKey]int{},
		lookups: map[int]int{},
	}
}

func (k *countingKernel) kernel() Kernel {
	read := func(network string, tables map[int]map[uint64]uint64) func(int) (map[uint64]uint64, error) {
		return func(port int) (map[uint64]uint64, error) {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.reads[portKey{network, port}]++
			return maps.Clone(tables[port]), nil
		}
	}
	return Kernel{
		ListenQueues:    read("tcp", k.tcp),
		ReceiveQueues:   read("udp", k.udp),
		ListenOverflows: func() (uint64, error) { return 0, nil },
		ListenerOf: func(pid int, queues map[uint64]uint64) (uint64, bool) {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.lookups[pid]++
			return fdWalk(k.sockets)(pid, queues)
		},
	}
}

// reset forgets the counts of reads and lookups.
func (k *countingKernel) reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.reads)
	clear(k.lookups)
}

// compare scrapes c once and compares the named metrics with want, in the
// text exposition format (HELP and TYPE lines included).
func compare(t *testing.T, c *Collector, want string, names ...string) {
	t.Helper()
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

// Help and type lines of the per-listener series, for compare.
const (
	acceptsHead   = "# HELP prefork_child_accepts_total Connections accepted by every child that held the slot, per TCP listener.\n# TYPE prefork_child_accepts_total counter\n"
	datagramsHead = "# HELP prefork_child_datagrams_total Datagrams received by every child that held the slot, per UDP listener.\n# TYPE prefork_child_datagrams_total counter\n"
	queueHead     = "# HELP prefork_child_listen_queue_length Connections waiting in the slot's accept queue now, per TCP listener.\n# TYPE prefork_child_listen_queue_length gauge\n"
	receiveHead   = "# HELP prefork_child_receive_queue_bytes Bytes waiting in the slot's socket receive buffer now, per UDP listener.\n# TYPE prefork_child_receive_queue_bytes gauge\n"
)

// listeners returns a slot's http (tcp 8080), admin (tcp 8081) and dns (udp
// 5353) listeners with the given inodes (none: child socket mode), and a
// removed listener "old".
func listeners(http, admin, dns uint64) []SlotListener {
	return []SlotListener{
		{Name: "http", Network: "tcp", Port: 8080, Count: 10, Inode: http},
		{Name: "admin", Network: "tcp", Port: 8081, Count: 1, Inode: admin},
		{Name: "dns", Network: "udp", Port: 5353, Count: 100, Inode: dns},
		{Name: "old", Network: "tcp", Count: 3},
	}
}

// The kernel's table of a network and port is read once per scrape, not
// once per slot, and never for a removed listener (port 0); every slot,
// master-held or child-held, gets its queues from that one read.
func TestCollectorReadsOncePerPort(t *testing.T) {
	k := newCountingKernel()
	var snap Snapshot
	for slot := range 8 {
		base := uint64(1000 * (slot + 1))
		k.tcp[8080] = mapSet(k.tcp[8080], base+1, uint64(slot))
		k.tcp[8081] = mapSet(k.tcp[8081], base+2, 0)
		k.udp[5353] = mapSet(k.udp[5353], base+3, uint64(slot)*100)
		sl := SlotSnapshot{Slot: slot, Listeners: listeners(base+1, base+2, base+3)}
		if slot%2 == 1 { // child socket mode
			sl.PID = 100 + slot
			sl.Listeners = listeners(0, 0, 0)
			k.sockets[sl.PID] = []uint64{base + 1, base + 2, base + 3}
		}
		snap.Slots = append(snap.Slots, sl)
	}
	c := NewCollector(func() (Snapshot, error) { return snap, nil }, k.kernel())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	want := map[portKey]int{{"tcp", 8080}: 1, {"tcp", 8081}: 1, {"udp", 5353}: 1}
	if !maps.Equal(k.reads, want) {
		t.Errorf("reads %v, want %v", k.reads, want)
	}
	for _, tt := range []struct {
		name string
		want int
	}{
		{"prefork_child_accepts_total", 8 * 3},
		{"prefork_child_datagrams_total", 8},
		{"prefork_child_listen_queue_length", 8 * 2},
		{"prefork_child_receive_queue_bytes", 8},
	} {
		if n := testutil.CollectAndCount(c, tt.name); n != tt.want {
			t.Errorf("%s has %d series, want %d", tt.name, n, tt.want)
		}
	}
}

// mapSet returns m, made if nil, with m[k] = v.
func mapSet(m map[uint64]uint64, k, v uint64) map[uint64]uint64 {
	if m == nil {
		m = map[uint64]uint64{}
	}
	m[k] = v
	return m
}

// In child socket mode a child's socket is looked up once per listener and
// cached by pid, network and port: a TCP and a UDP listener on the same
// port number get each their own socket, a scrape later nothing is looked
// up again, and a new child, or a listener moved to another port, is
// looked up anew while the entries of the old ones go.
func TestCollectorChildSocketCache(t *testing.T) {
	k := newCountingKernel()
	k.tcp[8080] = map[uint64]uint64{500: 2}
	k.udp[8080] = map[uint64]uint64{501: 300}
	k.sockets[50] = []uint64{500, 501}
	snap := Snapshot{Slots: []SlotSnapshot{{Slot: 0, PID: 50, Listeners: []SlotListener{
		{Name: "http", Network: "tcp", Port: 8080, Count: 7},
		{Name: "dns", Network: "udp", Port: 8080, Count: 9},
	}}}}
	var mu sync.Mutex
	c := NewCollector(func() (Snapshot, error) {
		mu.Lock()
		defer mu.Unlock()
		return snap, nil
	}, k.kernel())
	want := func(http, dns int) string {
		return queueHead + "prefork_child_listen_queue_length{listener=\"http\",slot=\"0\"} " + itoa(http) + "\n" +
			receiveHead + "prefork_child_receive_queue_bytes{listener=\"dns\",slot=\"0\"} " + itoa(dns) + "\n"
	}
	queues := []string{"prefork_child_listen_queue_length", "prefork_child_receive_queue_bytes"}

	compare(t, c, want(2, 300), queues...)
	if k.lookups[50] != 2 {
		t.Errorf("pid 50 looked up %d times, want 2 (one per listener)", k.lookups[50])
	}
	k.reset()
	compare(t, c, want(2, 300), queues...)
	if len(k.lookups) != 0 {
		t.Errorf("lookups %v on the second scrape, want none (cached)", k.lookups)
	}

	// A new child in the slot.
	k.tcp[8080] = map[uint64]uint64{600: 4}
	k.udp[8080] = map[uint64]uint64{601: 0}
	k.sockets[60] = []uint64{600, 601}
	mu.Lock()
	snap.Slots[0].PID = 60
	mu.Unlock()
	k.reset()
	compare(t, c, want(4, 0), queues...)
	if !maps.Equal(k.lookups, map[int]int{60: 2}) {
		t.Errorf("lookups %v, want pid 60's two", k.lookups)
	}
	if len(c.inodes) != 2 {
		t.Errorf("cache %v, want pid 60's two sockets only", c.inodes)
	}

	// A reload moved http to port 9090.
	k.tcp[9090] = map[uint64]uint64{602: 1}
	k.sockets[60] = append(k.sockets[60], 602)
	mu.Lock()
	snap.Slots[0].Listeners = []SlotListener{
		{Name: "http", Network: "tcp", Port: 9090, Count: 7},
		{Name: "dns", Network: "udp", Port: 8080, Count: 9},
	}
	mu.Unlock()
	k.reset()
	compare(t, c, want(1, 0), queues...)
	if !maps.Equal(k.lookups, map[int]int{60: 1}) {
		t.Errorf("lookups %v, want pid 60's http only", k.lookups)
	}
	if len(c.inodes) != 2 {
		t.Errorf("cache %v, want pid 60's two sockets only", c.inodes)
	}
}

// Two listeners of a child on one port (two addresses) get each their own
// socket, in the order the child opened them, not both the first.
func TestCollectorSharedPort(t *testing.T) {
	k := newCountingKernel()
	k.tcp[8080] = map[uint64]uint64{700: 1, 701: 5, 999: 8}
	k.sockets[70] = []uint64{700, 701}
	snap := Snapshot{Slots: []SlotSnapshot{{Slot: 0, PID: 70, Listeners: []SlotListener{
		{Name: "v4", Network: "tcp", Port: 8080},
		{Name: "v6", Network: "tcp", Port: 8080},
	}}}}
	c := NewCollector(func() (Snapshot, error) { return snap, nil }, k.kernel())
	want := queueHead +
		"prefork_child_listen_queue_length{listener=\"v4\",slot=\"0\"} 1\n" +
		"prefork_child_listen_queue_length{listener=\"v6\",slot=\"0\"} 5\n"
	for range 2 { // found, then cached
		compare(t, c, want, "prefork_child_listen_queue_length")
	}
}

// A slot whose child's socket is not found (not listening yet) has no
// queue series and is looked up again at the next scrape.
func TestCollectorChildNotFound(t *testing.T) {
	k := newCountingKernel()
	k.tcp[8080] = map[uint64]uint64{800: 3}
	snap := Snapshot{Slots: []SlotSnapshot{{Slot: 0, PID: 80, Listeners: []SlotListener{
		{Name: "http", Network: "tcp", Port: 8080}}}}}
	c := NewCollector(func() (Snapshot, error) { return snap, nil }, k.kernel())
	compare(t, c, "", "prefork_child_listen_queue_length")
	k.mu.Lock()
	k.sockets[80] = []uint64{800}
	k.mu.Unlock()
	compare(t, c, queueHead+"prefork_child_listen_queue_length{listener=\"http\",slot=\"0\"} 3\n", "prefork_child_listen_queue_length")
	if k.lookups[80] != 2 {
		t.Errorf("pid 80 looked up %d times, want 2", k.lookups[80])
	}
}

// What each kind of listener exports, and what a failing or missing
// kernel reader does: a table that cannot be read fails the scrape (the
// queue is unknown, not empty), naming the network and port; a kernel
// without a reader for a network exports no queue for it; a network the
// collector does not know exports nothing.
func TestCollectorListenerKinds(t *testing.T) {
	failing := func(int) (map[uint64]uint64, error) { return nil, errors.New("no /proc") }
	fixed := func(q map[uint64]uint64) func(int) (map[uint64]uint64, error) {
		return func(int) (map[uint64]uint64, error) { return q, nil }
	}
	tcp := SlotListener{Name: "web", Network: "tcp", Port: 80, Count: 4, Inode: 1}
	udp := SlotListener{Name: "dns", Network: "udp", Port: 53, Count: 6, Inode: 2}
	for _, tt := range []struct {
		name      string
		listeners []SlotListener
		tcpRead   func(int) (map[uint64]uint64, error)
		udpRead   func(int) (map[uint64]uint64, error)
		want      string // the four per-listener metrics
		wantErr   string // a gather failure
	}{
		{
			name: "tcp and udp", listeners: []SlotListener{tcp, udp},
			tcpRead: fixed(map[uint64]uint64{1: 2}), udpRead: fixed(map[uint64]uint64{2: 1536}),
			want: acceptsHead + `prefork_child_accepts_total{listener="web",slot="0"} 4` + "\n" +
				datagramsHead + `prefork_child_datagrams_total{listener="dns",slot="0"} 6` + "\n" +
				queueHead + `prefork_child_listen_queue_length{listener="web",slot="0"} 2` + "\n" +
				receiveHead + `prefork_child_receive_queue_bytes{listener="dns",slot="0"} 1536` + "\n",
		},
		{
			name: "removed", listeners: []SlotListener{{Name: "web", Network: "tcp", Count: 4}, {Name: "dns", Network: "udp", Count: 6}},
			tcpRead: failing, udpRead: failing, // never read
			want: acceptsHead + `prefork_child_accepts_total{listener="web",slot="0"} 4` + "\n" +
				datagramsHead + `prefork_child_datagrams_total{listener="dns",slot="0"} 6` + "\n",
		},
		{
			name: "socket gone", listeners: []SlotListener{tcp, udp},
			tcpRead: fixed(nil), udpRead: fixed(map[uint64]uint64{}),
			want: acceptsHead + `prefork_child_accepts_total{listener="web",slot="0"} 4` + "\n" +
				datagramsHead + `prefork_child_datagrams_total{listener="dns",slot="0"} 6` + "\n",
		},
		{
			name: "no udp reader", listeners: []SlotListener{udp},
			want: datagramsHead + `prefork_child_datagrams_total{listener="dns",slot="0"} 6` + "\n",
		},
		{
			name: "unknown network", listeners: []SlotListener{{Name: "x", Network: "sctp", Port: 9, Count: 1, Inode: 3}},
			tcpRead: failing, udpRead: failing,
		},
		{
			name: "udp unreadable", listeners: []SlotListener{tcp, udp},
			tcpRead: fixed(map[uint64]uint64{1: 2}), udpRead: failing,
			wantErr: "udp port 53: no /proc",
		},
		{
			name: "tcp unreadable", listeners: []SlotListener{tcp, udp},
			tcpRead: failing, udpRead: fixed(map[uint64]uint64{2: 0}),
			wantErr: "tcp port 80: no /proc",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			kernel := Kernel{
				ListenQueues:    tt.tcpRead,
				ReceiveQueues:   tt.udpRead,
				ListenOverflows: func() (uint64, error) { return 0, nil },
				ListenerOf:      func(int, map[uint64]uint64) (uint64, bool) { return 0, false },
			}
			snap := Snapshot{Slots: []SlotSnapshot{{Slot: 0, Listeners: tt.listeners}}}
			c := NewCollector(func() (Snapshot, error) { return snap, nil }, kernel)
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(c)
			_, err := reg.Gather()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("gather: %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("gather: %v", err)
			}
			compare(t, c, tt.want, "prefork_child_accepts_total", "prefork_child_datagrams_total",
				"prefork_child_listen_queue_length", "prefork_child_receive_queue_bytes")
		})
	}
}

// itoa formats n for an expected exposition.
func itoa(n int) string { return strconv.Itoa(n) }
