package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is the supervisor's state at one scrape, taken by its event loop.
type Snapshot struct {
	Generation int
	Workers    int
	// ListenPort is the port of the serving generation's address.
	ListenPort int
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
	Slot int
	// Accepts is every connection the children that held the slot
	// accepted: those gone plus those alive. It never goes down.
	Accepts  uint64
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
	// ListenInode is the slot's listener when the master holds it (master
	// socket mode); else PID is the slot's ready child, whose own listener
	// the collector finds. Both 0: no queue to report.
	ListenInode uint64
	PID         int
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
	reloadInProgress, drainKilled                                                               *prometheus.Desc

	mu     sync.Mutex
	inodes map[int]uint64 // a child's listener, by pid, found once
}

// Kernel is where the collector reads the kernel's socket state; tests
// give it fixed answers.
type Kernel struct {
	// ListenQueues returns the accept-queue length of every listener on
	// port, by socket inode.
	ListenQueues func(port int) (map[uint64]uint64, error)
	// ListenOverflows returns the TcpExt ListenOverflows counter.
	ListenOverflows func() (uint64, error)
	// ListenerOf returns the inode of pid's listener among queues.
	ListenerOf func(pid int, queues map[uint64]uint64) (uint64, bool)
}

// NewCollector returns a collector that calls snapshot on every scrape and
// reads the kernel's socket state through kernel.
func NewCollector(snapshot func() (Snapshot, error), kernel Kernel) *Collector {
	return &Collector{
		snapshot: snapshot,
		kernel:   kernel,
		inodes:   map[int]uint64{},
		queue: prometheus.NewDesc("prefork_child_listen_queue_length",
			"Connections waiting in the slot's accept queue now.", []string{"slot"}, nil),
		overflows: prometheus.NewDesc("prefork_listen_overflows_total",
			"The kernel's ListenOverflows counter of the master's network namespace.", nil, nil),
		accepts: prometheus.NewDesc("prefork_child_accepts_total",
			"Connections accepted by every child that held the slot.", []string{"slot"}, nil),
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
		c.notifyDropped, c.refused, c.connections, c.unplaced, c.rescued, c.reloadInProgress, c.drainKilled} {
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
		ch <- prometheus.MustNewConstMetric(c.accepts, prometheus.CounterValue, float64(sl.Accepts), slot)
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

// collectKernel reports each slot's accept queue and the namespace's
// overflows, read now.
func (c *Collector) collectKernel(ch chan<- prometheus.Metric, s Snapshot) {
	if n, err := c.kernel.ListenOverflows(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.overflows, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.overflows, prometheus.CounterValue, float64(n))
	}
	queues, err := c.kernel.ListenQueues(s.ListenPort)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.queue, err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	live := map[int]bool{}
	for _, sl := range s.Slots {
		inode := sl.ListenInode
		if inode == 0 && sl.PID != 0 {
			live[sl.PID] = true
			var ok bool
			if inode, ok = c.inodes[sl.PID]; !ok {
				if inode, ok = c.kernel.ListenerOf(sl.PID, queues); ok {
					c.inodes[sl.PID] = inode
				}
			}
		}
		if q, ok := queues[inode]; ok && inode != 0 {
			ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(q), strconv.Itoa(sl.Slot))
		}
	}
	for pid := range c.inodes {
		if !live[pid] {
			delete(c.inodes, pid)
		}
	}
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
