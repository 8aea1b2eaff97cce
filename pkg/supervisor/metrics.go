package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prefork/prefork/pkg/metrics"
	"github.com/prefork/prefork/pkg/version"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (s *Supervisor) snapshot() metrics.Snapshot {
	snap := metrics.Snapshot{
		Generation:     s.cur.number,
		Workers:        s.cur.cfg.Workers,
		Reloads:        maps.Clone(s.tally.reloads),
		ReloadDuration: s.tally.reloadHist.Clone(),
		// A reload that only waits for its configuration is in
		// progress too: a scrape may land there.
		ReloadInProgress: !s.reload.idle(),
		DrainKilled:      s.tally.drainKilled,
	}
	snap.NotifyDropped = s.gate.dropCount()
	for _, g := range s.guards {
		snap.Refused = append(snap.Refused, g.refusals()...)
	}
	if s.opts.LogDropped != nil {
		snap.LogDropped = s.opts.LogDropped()
	}
	snap.Upgrades = maps.Clone(s.tally.upgrades)
	// What the endpoints and the notify socket refused before the last
	// upgrade in place, whose counts start from 0 again.
	snap.NotifyDropped += s.tally.notifyDropped
	snap.Refused = addRefusals(snap.Refused, s.tally.refused)
	slots := max(s.tally.slotsEver, s.cur.cfg.Workers)
	snap.Slots = make([]metrics.SlotSnapshot, slots)
	away := s.steeredAway()
	counts := s.slotCounts(slots)
	for i := range snap.Slots {
		snap.Slots[i] = metrics.SlotSnapshot{Slot: i, Listeners: counts[i], Restarts: uint64(s.tally.restarts[i]),
			WatchdogKills: s.tally.watchdogKills[i], Recycles: make(map[string]uint64, len(metrics.RecycleReasons)),
			SteeredAway: i < len(away) && away[i], SteerChanges: s.steering.changes[i], Rescued: s.tally.rescued[i]}
		for _, reason := range metrics.RecycleReasons {
			snap.Slots[i].Recycles[reason] = s.tally.recycles[recycleKey{slot: i, reason: reason}]
		}
		if i >= len(s.cur.slots) {
			continue
		}
		if s.cur.cfg.Sockets == SocketsMaster {
			for j := range s.cur.cfg.Listen {
				snap.Slots[i].Listeners[j].Inode = s.sockets.inode(s.cur.cfg.Listen[j].key(), i)
			}
		} else if c := s.servingChild(i); c != nil && c.state() == StateReady {
			snap.Slots[i].PID = c.pid
		}
	}
	s.snapshotConnections(&snap)
	for _, c := range s.children {
		snap.Children = append(snap.Children, metrics.ChildSnapshot{
			Slot: c.slot, Generation: c.gen.number, PID: c.pid, State: string(c.state()),
		})
	}
	return snap
}

// slotCounts returns, for each of the first n slots, its listeners'
// counts: the serving generation's listeners first, in order and with
// their ports, then every other listener the slot's children ever
// counted on (a listener a reload removed), by name, whose counts must
// not disappear.
func (s *Supervisor) slotCounts(n int) [][]metrics.SlotListener {
	total := maps.Clone(s.tally.counted)
	for _, c := range s.children {
		for j, v := range c.counts() {
			k := countKeyOf(c.slot, c.gen.cfg.Listen[j])
			total[k] = addAccepts(total[k], v)
		}
	}
	ports := make([]int, len(s.cur.cfg.Listen))
	for j, l := range s.cur.cfg.Listen {
		_, port, _ := net.SplitHostPort(l.Addr)
		ports[j], _ = strconv.Atoi(port)
	}
	out := make([][]metrics.SlotListener, n)
	for i := range out {
		for j, l := range s.cur.cfg.Listen {
			k := countKeyOf(i, l)
			out[i] = append(out[i], metrics.SlotListener{Name: l.Name, Network: l.Network, Port: ports[j], Count: total[k]})
			delete(total, k)
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(total), func(a, b countKey) int {
		return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(a.network, b.network))
	}) {
		if k.slot < n {
			out[k.slot] = append(out[k.slot], metrics.SlotListener{Name: k.name, Network: k.network, Count: total[k]})
		}
	}
	return out
}

// healthz answers 200 when the event loop answers within wait, else 503
// and why: a master whose loop is stuck supervises nothing, however alive
// its process looks.
func (s *Supervisor) healthz(wait time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		defer cancel()
		_, err := ask(s, ctx, answer(func() struct{} { return struct{}{} }))
		switch {
		case err == nil:
			fmt.Fprintln(w, "ok")
		case errors.Is(err, ErrNotRunning):
			http.Error(w, "stopping", http.StatusServiceUnavailable)
		default:
			http.Error(w, fmt.Sprintf("event loop has not answered for %s", wait), http.StatusServiceUnavailable)
		}
	}
}

// unreadySlots returns why not every slot of the serving generation has a
// ready child, or "" when all have one.
func (s *Supervisor) unreadySlots() string {
	var missing []string
	for i := range s.cur.slots {
		if c := s.servingChild(i); c == nil || !c.life.serving() {
			missing = append(missing, fmt.Sprint(i))
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return "no ready child in slot " + strings.Join(missing, ", ")
}

// healthzWait is how long /healthz waits for the loop to answer. The loop
// blocks on nothing the outside controls, so an answer takes microseconds;
// seconds mean it is stuck.
const healthzWait = 2 * time.Second

// metricsHandler serves /metrics (the prefork collector, prefork_build_info,
// and the Go and process collectors of the master), /healthz (200 while the master's
// event loop answers, see healthz) and /readyz (200 while every slot has a ready child, else 503 and why).
func (s *Supervisor) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		metrics.NewCollector(s.Snapshot, metrics.LinuxKernel),
		metrics.NewBuildInfo(version.String(), version.GoVersion()),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", s.healthz(healthzWait))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		why := s.whyNotReady(r.Context())
		if why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// addRefusals adds the counts of base to those of live with the same
// endpoint and reason.
func addRefusals(live, base []metrics.Refusal) []metrics.Refusal {
	for _, b := range base {
		found := false
		for i := range live {
			if live[i].Endpoint == b.Endpoint && live[i].Reason == b.Reason {
				live[i].Count += b.Count
				found = true
			}
		}
		if !found {
			live = append(live, b)
		}
	}
	return live
}
