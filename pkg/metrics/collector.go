package metrics

import (
	"fmt"
	"maps"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is the supervisor's state at one scrape, taken by its event loop.
type Snapshot struct {
	Generation int
	Workers    int
	// Slots holds the per-slot counters, for every slot that ever existed,
	// so that no series disappears when the worker count goes down.
	Slots    []SlotSnapshot
	Children []ChildSnapshot
	// Reloads counts reload outcomes by result (success, rolled_back,
	// rejected) and strategy (generation, rolling).
	Reloads map[ReloadKey]uint64
	// ReloadInProgress is set while a reload runs.
	ReloadInProgress bool
	// DrainKilled counts the draining children killed because a reload
	// would have left more generations draining than allowed.
	DrainKilled uint64
	// Upgrades counts the master's upgrades in place by result: success,
	// rejected (the new binary failed its check, or the master was
	// busy), failed (the exec failed).
	Upgrades map[string]uint64
	// ReloadDuration is the histogram of reload durations, in seconds.
	ReloadDuration HistogramSnapshot
	// LogDropped counts the master's log lines dropped because its log
	// output was blocked or failing.
	LogDropped uint64
	// NotifyDropped counts the sd_notify datagrams dropped over their
	// rate limit.
	NotifyDropped uint64
	// Refused counts the connections the master's own endpoints refused
	// or closed, by endpoint and reason (RefusalReasons).
	Refused []Refusal
	// Steered is true when the master steers (--steer on in master
	// socket mode): then every slot's Connections and Unplaced are
	// exported, from the start and for good; otherwise neither is.
	Steered bool
	// Unplaced counts the new connections the steering programs left to
	// the kernel's hash, in no slot's Connections.
	Unplaced uint64
	// ConnectionsErr, when not nil, is why the live counts of a steering
	// program could not be read: the connection series are then invalid
	// rather than low.
	ConnectionsErr error
}

// Refusal is a count of prefork_connections_refused_total.
type Refusal struct {
	Endpoint string // "control" or "metrics"
	Reason   string // one of RefusalReasons
	Count    uint64
}

// Why a connection to the master's own endpoints was refused: the reason
// label of prefork_connections_refused_total.
const (
	RefusedPeer    = "peer"    // a peer of another user (control socket)
	RefusedBusy    = "busy"    // at the cap, every open connection busy
	RefusedEvicted = "evicted" // at the cap, the one idle longest closed
)

// RefusalReasons are the values of the reason label of
// prefork_connections_refused_total.
var RefusalReasons = []string{RefusedPeer, RefusedBusy, RefusedEvicted}

// SlotSnapshot holds the counters of one slot.
type SlotSnapshot struct {
	Slot     int
	Restarts uint64
	// WatchdogKills counts the slot's children killed for missing their
	// watchdog pings.
	WatchdogKills uint64
	// Recycles counts the slot's children replaced for a limit, by
	// reason (RecycleReasons).
	Recycles map[string]uint64
	// SteeredAway is true while new connections are steered away from
	// the slot; SteerChanges counts the times they were.
	SteeredAway  bool
	SteerChanges uint64
	// Connections counts the new connections the steering program placed
	// in the slot's listener, folded over every program the master
	// loaded. It never goes down.
	Connections uint64
	// Rescued counts the connections moved out of the slot's accept
	// queue, while it was steered away from, to the healthy slots.
	Rescued uint64
	// PID is the slot's ready child in child socket mode, whose own
	// sockets the collector finds for the listeners with no Inode; 0
	// otherwise.
	PID int
	// Listeners holds the slot's count and socket on every listener, in
	// the order of PREFORK_LISTENERS, and those no longer served after
	// them (Port 0), so that no count series disappears.
	Listeners []SlotListener
}

// SlotListener is one listener of one slot.
type SlotListener struct {
	Name    string // the listener's name ("default" for an unnamed one)
	Network string // "tcp" or "udp"
	// Port is the listener's port in the serving generation; 0 for a
	// listener no longer served (only its count is exported).
	Port int
	// Count is every connection (tcp) or datagram (udp) the slot's
	// children took on it, those gone and those alive. Never goes down.
	Count uint64
	// Inode is the slot's socket when the master holds it (master
	// socket mode); 0 otherwise: the collector then finds PID's socket
	// on Port.
	Inode uint64
}

// ChildSnapshot describes one live child.
type ChildSnapshot struct {
	Slot       int
	Generation int
	PID        int
	State      string
}

// HistogramSnapshot is a histogram's state: cumulative counts by upper
// bound, as Prometheus wants them.
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

// ReloadResults are the values of the result label of
// prefork_reloads_total; every one is exported from the start, at 0.
var ReloadResults = []string{"success", "rolled_back", "rejected"}

// ReloadStrategies are the values of the strategy label of
// prefork_reloads_total.
var ReloadStrategies = []string{"generation", "rolling"}

// ReloadKey is one series of prefork_reloads_total.
type ReloadKey struct{ Result, Strategy string }

// UpgradeResults are the values of the result label of
// prefork_upgrades_total; every one is exported from the start, at 0.
var UpgradeResults = []string{"success", "rejected", "failed"}

// Why a child was recycled: the reason label of
// prefork_child_recycles_total.
const (
	RecycleMaxAccepts = "max_accepts" // --max-accepts
	RecycleMaxRSS     = "max_rss"     // --max-rss
)

// RecycleReasons are the values of the reason label of
// prefork_child_recycles_total; every one is exported from the start.
var RecycleReasons = []string{RecycleMaxAccepts, RecycleMaxRSS}

// ReloadBuckets are the upper bounds of prefork_reload_duration_seconds.
var ReloadBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Collector exports a Snapshot, taken at scrape time, as the prefork_*
// metrics: nothing is copied into gauges on a timer.
type Collector struct {
	snapshot func() (Snapshot, error)
	kernel   Kernel

	accepts, info, restarts, reloads, upgrades, duration, generation, workers, queue, overflows *prometheus.Desc
	watchdogKills, recycles, steeredAway, steerChanges, logDropped                              *prometheus.Desc
	notifyDropped, refused, connections, unplaced, rescued                                      *prometheus.Desc
	reloadInProgress, drainKilled, datagrams, receiveQueue                                      *prometheus.Desc

	mu     sync.Mutex
	inodes map[socketKey]uint64 // a child's socket on a listener's port, found once
}

// socketKey names a child's socket in the collector's cache: one per
// listener of the child, by network and port (a listener whose port changed
// in a reload is looked up again) and by name (two listeners may share a
// port, on two addresses).
type socketKey struct {
	pid, port     int
	network, name string
}

// portKey is one read of the kernel's socket table: one per network and
// port per scrape, whatever the number of slots.
type portKey struct {
	network string
	port    int
}

// Kernel is where the collector reads the kernel's socket state; tests
// give it fixed answers. A nil ListenQueues or ReceiveQueues exports no
// queue for that network.
type Kernel struct {
	// ListenQueues returns the accept-queue length of every TCP listener
	// on port, by socket inode.
	ListenQueues func(port int) (map[uint64]uint64, error)
	// ReceiveQueues returns the bytes in the receive buffer of every
	// unconnected UDP socket on port, by socket inode.
	ReceiveQueues func(port int) (map[uint64]uint64, error)
	// ListenOverflows returns the TcpExt ListenOverflows counter.
	ListenOverflows func() (uint64, error)
	// ListenerOf returns the inode of pid's socket among queues, one
	// port's answer of ListenQueues or ReceiveQueues.
	ListenerOf func(pid int, queues map[uint64]uint64) (uint64, bool)
}

// NewCollector returns a collector that calls snapshot on every scrape and
// reads the kernel's socket state through kernel.
func NewCollector(snapshot func() (Snapshot, error), kernel Kernel) *Collector {
	perListener := []string{"slot", "listener"}
	return &Collector{
		snapshot: snapshot,
		kernel:   kernel,
		inodes:   map[socketKey]uint64{},
		queue: prometheus.NewDesc("prefork_child_listen_queue_length",
			"Connections waiting in the slot's accept queue now, per TCP listener.", perListener, nil),
		receiveQueue: prometheus.NewDesc("prefork_child_receive_queue_bytes",
			"Bytes waiting in the slot's socket receive buffer now, per UDP listener.", perListener, nil),
		overflows: prometheus.NewDesc("prefork_listen_overflows_total",
			"The kernel's ListenOverflows counter of the master's network namespace.", nil, nil),
		accepts: prometheus.NewDesc("prefork_child_accepts_total",
			"Connections accepted by every child that held the slot, per TCP listener.", perListener, nil),
		datagrams: prometheus.NewDesc("prefork_child_datagrams_total",
			"Datagrams received by every child that held the slot, per UDP listener.", perListener, nil),
		connections: prometheus.NewDesc("prefork_child_connections_total",
			"New connections the steering program placed in the slot's listener.", []string{"slot"}, nil),
		rescued: prometheus.NewDesc("prefork_child_rescued_connections_total",
			"Connections moved out of the slot's accept queue to the healthy slots while it was steered away from.", []string{"slot"}, nil),
		unplaced: prometheus.NewDesc("prefork_steer_unplaced_connections_total",
			"New connections the steering program left to the kernel's hash, in no slot's count.", nil, nil),
		info: prometheus.NewDesc("prefork_child_info",
			"One series per live child.", []string{"slot", "generation", "pid", "state"}, nil),
		restarts: prometheus.NewDesc("prefork_child_restarts_total",
			"Unplanned child exits that were restarted.", []string{"slot"}, nil),
		reloads: prometheus.NewDesc("prefork_reloads_total",
			"Reload outcomes, by strategy.", []string{"result", "strategy"}, nil),
		reloadInProgress: prometheus.NewDesc("prefork_reload_in_progress",
			"1 while a reload runs.", nil, nil),
		drainKilled: prometheus.NewDesc("prefork_drain_killed_total",
			"Draining children killed because a reload would have left more generations draining than --max-draining-generations.", nil, nil),
		upgrades: prometheus.NewDesc("prefork_upgrades_total",
			"Upgrades of the master in place, by outcome.", []string{"result"}, nil),
		duration: prometheus.NewDesc("prefork_reload_duration_seconds",
			"From reload start to its commit: the old generation told to drain (rolling: the last slot replaced).", nil, nil),
		generation: prometheus.NewDesc("prefork_generation",
			"The current generation.", nil, nil),
		workers: prometheus.NewDesc("prefork_workers",
			"The configured number of workers.", nil, nil),
		watchdogKills: prometheus.NewDesc("prefork_child_watchdog_kills_total",
			"Children killed for missing their watchdog pings.", []string{"slot"}, nil),
		recycles: prometheus.NewDesc("prefork_child_recycles_total",
			"Children replaced, successor ready first, for passing a limit.", []string{"slot", "reason"}, nil),
		steeredAway: prometheus.NewDesc("prefork_child_steered_away",
			"1 while new connections are steered away from the slot.", []string{"slot"}, nil),
		steerChanges: prometheus.NewDesc("prefork_steer_changes_total",
			"Times new connections were steered away from the slot.", []string{"slot"}, nil),
		logDropped: prometheus.NewDesc("prefork_log_dropped_total",
			"The master's log lines dropped because its log output was blocked or failing.", nil, nil),
		notifyDropped: prometheus.NewDesc("prefork_notify_dropped_total",
			"sd_notify datagrams dropped over their rate limit.", nil, nil),
		refused: prometheus.NewDesc("prefork_connections_refused_total",
			"Connections to the master's control socket or metrics endpoint refused or closed.", []string{"endpoint", "reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.accepts, c.info, c.restarts, c.reloads, c.upgrades, c.duration, c.generation,
		c.workers, c.queue, c.overflows, c.watchdogKills, c.recycles, c.steeredAway, c.steerChanges, c.logDropped,
		c.notifyDropped, c.refused, c.connections, c.unplaced, c.rescued, c.reloadInProgress, c.drainKilled, c.datagrams, c.receiveQueue} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.snapshot()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.generation, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.generation, prometheus.GaugeValue, float64(s.Generation))
	ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(s.Workers))
	ch <- prometheus.MustNewConstMetric(c.logDropped, prometheus.CounterValue, float64(s.LogDropped))
	ch <- prometheus.MustNewConstMetric(c.notifyDropped, prometheus.CounterValue, float64(s.NotifyDropped))
	for _, r := range s.Refused {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(r.Count), r.Endpoint, r.Reason)
	}
	c.collectConnections(ch, s)
	for _, sl := range s.Slots {
		slot := strconv.Itoa(sl.Slot)
		c.collectCounts(ch, slot, sl.Listeners)
		ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.CounterValue, float64(sl.Restarts), slot)
		ch <- prometheus.MustNewConstMetric(c.watchdogKills, prometheus.CounterValue, float64(sl.WatchdogKills), slot)
		for _, reason := range RecycleReasons {
			ch <- prometheus.MustNewConstMetric(c.recycles, prometheus.CounterValue, float64(sl.Recycles[reason]), slot, reason)
		}
		away := 0.0
		if sl.SteeredAway {
			away = 1
		}
		ch <- prometheus.MustNewConstMetric(c.steeredAway, prometheus.GaugeValue, away, slot)
		ch <- prometheus.MustNewConstMetric(c.steerChanges, prometheus.CounterValue, float64(sl.SteerChanges), slot)
	}
	for _, ch2 := range s.Children {
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1,
			strconv.Itoa(ch2.Slot), strconv.Itoa(ch2.Generation), strconv.Itoa(ch2.PID), ch2.State)
	}
	for _, result := range ReloadResults {
		for _, strategy := range ReloadStrategies {
			ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue,
				float64(s.Reloads[ReloadKey{Result: result, Strategy: strategy}]), result, strategy)
		}
	}
	inProgress := 0.0
	if s.ReloadInProgress {
		inProgress = 1
	}
	ch <- prometheus.MustNewConstMetric(c.reloadInProgress, prometheus.GaugeValue, inProgress)
	ch <- prometheus.MustNewConstMetric(c.drainKilled, prometheus.CounterValue, float64(s.DrainKilled))
	for _, result := range UpgradeResults {
		ch <- prometheus.MustNewConstMetric(c.upgrades, prometheus.CounterValue, float64(s.Upgrades[result]), result)
	}
	buckets := make(map[float64]uint64, len(ReloadBuckets))
	for _, b := range ReloadBuckets {
		buckets[b] = s.ReloadDuration.Buckets[b]
	}
	ch <- prometheus.MustNewConstHistogram(c.duration, s.ReloadDuration.Count, s.ReloadDuration.Sum, buckets)
	c.collectKernel(ch, s)
}

// collectConnections reports the steering program's counts, when the
// master steers.
func (c *Collector) collectConnections(ch chan<- prometheus.Metric, s Snapshot) {
	switch {
	case !s.Steered:
		return
	}
	for _, sl := range s.Slots {
		ch <- prometheus.MustNewConstMetric(c.rescued, prometheus.CounterValue, float64(sl.Rescued), strconv.Itoa(sl.Slot))
	}
	switch {
	case s.ConnectionsErr != nil:
		ch <- prometheus.NewInvalidMetric(c.connections, s.ConnectionsErr)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.unplaced, prometheus.CounterValue, float64(s.Unplaced))
	for _, sl := range s.Slots {
		ch <- prometheus.MustNewConstMetric(c.connections, prometheus.CounterValue, float64(sl.Connections), strconv.Itoa(sl.Slot))
	}
}

// collectCounts reports a slot's count on each of its listeners, served
// or not: accepts for a TCP listener, datagrams for a UDP one.
func (c *Collector) collectCounts(ch chan<- prometheus.Metric, slot string, listeners []SlotListener) {
	for _, l := range listeners {
		if d := c.countDesc(l.Network); d != nil {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(l.Count), slot, l.Name)
		}
	}
}

// countDesc is the count series of a listener on network; nil for a
// network the collector does not know.
func (c *Collector) countDesc(network string) *prometheus.Desc {
	switch network {
	case "tcp":
		return c.accepts
	case "udp":
		return c.datagrams
	}
	return nil
}

// queueDesc is the queue series of a listener on network, and the kernel
// reader that answers it; nil for a network the collector does not know,
// or a reader the kernel lacks.
func (c *Collector) queueDesc(network string) (*prometheus.Desc, func(int) (map[uint64]uint64, error)) {
	switch network {
	case "tcp":
		return c.queue, c.kernel.ListenQueues
	case "udp":
		return c.receiveQueue, c.kernel.ReceiveQueues
	}
	return nil, nil
}

// collectKernel reports the namespace's overflows and each slot's queue on
// every served listener, read now: the socket table of a network and port
// once, whatever the number of slots.
func (c *Collector) collectKernel(ch chan<- prometheus.Metric, s Snapshot) {
	if n, err := c.kernel.ListenOverflows(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.overflows, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(n))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	tables := map[portKey]map[uint64]uint64{} // nil: unreadable, already reported
	live := map[socketKey]bool{}
	for _, sl := range s.Slots {
		for _, l := range sl.Listeners {
			desc, read := c.queueDesc(l.Network)
			if l.Port == 0 || desc == nil || read == nil {
				continue
			}
			pk := portKey{l.Network, l.Port}
			queues, seen := tables[pk]
			if !seen {
				var err error
				if queues, err = read(l.Port); err != nil {
					ch <- prometheus.NewInvalidMetric(desc, fmt.Errorf("%s port %d: %w", l.Network, l.Port, err))
					queues = nil
				} else if queues == nil {
					queues = map[uint64]uint64{}
				}
				tables[pk] = queues
			}
			if queues == nil {
				continue
			}
			if inode := c.inodeOf(sl.PID, l, queues, live); inode != 0 {
				if q, ok := queues[inode]; ok {
					ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(q), strconv.Itoa(sl.Slot), l.Name)
				}
			}
		}
	}
	for k := range c.inodes {
		if !live[k] {
			delete(c.inodes, k)
		}
	}
}

// inodeOf returns the slot's socket on listener l: the master's (l.Inode),
// or else pid's own on l's port, found among queues once and cached while
// pid serves it (marked in live); 0 when there is none. Two listeners of
// one network may share a port (on two addresses): a socket found for one
// of pid's listeners is not given to another, so that, the child having
// opened them in order, each gets its own. c.mu is held.
func (c *Collector) inodeOf(pid int, l SlotListener, queues map[uint64]uint64, live map[socketKey]bool) uint64 {
	if l.Inode != 0 || pid == 0 {
		return l.Inode
	}
	k := socketKey{pid: pid, port: l.Port, network: l.Network, name: l.Name}
	if inode, ok := c.inodes[k]; ok {
		live[k] = true
		return inode
	}
	candidates, cloned := queues, false
	for other, inode := range c.inodes {
		if other.pid != pid || other.network != l.Network {
			continue
		}
		if _, shared := queues[inode]; shared {
			if !cloned {
				candidates, cloned = maps.Clone(queues), true
			}
			delete(candidates, inode)
		}
	}
	inode, ok := c.kernel.ListenerOf(pid, candidates)
	if !ok {
		return 0
	}
	c.inodes[k] = inode
	live[k] = true
	return inode
}

// Observe adds one duration, in seconds, to h.
func (h *HistogramSnapshot) Observe(seconds float64) {
	if h.Buckets == nil {
		h.Buckets = make(map[float64]uint64, len(ReloadBuckets))
	}
	h.Count++
	h.Sum += seconds
	for _, b := range ReloadBuckets {
		if seconds <= b {
			h.Buckets[b]++
		}
	}
}

// Clone returns a copy of h that shares nothing with it.
func (h HistogramSnapshot) Clone() HistogramSnapshot {
	c := h
	c.Buckets = make(map[float64]uint64, len(h.Buckets))
	for k, v := range h.Buckets {
		c.Buckets[k] = v
	}
	return c
}
