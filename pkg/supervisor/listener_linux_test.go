package supervisor

import (
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
	"github.com/prefork/prefork/pkg/metrics"
	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// namedListeners are an HTTP, an admin and a DNS listener on free
// loopback ports.
func namedListeners(t *testing.T) Listeners {
	return Listeners{
		{Name: "http", Network: NetTCP, Addr: testkit.FreeAddr(t)},
		{Name: "admin-api", Network: NetTCP, Addr: testkit.FreeAddr(t)},
		{Name: "dns", Network: NetUDP, Addr: testkit.FreeAddr(t)},
	}
}

// slotCount returns the count of slot's listener name in a snapshot.
func slotCount(t *testing.T, h *harness, slot int, name string) (metrics.SlotListener, bool) {
	t.Helper()
	snap, err := h.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(snap.Slots[slot].Listeners, func(l metrics.SlotListener) bool { return l.Name == name })
	if i < 0 {
		return metrics.SlotListener{}, false
	}
	return snap.Slots[slot].Listeners[i], true
}

// In master socket mode every listener of the slot is passed, in order,
// as fds 3, 4, 5, named in LISTEN_FDNAMES; a UDP listener is a bound
// datagram socket. The children's counts are kept by listener, and a
// reload that removes one and moves another releases their sockets but
// keeps the UDP one, and every count.
func TestNamedListenersMasterMode(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	cfg.Sockets = SocketsMaster
	cfg.Listen = namedListeners(t)
	next := cfg
	next.Listen = Listeners{{Name: "http", Network: NetTCP, Addr: testkit.FreeAddr(t)}, cfg.Listen[2]}
	h := newHarness(t, cfg, func(e *env, o *Options) {
		o.Load = func() (Config, error) { return next, nil }
	})
	p := h.child(0, 1)
	for k, want := range map[string]string{
		"LISTEN_FDS": "3", "LISTEN_FDNAMES": "http:admin-api:dns", "PREFORK_COUNTERS_FD": "6",
		"PREFORK_LISTENERS": "http,admin-api,dns", "PREFORK_LISTEN": cfg.Listen[0].Addr,
		"PREFORK_LISTEN_HTTP": cfg.Listen[0].Addr, "PREFORK_LISTEN_ADMIN_API": cfg.Listen[1].Addr,
		"PREFORK_LISTEN_DNS": "udp://" + cfg.Listen[2].Addr,
	} {
		if p.env[k] != want {
			t.Errorf("%s = %q, want %q", k, p.env[k], want)
		}
	}
	if len(p.spec.extra) != 4 {
		t.Fatalf("extra fds %v, want 3 sockets and the counter page", p.spec.extra)
	}
	for i, want := range []int{unix.SOCK_STREAM, unix.SOCK_STREAM, unix.SOCK_DGRAM} {
		if typ, err := unix.GetsockoptInt(p.spec.extra[i], unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != want {
			t.Errorf("fd %d (listener %d): type %d, %v; want %d", 3+i, i, typ, err, want)
		}
	}
	dnsFD := p.spec.extra[2]
	h.readyAll(1)
	if p.counter == nil {
		t.Fatal("no counter page")
	}
	for range 3 {
		p.counter.Accept(0)
	}
	p.counter.Accept(1)
	for range 5 {
		p.counter.Datagram(2)
	}
	for name, want := range map[string]uint64{"http": 3, "admin-api": 1, "dns": 5} {
		if l, ok := slotCount(t, h, 0, name); !ok || l.Count != want || l.Inode == 0 || l.Port == 0 {
			t.Errorf("slot 0 %s: %+v, %v; want count %d, an inode and a port", name, l, ok, want)
		}
	}
	if l, _ := slotCount(t, h, 0, "dns"); l.Network != NetUDP {
		t.Errorf("dns listener: network %q", l.Network)
	}
	if c := h.status().Children[0]; c.Accepts != 4 || c.Datagrams != 5 {
		t.Errorf("status of slot 0's child: %d accepts, %d datagrams; want 4 and 5", c.Accepts, c.Datagrams)
	}

	res := h.reloadAsync()
	h.readyAll(2)
	if r := h.result(res); r.Err != nil {
		t.Fatalf("reload: %+v", r)
	}
	q := h.child(0, 2)
	if q.env["LISTEN_FDS"] != "2" || q.env["LISTEN_FDNAMES"] != "http:dns" || q.env["PREFORK_COUNTERS_FD"] != "5" {
		t.Errorf("generation 2 env: %v", q.env)
	}
	if q.spec.extra[1] != dnsFD {
		t.Errorf("generation 2's UDP socket is fd %d, want the same socket %d: its queued datagrams stay", q.spec.extra[1], dnsFD)
	}
	h.waitFor("the removed and moved listeners' sockets closed", func() bool {
		var keys []string
		h.onLoop(func() {
			for k := range h.s.sockets.m {
				keys = append(keys, k.addr)
			}
		})
		return !slices.Contains(keys, cfg.Listen[0].key()) && !slices.Contains(keys, cfg.Listen[1].key()) &&
			slices.Contains(keys, next.Listen[0].key()) && slices.Contains(keys, cfg.Listen[2].key())
	})
	q.counter.Datagram(1)
	h.exit(p, 0)
	h.waitFor("the old child reaped", func() bool { return len(h.procs.live()) == 2 })
	for name, want := range map[string]uint64{"http": 3, "admin-api": 1, "dns": 6} {
		if l, ok := slotCount(t, h, 0, name); !ok || l.Count != want {
			t.Errorf("after the reload, slot 0 %s: %+v, %v; want count %d", name, l, ok, want)
		}
	}
	if l, _ := slotCount(t, h, 0, "admin-api"); l.Port != 0 || l.Inode != 0 {
		t.Errorf("the removed listener still has a socket: %+v", l)
	}
}

// In child socket mode each child gets its listeners by name, and
// {listen:NAME} in its arguments.
func TestNamedListenersChildMode(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Listen = namedListeners(t)
	cfg.Command = []string{"/bin/true", "--dns={listen:dns}", "--http-port={port:http}", "--first={listen}"}
	h := newHarness(t, cfg)
	p := h.child(0, 1)
	_, port, _ := net.SplitHostPort(cfg.Listen[0].Addr)
	want := []string{"/bin/true", "--dns=" + cfg.Listen[2].Addr, "--http-port=" + port, "--first=" + cfg.Listen[0].Addr}
	if !slices.Equal(p.spec.argv, want) {
		t.Errorf("argv %q, want %q", p.spec.argv, want)
	}
	if _, ok := p.env["LISTEN_FDS"]; ok || p.env["PREFORK_LISTEN_DNS"] != "udp://"+cfg.Listen[2].Addr || p.env["PREFORK_COUNTERS_FD"] != "3" {
		t.Errorf("env %v", p.env)
	}
}

// sendFromPorts sends one datagram to addr from each of n sockets of
// their own (n source ports).
func sendFromPorts(t *testing.T, addr string, n int) {
	t.Helper()
	for range n {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// drained reads every datagram waiting on the non-blocking socket fd and
// returns how many there were.
func drained(t *testing.T, fd int) int {
	t.Helper()
	buf := make([]byte, 64)
	for n := 0; ; n++ {
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != nil {
			return n
		}
	}
}

// In master socket mode the health the checks decide on the first TCP
// listener applies to the groups of the others, UDP included: datagrams
// go to the healthy slots only while one is stuck, and to all again once
// it is back.
func TestSteeringMirroredOnUDP(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 2)
	cfg.Sockets, cfg.Steer, cfg.Watchdog = SocketsMaster, SteerOn, time.Second
	cfg.Listen = Listeners{{Name: "http", Network: NetTCP, Addr: testkit.FreeAddr(t)},
		{Name: "dns", Network: NetUDP, Addr: testkit.FreeAddr(t)}}
	h := newHarnessSteering(t, cfg)
	p1 := h.child(1, 1)
	h.readyAll(1)
	h.clock.Advance(steerInterval)
	var fds [2]int
	h.onLoop(func() {
		for i := range fds {
			fds[i] = h.s.sockets.held(cfg.Listen[1].key(), i)
		}
	})
	// Fewer than a receive buffer holds (each datagram is charged
	// about 800 bytes here, the default buffer is 208 KiB).
	const n = 200
	sendFromPorts(t, cfg.Listen[1].Addr, n)
	got0, got1 := drained(t, fds[0]), drained(t, fds[1])
	if got0+got1 != n || got0 == 0 || got1 == 0 {
		t.Fatalf("both slots healthy: %d and %d datagrams of %d, want both some", got0, got1, n)
	}

	p1.ignore[syscall.SIGQUIT] = true
	h.notify(p1, notification{Watchdog: true})
	h.clock.Advance(time.Second)
	h.clock.Advance(steerInterval)
	if snap, _ := h.s.Snapshot(); !snap.Slots[1].SteeredAway {
		t.Fatalf("slot 1 hung but not steered away: %+v", snap.Slots[1])
	}
	sendFromPorts(t, cfg.Listen[1].Addr, n)
	if got0, got1 := drained(t, fds[0]), drained(t, fds[1]); got0 != n || got1 != 0 {
		t.Errorf("slot 1 stuck: %d and %d datagrams, want %d and 0", got0, got1, n)
	}
}

// A crashed child's slot gets a new socket on every TCP listener, so
// that the connections queued for it on each move to the healthy slots;
// its UDP socket stays, its datagrams waiting for the slot's next child.
func TestCrashRenewsEveryTCPSocket(t *testing.T) {
	t.Parallel()
	if err := steer.Supported(); err != nil {
		t.Skipf("the steering program does not load here: %v", err)
	}
	cfg := testConfig(t, 2)
	cfg.Sockets, cfg.Steer = SocketsMaster, SteerOn
	cfg.Listen = namedListeners(t)
	h := newHarnessSteering(t, cfg)
	h.readyAll(1)
	h.clock.Advance(steerInterval)
	held := func() (fds []int) {
		h.onLoop(func() {
			for _, l := range cfg.Listen {
				fds = append(fds, h.s.sockets.held(l.key(), 1))
			}
		})
		return fds
	}
	var migrates bool
	h.onLoop(func() { migrates = h.s.sockets.steerer(cfg.Listen[0].key()).Migrates() })
	if !migrates {
		t.Skip("the steering program does not migrate here (before Linux 5.14): no socket is renewed")
	}
	before := held()
	h.exit(h.child(1, 1), killedBy(unix.SIGKILL))
	if n := h.logs.count("socket of the slot renewed"); n != 2 {
		t.Errorf("%d sockets renewed, want the 2 TCP listeners'", n)
	}
	if after := held(); after[2] != before[2] {
		t.Errorf("the UDP socket of slot 1 changed (fd %d to %d): its datagrams would be lost", before[2], after[2])
	}
}
