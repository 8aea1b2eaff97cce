package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// nginx with a UDP (the stream module), an HTTP and an admin listener,
// ready by --ready listen on the UDP one:
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
				// The UDP listener first: --ready listen watches the
				// first one, here a datagram socket.
				"--listen", "dns=udp://" + dns, "--listen", "http=" + http, "--listen", "admin=" + admin}
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
			for _, l := range m.waitMsg(30*time.Second, 2, "child ready") {
				if l.str("by") != "listen" {
					t.Errorf("child ready by %q, want listen (nginx sends no READY=1): %v", l.str("by"), l)
				}
			}
			for addr, want := range map[string]string{http: "http ", admin: "admin "} {
				if code, body, err := get(addr, "/"); err != nil || code != 200 || !strings.HasPrefix(string(body), want) {
					t.Fatalf("GET %s: %d %q %v; want %q...", addr, code, body, err, want)
				}
			}
			if got, err := askUDPRaw(dns); err != nil || !strings.HasPrefix(string(got), "dns ") {
				t.Fatalf("udp %s answered %q, %v", dns, got, err)
			}

			load := startUDPLoad(t, dns, 8, 4, time.Millisecond, 200_000)
			load.waitAnswered(t, 300, 30*time.Second)
			for _, step := range []struct {
				gen      int
				strategy string
			}{{2, "generation"}, {3, "rolling"}} {
				code, out, errOut := m.ctl("reload", "--strategy", step.strategy)
				if code != 0 || !strings.Contains(out, fmt.Sprintf("generation %d serves", step.gen)) {
					t.Fatalf("%s reload: exit %d, %q, %q", step.strategy, code, out, errOut)
				}
				waitOldGone(t, m, step.gen)
				load.waitAnswered(t, 300, 30*time.Second)
			}
			sent, answered := load.finish(t)
			t.Logf("%s mode, a generation and a rolling reload: %d datagrams sent, %d answered, %d lost", sockets, sent, answered, sent-answered)
			if sockets == "master" && sent != answered {
				t.Errorf("master mode lost %d of %d datagrams over the reloads; want 0", sent-answered, sent)
			}
			if code, body, err := get(admin, "/"); err != nil || code != 200 {
				t.Errorf("admin after the reloads: %d %q %v", code, body, err)
			}
		})
	}
}
