package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prefork/prefork/pkg/metrics"
	"github.com/prefork/prefork/pkg/sockopt"
	"github.com/prefork/prefork/pkg/steer"
)

// StopMode says how the children are stopped.
type StopMode int

const (
	// StopGraceful drains every child: the stop signal, then SIGKILL after the drain
	// timeout.
	StopGraceful StopMode = iota + 1
	// StopFast kills every child with SIGKILL at once.
	StopFast
)

// Errors of requests to a supervisor.
var (
	// ErrNotRunning is returned by requests made after Run has returned.
	ErrNotRunning = errors.New("supervisor is not running")
	// ErrStopping is returned for a reload asked for, or cut short, by a stop.
	ErrStopping = errors.New("supervisor is stopping")
	// ErrReloadRejected wraps the reason a new configuration was refused;
	// nothing changed.
	ErrReloadRejected = errors.New("reload rejected")
	// ErrRolledBack wraps the reason a new generation failed to get ready;
	// it was killed and the old one serves on.
	ErrRolledBack = errors.New("reload rolled back")
	// ErrDrainCut is returned by Run when a graceful stop had to kill a
	// child at the drain timeout: the stop is done, but work was cut.
	ErrDrainCut = errors.New("stopped, but the drain timeout cut a child short")
)

// Options are the parts of a supervisor that are not configuration.
type Options struct {
	// Log receives the supervisor's log lines; nil discards them.
	Log *slog.Logger
	// Load returns the configuration for a reload: the config file re-read
	// with flags still winning. Nil reloads with the configuration the
	// supervisor was created with.
	// Load runs in a goroutine of its own, with a deadline (5 s).
	Load func() (Config, error)
	// ConfigFile names what Load reads, for the error of a read that
	// passes its deadline; "" says "the configuration".
	ConfigFile string
	// LogDropped returns how many of the master's log lines were dropped
	// (its log output blocked or failing), for prefork_log_dropped_total;
	// nil reads 0.
	LogDropped func() uint64
	// LogStalled returns how long the master's log output has been
	// blocked in a write (0: it is not); the children's output goes
	// to the same place, so a child not ready in time may be blocked
	// there too, which its diagnosis says. Nil reads 0.
	LogStalled func() time.Duration
}

// Supervisor runs and watches the children. Create it with New, then call
// Run once.
type Supervisor struct {
	opts    Options
	log     *slog.Logger
	env     env
	self    string // the master's executable, the exec shim of master socket mode
	notify  *notifyServer
	gate    *notifyGate        // which sd_notify datagrams reach the loop
	guards  []*guardedListener // of the control socket and the metrics endpoint; set before the loop runs
	control net.Listener       // the admin API's socket; nil when off
	metrics net.Listener       // the metrics endpoint's socket; nil when off
	devnull *os.File

	events chan any      // everything the loop acts on
	quit   chan struct{} // closed when Run's loop has ended
	// stopAsked is set by Stop before its request reaches the loop: an
	// upgrade checks it just before the exec.
	stopAsked atomic.Bool

	// Owned by the loop goroutine alone.
	children      map[int]*child // by pid; only unreaped processes
	cur           *generation    // the serving generation
	reload        reloadRun
	sockets       *socketSet // master socket mode's listeners
	tally         tally
	recycleChecks recycleChecks
	steering      *steering
	taken         *takenSet       // copies of the children's listeners, child socket mode
	announced     bool            // READY=1 sent to systemd
	stopping      StopMode        // 0 while running
	drainCut      bool            // a child was killed at the drain timeout
	reserveWarned map[string]bool // addresses that could not be reserved, said once
	upgrade       upgradeRun      // the upgrade in place under way
	upgrades      int             // upgrades in place since the master started
	resumed       *upgradeState   // what an upgraded master goes on from; nil once Run has
}

// tally holds the totals behind the metrics that outlive the children
// they count.
type tally struct {
	restarts      map[int]int                  // unplanned exits restarted, by slot
	accepted      map[int]uint64               // accepts of the slot's children that are gone
	counted       map[countKey]uint64          // their accepts and datagrams, by slot and listener
	connections   map[int]uint64               // new connections placed by steering programs that are gone, by slot
	rescued       map[int]uint64               // connections moved out of stuck slots' queues, by slot
	unplaced      uint64                       // new connections those programs left to the kernel
	slotsEver     int                          // the most slots any generation had
	reloads       map[metrics.ReloadKey]uint64 // reload outcomes, by result and strategy
	drainKilled   uint64                       // draining children killed for --max-draining-generations
	reloadHist    metrics.HistogramSnapshot
	watchdogKills map[int]uint64        // by slot
	recycles      map[recycleKey]uint64 // completed recycles
	upgrades      map[string]uint64     // upgrades in place, by result
	// What the master's own endpoints and notify socket refused before
	// the last upgrade in place: the live counts start from 0 again.
	notifyDropped uint64
	refused       []metrics.Refusal
}

// New checks cfg and prepares what the children will need, without starting
// any: every error here is the operator's to fix, reported before anything
// runs.
func New(cfg Config, opts Options) (*Supervisor, error) {
	e, devnull, err := osEnv(opts)
	if err != nil {
		return nil, err
	}
	s, err := newSupervisor(cfg, opts, e)
	if err != nil {
		devnull.Close()
		e.fdstore.closeKept()
		return nil, err
	}
	s.devnull = devnull
	return s, nil
}

// osEnv returns the outside world of a supervisor that runs for real, and
// the /dev/null its children get as stdin.
func osEnv(opts Options) (env, *os.File, error) {
	if err := closeOnExecAll(); err != nil {
		return env{}, nil, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return env{}, nil, err
	}
	// The exec shim is loaded and checked here, before any child exists
	// (a reload may switch to master socket mode): its check forks and
	// waits for a process of its own, which the loop must not reap.
	procs := &osProcs{stdin: devnull, log: logger(opts)}
	e := env{procs: procs, clock: wallClock{}, observe: newObserver(procs), steerSupported: steer.Supported,
		shim: execShimPath(), upgrade: osUpgrader{procs: procs}, fdstore: openFDStore(logger(opts))}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		e.notifySystemd = func(state string) error {
			_, err := daemon.SdNotify(false, state)
			return err
		}
		if e.watchdog, err = systemdWatchdog(); err != nil {
			// systemd would kill a master that never pings: say why.
			logger(opts).Warn("malformed watchdog variables from the service manager; the master will not ping it", "err", err)
		}
	}
	return e, devnull, nil
}

// newSupervisor is New with the outside world given: the loop's tests
// call it with fake processes and a fake clock.
func newSupervisor(cfg Config, opts Options, e env) (*Supervisor, error) {
	if e.shim == "" {
		e.shim = "/proc/self/exe" // the master's own binary: ExecShim
	}
	g, err := newGeneration(1, cfg)
	if err != nil {
		return nil, err
	}
	// Listeners passed back by systemd's fd store hold the address.
	e.fdstore.sort(cfg)
	for _, l := range cfg.Listen {
		if err := checkFree(l); err != nil && !e.fdstore.holds(l.key()) {
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the master's executable: %w", err)
	}
	s := newBare(opts, e, self, g)
	on, why, err := decideSteering(cfg, e.steerSupported)
	if err != nil {
		return nil, err
	}
	s.sockets.steer, s.steering.off = on, why
	s.taken.on, s.taken.retire = on, s.foldConnections
	s.followReservations()
	s.sockets.retire = s.foldConnections
	s.sockets.store = e.fdstore
	if err := s.open(cfg); err != nil {
		s.release()
		return nil, err
	}
	return s, nil
}

// newBare returns a supervisor with g serving and nothing else yet.
func newBare(opts Options, e env, self string, g *generation) *Supervisor {
	return &Supervisor{
		opts:     opts,
		log:      logger(opts),
		env:      e,
		self:     self,
		events:   make(chan any, 64),
		quit:     make(chan struct{}),
		children: make(map[int]*child),
		cur:      g,
		sockets:  newSocketSet(),
		tally: tally{
			restarts:      make(map[int]int),
			accepted:      make(map[int]uint64),
			counted:       make(map[countKey]uint64),
			connections:   make(map[int]uint64),
			rescued:       make(map[int]uint64),
			reloads:       make(map[metrics.ReloadKey]uint64),
			watchdogKills: make(map[int]uint64),
			recycles:      make(map[recycleKey]uint64),
			upgrades:      make(map[string]uint64),
		},
		steering: newSteering(),
		taken:    newTakenSet(),
		gate:     newNotifyGate(os.Geteuid()),
	}
}

// logger returns opts.Log, or a logger that discards.
func logger(opts Options) *slog.Logger {
	if opts.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return opts.Log
}

// open binds what the master itself serves on: master socket mode's
// listeners, the control socket, the metrics endpoint and the notify
// socket.
func (s *Supervisor) open(cfg Config) (err error) {
	if cfg.Sockets == SocketsMaster {
		if err := s.sockets.ensure(cfg.Listen, cfg.Workers); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	if cfg.Control != "" {
		if s.control, err = listenControl(cfg.Control); err != nil {
			return err
		}
	}
	if cfg.Metrics != "" {
		if s.metrics, err = net.Listen("tcp", cfg.Metrics); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	s.notify, err = listenNotify()
	return err
}

// newGeneration checks cfg, and the descriptor limit against it, and
// resolves its command.
func newGeneration(number int, cfg Config) (*generation, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkFDs(cfg); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(cfg.Command[0])
	if err == nil {
		path, err = filepath.Abs(path)
	}
	if err != nil {
		return nil, fmt.Errorf("command: %w", err)
	}
	id, err := resolveIdentity(cfg)
	if err != nil {
		return nil, err
	}
	g := &generation{number: number, cfg: cfg, argv: append([]string{path}, cfg.Command[1:]...), id: id}
	g.slots = make([]*slot, cfg.Workers)
	for i := range g.slots {
		g.slots[i] = &slot{}
	}
	return g, nil
}

// release closes what New opened.
func (s *Supervisor) release() {
	if s.control != nil {
		// Remove before close: once closed, a successor may bind the path.
		os.Remove(s.cur.cfg.Control)
		s.control.Close()
	}
	if s.metrics != nil {
		s.metrics.Close()
	}
	if s.notify != nil {
		s.notify.close()
	}
	if s.devnull != nil {
		s.devnull.Close()
	}
	s.sockets.keepStored() // a stop removed them already; a failed start keeps them
	s.sockets.closeAll()
	s.taken.closeAll()
}

// Run starts the children and supervises them until a stop, requested by
// Stop, by the admin API or by cancelling ctx (a graceful stop), has ended
// with every child reaped. It returns nil then, or ErrDrainCut when a
// child of a graceful stop was killed at the drain timeout.
func (s *Supervisor) Run(ctx context.Context) error {
	defer s.release()
	stopProcs := s.env.procs.run(func() { s.send(sigchld{}) })
	if s.resumed == nil {
		s.env.procs.reap(s.exited) // anything that ended before we subscribed
	}
	notifyDone := make(chan struct{})
	go func() {
		defer close(notifyDone)
		s.readNotify()
	}()
	var admin, metricsSrv *http.Server
	if s.control != nil {
		admin = newServer(s.adminHandler(), s.log, masterServerLimits)
		g := guard(s.control, "control", ControlConnCap, checkControlPeer, s.log)
		s.guards = append(s.guards, g)
		go g.serve(admin)
	}
	if s.metrics != nil {
		metricsSrv = newServer(s.metricsHandler(), s.log, masterServerLimits)
		g := guard(s.metrics, "metrics", MetricsConnCap, nil, s.log)
		s.guards = append(s.guards, g)
		go g.serve(metricsSrv)
	}
	s.warnMigrateReq(s.cur.cfg)
	switch {
	case s.steering.off != "" && s.cur.cfg.Steer == SteerAuto:
		s.log.Info("steering is off", "reason", s.steering.off)
	case s.steering.off == "" && s.cur.cfg.Sockets == SocketsMaster:
		s.log.Info("steering is on: new connections, and those queued, are steered away from a stuck or missing child")
	}

	if s.resumed != nil {
		// Upgraded in place: the children run on. Their timers first,
		// then the exits that happened during the exec.
		s.resumeChildren()
		s.env.procs.reap(s.exited)
	} else {
		for i := range s.cur.slots {
			s.startServing(i)
		}
	}
	s.loop(ctx)

	close(s.quit)
	s.undoPending()
	if admin != nil {
		os.Remove(s.cur.cfg.Control)
		admin.Close()
	}
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	stopProcs()
	s.notify.close()
	<-notifyDone
	if s.drainCut && s.stopping == StopGraceful {
		return ErrDrainCut
	}
	return nil
}

// serverLimits are the deadlines of one of the master's HTTP servers: a
// client may take readHeader to send a request's headers and read for
// all of it (none has a body worth the name), write to take its answer,
// and may keep a connection idle for idle.
type serverLimits struct {
	readHeader, read, write, idle time.Duration
}

// masterServerLimits are those of the control socket and the metrics
// endpoint. POST /reload lifts them for its own request (untimed), which
// waits for the reload. With the caps of guard, they keep idle and slow
// clients from holding the master's descriptors.
var masterServerLimits = serverLimits{readHeader: 5 * time.Second, read: 10 * time.Second,
	write: 30 * time.Second, idle: 60 * time.Second}

// newServer returns an HTTP server of the master's with limits; its own
// errors (accept failing, a handler's panic) go to the master's log, not
// unformatted to its stderr.
func newServer(h http.Handler, log *slog.Logger, limits serverLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: limits.readHeader,
		ReadTimeout:       limits.read,
		WriteTimeout:      limits.write,
		IdleTimeout:       limits.idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// notifySystemd tells the service manager that started the master, if any
// (NOTIFY_SOCKET in the master's environment), about the master's state:
// the Type=notify-reload protocol of systemd.
func (s *Supervisor) notifySystemd(state string) {
	if s.env.notifySystemd == nil {
		return
	}
	if err := s.env.notifySystemd(state); err != nil {
		s.log.Warn("could not notify the service manager", "err", err)
	}
}

// readNotify sends the loop every sd_notify datagram the gate admits,
// with its sender's pid, until Run closes the socket. It says what the
// gate drops, at most every notifyReportEvery.
func (s *Supervisor) readNotify() {
	buf := make([]byte, notifyMaxDatagram)
	oob := make([]byte, credentialsSpace)
	for {
		// The deadline only wakes the reader to say what it dropped
		// after a flood has ended.
		s.notify.setReadDeadline(time.Now().Add(notifyReportEvery))
		pid, uid, data, err := s.notify.read(buf, oob)
		switch {
		case errors.Is(err, net.ErrClosed):
			return // closed by Run
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.reportNotifyDrops()
			continue
		case err != nil:
			// Ending here would leave every later child unready forever.
			s.log.Error("could not read the notify socket", "err", err)
			continue
		}
		now := s.env.clock.Now()
		if !s.gate.admit(pid, uid, now) {
			s.reportNotifyDrops()
			if d := s.gate.pause(now); d > 0 {
				time.Sleep(d) // a flood: let it wait in the queue
			}
			continue
		}
		s.send(notified{pid: pid, msg: parseNotify(data), at: now})
	}
}

// reportNotifyDrops says which senders the gate dropped datagrams of.
func (s *Supervisor) reportNotifyDrops() {
	r, ok := s.gate.report(s.env.clock.Now())
	if !ok {
		return
	}
	pids := slices.SortedFunc(maps.Keys(r.senders), func(a, b int) int { return cmp.Compare(r.senders[b], r.senders[a]) })
	top := pids[:min(len(pids), 5)]
	s.log.Warn("dropped sd_notify datagrams over the rate limit or from another user", "dropped", r.dropped,
		"dropped_total", r.total, "senders", len(pids), "top_pids", top, "top_count", r.senders[top[0]],
		"limit_per_child_per_s", notifyPerChild, "limit_others_per_s", notifyOthers)
}

// warnMigrateReq warns, in child socket mode, when the kernel will reset
// the connections queued on an exiting child's listener: when the
// steering program cannot move them instead.
func (s *Supervisor) warnMigrateReq(cfg Config) {
	if cfg.Sockets != SocketsChild {
		return
	}
	if s.taken.on && !s.taken.noMigrate {
		s.log.Info("child socket mode: the steering program moves the connections queued on an exiting child's listener to the others, whatever net.ipv4.tcp_migrate_req says, once the master holds a copy of the children's listeners")
		return
	}
	on, err := sockopt.MigrateReq()
	if err != nil {
		s.log.Warn("cannot read net.ipv4.tcp_migrate_req", "err", err)
		return
	}
	if !on {
		s.log.Warn("net.ipv4.tcp_migrate_req is 0: a reload or crash resets the connections queued on the exiting child's listener; fix with: sysctl -w net.ipv4.tcp_migrate_req=1, or use --sockets master")
	}
}
