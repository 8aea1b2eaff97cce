package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// udpLoad is what a datagram load saw: sent, and answers read (late ones
// too).
type udpLoad struct{ sent, answered int }

func (l udpLoad) lost() int { return l.sent - l.answered }

// runUDPLoad sends datagrams to addr from clients sockets of their own,
// each waiting for an answer (up to wait) before it sends the next, until
// ctx ends or max are sent; then each waits up to wait for late answers.
// Every answer read counts, whichever datagram it answers.
func runUDPLoad(ctx context.Context, t *testing.T, addr string, clients, max int, wait time.Duration) udpLoad {
	var mu sync.Mutex
	var total udpLoad
	var wg sync.WaitGroup
	for range clients {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Error(err)
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			var mine udpLoad
			buf := make([]byte, 256)
			read := func() bool {
				c.SetReadDeadline(time.Now().Add(wait))
				_, err := c.Read(buf)
				if err == nil {
					mine.answered++
				}
				return err == nil
			}
			for ctx.Err() == nil && mine.sent < max/clients {
				if _, err := c.Write([]byte("q")); err != nil {
					continue // ECONNREFUSED of an earlier datagram: counted as lost
				}
				mine.sent++
				read()
			}
			for mine.answered < mine.sent && read() {
			}
			mu.Lock()
			total.sent += mine.sent
			total.answered += mine.answered
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

// askUDP sends one datagram to addr and returns the answer.
func askUDP(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 256)
	for range 10 { // a datagram may be refused while a child starts
		if _, err := c.Write([]byte("q")); err != nil {
			continue
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no answer from udp %s", addr)
	return ""
}

// nginx with an HTTP, an admin and a UDP listener (the stream module):
// each answers on its own address in both socket modes, and over a
// generation and a rolling reload under a datagram load, master mode
// loses no datagram (the slot's next nginx reads the same socket) while
// child mode loses what waited in each closing socket.
func TestServerNginxListeners(t *testing.T) {
	t.Parallel()
	needServer(t, "nginx (Debian nginx-light)", "/usr/sbin/nginx", "-v")
	needServer(t, "nginx's stream module (Debian libnginx-mod-stream)", "test", "-e", "/usr/lib/nginx/modules/ngx_stream_module.so")
	for _, sockets := range []string{"child", "master"} {
		t.Run(sockets, func(t *testing.T) {
			t.Parallel()
			http, admin, dns, dir := testkit.FreeAddr(t), testkit.FreeAddr(t), testkit.FreeAddr(t), t.TempDir()
			vars := map[string]string{"HTTP": http, "ADMIN": admin, "DNS": dns + " udp", "DIR": dir}
			args := []string{"--workers", "2", "--sockets", sockets, "--ready", "listen", "--stop-signal", "QUIT",
				"--listen", "http=" + http, "--listen", "admin=" + admin, "--listen", "dns=udp://" + dns}
			if sockets == "child" {
				for _, k := range []string{"HTTP", "ADMIN", "DNS"} {
					vars[k] += " reuseport"
				}
			} else {
				cfg := filepath.Join(dir, "prefork.yaml")
				writeConfig(t, cfg, "env:\n  NGINX: \"3;4;5;\"\n")
				args = append(args, "--config", cfg)
			}
			conf := fill(t, filepath.Join(servers(t), "nginx-listeners.conf"), dir, vars)
			args = append(args, "--", "/usr/sbin/nginx", "-e", "stderr", "-c", conf, "-g", "pid "+dir+"/nginx.{slot}.{generation}.pid;")
			m := startServerMaster(t, "", nil, args...)
			m.waitMsg(30*time.Second, 2, "child ready")
			for addr, want := range map[string]string{http: "http ", admin: "admin "} {
				if code, body, err := get(addr, "/"); err != nil || code != 200 || !strings.HasPrefix(string(body), want) {
					t.Fatalf("GET %s: %d %q %v; want %q...", addr, code, body, err, want)
				}
			}
			if got := askUDP(t, dns); !strings.HasPrefix(got, "dns ") {
				t.Fatalf("udp %s answered %q", dns, got)
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			done := make(chan udpLoad, 1)
			go func() { done <- runUDPLoad(ctx, t, dns, 8, 200_000, 2*time.Second) }()
			for _, step := range []struct {
				gen      int
				strategy string
			}{{2, "generation"}, {3, "rolling"}} {
				code, out, errOut := m.ctl("reload", "--strategy", step.strategy)
				if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d serves", step.gen)) {
					t.Fatalf("%s reload: exit %d, %q, %q", step.strategy, code, out, errOut)
				}
				waitOldGone(t, m, step.gen)
			}
			cancel()
			load := <-done
			t.Logf("%s mode, a generation and a rolling reload: %d datagrams sent, %d answered, %d lost", sockets, load.sent, load.answered, load.lost())
			if load.answered == 0 {
				t.Fatalf("no datagram answered: the load did not run")
			}
			if sockets == "master" && load.lost() != 0 {
				t.Errorf("master mode lost %d of %d datagrams over the reloads; want 0", load.lost(), load.sent)
			}
			if code, body, err := get(admin, "/"); err != nil || code != 200 {
				t.Errorf("admin after the reloads: %d %q %v", code, body, err)
			}
		})
	}
}
