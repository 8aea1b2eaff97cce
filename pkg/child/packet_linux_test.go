package child

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// childModeEnv sets up a child that binds its own listeners: name=address
// pairs in order, on the counters page fd (or none for -1), with a fresh
// listener table.
func childModeEnv(t *testing.T, countersFD int, listeners ...string) {
	t.Helper()
	t.Setenv("LISTEN_FDS", "")
	var names []string
	for _, l := range listeners {
		name, addr, _ := strings.Cut(l, "=")
		names = append(names, name)
		t.Setenv(listenVar(name), addr)
	}
	t.Setenv(envListeners, strings.Join(names, ","))
	if countersFD >= 0 {
		t.Setenv(envCountersFD, itoa(countersFD))
	} else {
		t.Setenv(envCountersFD, "")
	}
	useFreshListeners(t)
}

// listenPacket calls ListenPacket and closes the conn at cleanup.
func listenPacket(t *testing.T, name string) *PacketConn {
	t.Helper()
	pc, err := ListenPacket(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.(*PacketConn)
}

// dialUDP returns a connected client of pc, closed at cleanup.
func dialUDP(t testing.TB, pc net.PacketConn) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Every read method of PacketConn counts one datagram on its listener's
// counter and in the datagram total; accepts on a stream listener go to
// its own counter.
func TestListenPacketCountsDatagrams(t *testing.T) {
	page, fd := newCountersPage(t)
	childModeEnv(t, fd, "web=127.0.0.1:0", "dns=udp://127.0.0.1:0", "stats=udp://127.0.0.1:0")
	ln, err := Listen(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	stats := listenPacket(t, "stats")
	dns := listenPacket(t, "") // the first UDP listener
	for _, pc := range []*PacketConn{dns, stats} {
		if err := pc.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
	}
	client := dialUDP(t, dns)
	buf, oob := make([]byte, 64), make([]byte, 64)
	reads := []struct {
		name string
		read func() error
	}{
		{"Read", func() error { _, err := dns.Read(buf); return err }},
		{"ReadFrom", func() error { _, _, err := dns.ReadFrom(buf); return err }},
		{"ReadFromUDP", func() error { _, _, err := dns.ReadFromUDP(buf); return err }},
		{"ReadFromUDPAddrPort", func() error { _, _, err := dns.ReadFromUDPAddrPort(buf); return err }},
		{"ReadMsgUDP", func() error { _, _, _, _, err := dns.ReadMsgUDP(buf, oob); return err }},
		{"ReadMsgUDPAddrPort", func() error { _, _, _, _, err := dns.ReadMsgUDPAddrPort(buf, oob); return err }},
		{"through net.PacketConn", func() error { _, _, err := net.PacketConn(dns).ReadFrom(buf); return err }},
	}
	for i, r := range reads {
		if _, err := client.Write([]byte(r.name)); err != nil {
			t.Fatal(err)
		}
		if err := r.read(); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		if got := page.Listener(1); got != uint64(i+1) {
			t.Fatalf("after %s: dns counted %d datagrams, want %d", r.name, got, i+1)
		}
	}
	// An empty datagram is one too; a failed read is none.
	if _, err := dialUDP(t, stats).Write(nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := stats.ReadFromUDPAddrPort(buf); err != nil {
		t.Fatal(err)
	}
	stats.SetReadDeadline(time.Now())
	if _, _, err := stats.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatal("read past the deadline succeeded")
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	n := uint64(len(reads))
	got := [...]uint64{page.Accepts(), page.Datagrams(), page.Listener(0), page.Listener(1), page.Listener(2), page.Listener(3)}
	if want := [...]uint64{1, n + 1, 1, n, 1, 0}; got != want {
		t.Errorf("accepts, datagrams, listeners 0-3 = %v, want %v", got, want)
	}
}

// Counting a datagram allocates nothing on the path that allocates
// nothing itself.
func TestPacketConnReadNoAlloc(t *testing.T) {
	_, fd := newCountersPage(t)
	childModeEnv(t, fd, "dns=udp://127.0.0.1:0")
	pc := listenPacket(t, "dns")
	if pc.counter == nil {
		t.Fatal("no counter")
	}
	client := dialUDP(t, pc)
	msg, buf := []byte("q"), make([]byte, 16)
	pc.SetReadDeadline(time.Now().Add(waitTimeout))
	var err error
	allocs := testing.AllocsPerRun(100, func() {
		if _, err = client.Write(msg); err != nil {
			return
		}
		_, _, err = pc.ReadFromUDPAddrPort(buf)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("a counted ReadFromUDPAddrPort allocates %v times", allocs)
	}
}

// Children binding the same UDP address share it (SO_REUSEPORT).
func TestListenPacketReuseport(t *testing.T) {
	childModeEnv(t, -1, "dns=udp://127.0.0.1:0")
	first := listenPacket(t, "dns")
	childModeEnv(t, -1, "dns=udp://"+first.LocalAddr().String())
	second := listenPacket(t, "dns") // a second child's table
	if second.LocalAddr().String() != first.LocalAddr().String() {
		t.Errorf("second child on %s, want %s", second.LocalAddr(), first.LocalAddr())
	}
	if second.counter != nil {
		t.Error("a counter without a page")
	}
}

func TestListenErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		listeners []string
		take      func() error
		wantErr   string
	}{
		{
			name:      "Listen of a UDP first listener",
			listeners: []string{"dns=udp://127.0.0.1:0", "web=127.0.0.1:0"},
			take:      func() error { _, err := Listen(ctx); return err },
			wantErr:   `listener "dns" is a UDP listener: take it with ListenPacket`,
		},
		{
			name:      "ListenNamed of a UDP listener",
			listeners: []string{"web=127.0.0.1:0", "dns=udp://127.0.0.1:0"},
			take:      func() error { _, err := ListenNamed(ctx, "dns"); return err },
			wantErr:   `listener "dns" is a UDP listener: take it with ListenPacket`,
		},
		{
			name:      "ListenPacket of a stream listener",
			listeners: []string{"web=127.0.0.1:0", "dns=udp://127.0.0.1:0"},
			take:      func() error { _, err := ListenPacket(ctx, "web"); return err },
			wantErr:   `listener "web" is a stream listener: take it with ListenNamed`,
		},
		{
			name:      "unknown name",
			listeners: []string{"web=127.0.0.1:0", "dns=udp://127.0.0.1:0"},
			take:      func() error { _, err := ListenNamed(ctx, "admin"); return err },
			wantErr:   `no listener "admin" (listeners: web, dns)`,
		},
		{
			name:      "no UDP listener",
			listeners: []string{"web=127.0.0.1:0"},
			take:      func() error { _, err := ListenPacket(ctx, ""); return err },
			wantErr:   "no UDP listener (listeners: web)",
		},
		{
			name:      "stream listener taken twice",
			listeners: []string{"web=127.0.0.1:0"},
			take: func() error {
				ln, err := Listen(ctx)
				if err != nil {
					return err
				}
				defer ln.Close()
				_, err = ListenNamed(ctx, "web")
				return err
			},
			wantErr: `listener "web" already taken`,
		},
		{
			name:      "packet listener taken twice",
			listeners: []string{"dns=udp://127.0.0.1:0"},
			take: func() error {
				pc, err := ListenPacket(ctx, "dns")
				if err != nil {
					return err
				}
				defer pc.Close()
				_, err = ListenPacket(ctx, "")
				return err
			},
			wantErr: `listener "dns" already taken`,
		},
		{
			name:      "UDP bind failure",
			listeners: []string{"dns=udp://127.0.0.1:notaport"},
			take:      func() error { _, err := ListenPacket(ctx, "dns"); return err },
			wantErr:   `listener "dns": bind: `,
		},
		{
			name:      "a parse error is every call's",
			listeners: []string{"web=127.0.0.1:0", "dns="},
			take:      func() error { _, err := Listen(ctx); return err },
			wantErr:   `listener "dns": PREFORK_LISTEN_DNS is unset`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			childModeEnv(t, -1, tt.listeners...)
			err := tt.take()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}

// Listeners reads the table; concurrent takes of one name give it to
// exactly one caller.
func TestListenersConcurrent(t *testing.T) {
	childModeEnv(t, -1, "web=127.0.0.1:0", "admin=tcp://127.0.0.1:0", "dns=udp://127.0.0.1:0")
	const callers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := map[string]int{}
	for range callers {
		wg.Go(func() {
			ls, err := Listeners()
			if err != nil {
				t.Error(err)
				return
			}
			for _, l := range ls {
				var c interface{ Close() error }
				if l.Network == netUDP {
					c, err = ListenPacket(context.Background(), l.Name)
				} else {
					c, err = ListenNamed(context.Background(), l.Name)
				}
				if err != nil {
					continue
				}
				c.Close()
				mu.Lock()
				won[l.Name]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(won) != 3 || won["web"] != 1 || won["admin"] != 1 || won["dns"] != 1 {
		t.Errorf("takes per name %v, want one each of web, admin, dns", won)
	}
	ls, err := Listeners()
	if err != nil {
		t.Fatal(err)
	}
	want := []NamedListener{{"web", "tcp"}, {"admin", "tcp"}, {"dns", "udp"}}
	if len(ls) != len(want) || ls[0] != want[0] || ls[1] != want[1] || ls[2] != want[2] {
		t.Errorf("Listeners() = %v, want %v", ls, want)
	}
}

// The address a client sees answers come from: the conn reads the
// sender, so answering through it reaches the client.
func TestPacketConnAnswers(t *testing.T) {
	childModeEnv(t, -1, "dns=udp://127.0.0.1:0")
	pc := listenPacket(t, "")
	client := dialUDP(t, pc)
	client.SetDeadline(time.Now().Add(waitTimeout))
	pc.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, from, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddrPort(client.LocalAddr().String()); from != want || string(buf[:n]) != "ping" {
		t.Fatalf("read %q from %v, want ping from %v", buf[:n], from, want)
	}
	if _, err := pc.WriteToUDPAddrPort([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	if n, err := client.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("client read %q, %v; want pong", buf[:n], err)
	}
}

var _ net.PacketConn = (*PacketConn)(nil)
