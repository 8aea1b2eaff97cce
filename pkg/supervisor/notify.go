package supervisor

import (
	"bytes"
	"strconv"
	"sync"
	"time"
)

// notification is one sd_notify datagram, decoded. Only the fields prefork
// acts on are kept; unknown assignments are ignored, as systemd does.
type notification struct {
	Ready     bool   // READY=1
	Reloading bool   // RELOADING=1
	Stopping  bool   // STOPPING=1
	Watchdog  bool   // WATCHDOG=1
	Status    string // STATUS=...
	MainPID   int    // MAINPID=...
}

// parseNotify decodes an sd_notify datagram: newline-separated KEY=VALUE
// assignments. Malformed lines are skipped rather than failing the whole
// message, so a sender's extra fields never hide its READY=1.
func parseNotify(data []byte) notification {
	var n notification
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		key, value, ok := bytes.Cut(line, []byte("="))
		if !ok {
			continue
		}
		switch string(key) {
		case "READY":
			n.Ready = string(value) == "1"
		case "RELOADING":
			n.Reloading = string(value) == "1"
		case "STOPPING":
			n.Stopping = string(value) == "1"
		case "WATCHDOG":
			n.Watchdog = string(value) == "1"
		case "STATUS":
			n.Status = string(value)
		case "MAINPID":
			if pid, err := strconv.Atoi(string(value)); err == nil && pid > 0 {
				n.MainPID = pid
			}
		}
	}
	return n
}

// Rates of sd_notify datagrams the loop hears, per second. Any local user
// can send to the notify socket (its abstract name is listed in
// /proc/net/unix), and each datagram from a pid outside the table costs
// the loop a walk up /proc: beyond these rates, datagrams are dropped,
// counted and said, so that a flood costs the master little and cannot
// crowd out its children.
const (
	// notifyPerChild is the rate allowed to each child's own pid: far
	// above what any child needs (a watchdog ping every few ms).
	notifyPerChild = 1000
	// notifyOthers is the rate allowed to every other pid together: a
	// forking server's worker, or a program behind a wrapper, says
	// READY=1 once.
	notifyOthers = 100
	// notifyReportEvery is how often the drops are said, at most.
	notifyReportEvery = 10 * time.Second
	// A flood is read at no more than notifyDropBurst datagrams dropped
	// per notifyDropSlice: reading a datagram costs about a microsecond,
	// and a reader that keeps up with any sender would spend a core on
	// it. The socket's queue then fills and the senders wait; a child's
	// datagram waits behind at most a queue's worth (512 by default,
	// about 25 ms at this rate).
	notifyDropBurst = 200
	notifyDropSlice = 10 * time.Millisecond
)

// notifyGate decides which sd_notify datagrams reach the loop. Only the
// uids that may have sent one count: the master's, root's, and those its
// children run as (--user); another user's datagram is dropped at once,
// so that no other user can use up a budget. Then a child's own pid has a
// budget of its own, and every other pid shares one, in windows of a
// second. The loop tells it the children's pids as they start and go,
// and their uid before they start; the notify reader asks it about every
// datagram.
type notifyGate struct {
	mu       sync.Mutex
	uids     map[int]bool // uids whose datagrams may be heard
	children map[int]int  // pid -> datagrams in this window
	others   int          // datagrams of other pids in this window
	window   time.Time    // start of this window
	dropped  map[int]uint64
	period   uint64 // datagrams dropped since the last report
	total    uint64 // every datagram dropped since the start
	reported time.Time
	slice    time.Time // start of this notifyDropSlice
	inSlice  int       // datagrams dropped in it
}

// newNotifyGate returns a gate that hears root and uid self (the master's
// effective uid).
func newNotifyGate(self int) *notifyGate {
	return &notifyGate{uids: map[int]bool{0: true, self: true}, children: make(map[int]int),
		dropped: make(map[int]uint64)}
}

// allowUID lets datagrams of uid through, from before a child of that uid
// starts: it may speak at once. The set only grows, with each --user a
// reload brings.
func (g *notifyGate) allowUID(uid int) {
	g.mu.Lock()
	g.uids[uid] = true
	g.mu.Unlock()
}

// add and remove keep the gate's children the loop's.
func (g *notifyGate) add(pid int) {
	g.mu.Lock()
	g.children[pid] = 0
	g.mu.Unlock()
}

func (g *notifyGate) remove(pid int) {
	g.mu.Lock()
	delete(g.children, pid)
	g.mu.Unlock()
}

// admit says whether a datagram from pid of uid, read at now, goes to
// the loop.
func (g *notifyGate) admit(pid, uid int, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.window) >= time.Second || now.Before(g.window) {
		g.window, g.others = now, 0
		for p := range g.children {
			g.children[p] = 0
		}
	}
	switch n, ok := g.children[pid]; {
	case !g.uids[uid]:
	case ok && n < notifyPerChild:
		g.children[pid] = n + 1
		return true
	case !ok && g.others < notifyOthers:
		g.others++
		return true
	}
	if _, named := g.dropped[pid]; named || len(g.dropped) < maxReportedSenders {
		g.dropped[pid]++
	}
	g.period++
	g.total++
	return false
}

// pause returns how long the reader should wait before it reads again:
// until the end of this slice, once more than notifyDropBurst datagrams
// were dropped in it; else 0.
func (g *notifyGate) pause(now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.slice) >= notifyDropSlice || now.Before(g.slice) {
		g.slice, g.inSlice = now, 0
	}
	g.inSlice++
	if g.inSlice <= notifyDropBurst {
		return 0
	}
	return g.slice.Add(notifyDropSlice).Sub(now)
}

// maxReportedSenders bounds the pids one report names: a flood from many
// processes is said by its total.
const maxReportedSenders = 64

// notifyReport is what the gate dropped since its last report.
type notifyReport struct {
	senders map[int]uint64 // by pid, for at most maxReportedSenders pids
	dropped uint64         // since the last report, from every pid
	total   uint64         // since the start
}

// report returns what was dropped since the last report, at most once
// per notifyReportEvery (the first drop is said at once). ok is false
// when there is nothing to say yet.
func (g *notifyGate) report(now time.Time) (r notifyReport, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.period == 0 || !g.reported.IsZero() && now.Sub(g.reported) < notifyReportEvery {
		return notifyReport{total: g.total}, false
	}
	r = notifyReport{senders: g.dropped, dropped: g.period, total: g.total}
	g.dropped, g.period, g.reported = make(map[int]uint64), 0, now
	return r, true
}

// dropCount is every datagram dropped since the start.
func (g *notifyGate) dropCount() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}
