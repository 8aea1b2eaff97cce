package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// nginxConf is a minimal nginx configuration: 4 workers answering 200 "ok"
// on every path of one loopback address, everything in one directory.
const nginxConf = `worker_processes 4;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	keepalive_requests 1000000;
	server {
		listen %[2]s%[3]s;
		location / { return 200 "ok\n"; }
	}
}
`

// nginxSetup starts nginx with nginxConf, with `reuseport` on the listen
// line or not, and reloads it with `nginx -s reload`, which only sends
// SIGHUP to the nginx master: a reload is waited for until the master has
// 4 worker processes it did not have before. When the benchmark ends,
// nginx and every worker seen are killed if still alive.
func nginxSetup(reuseport bool) func(*testing.B) reloadable {
	return func(b *testing.B) reloadable {
		const n = 4
		path, err := exec.LookPath("nginx")
		if err != nil {
			b.Skip("nginx is not installed: ", err)
		}
		if path, err = filepath.EvalSymlinks(path); err != nil {
			b.Fatal(err)
		}
		dir := b.TempDir()
		addr := testkit.FreeAddr(b)
		opt := ""
		if reuseport {
			opt = " reuseport"
		}
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, addr, opt), 0o644); err != nil {
			b.Fatal(err)
		}
		args := []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}
		cmd := exec.Command(path, args...)
		// A file, not a pipe: the workers inherit it, and a pipe would hold
		// up cmd.Wait until they are gone too.
		out, err := os.Create(filepath.Join(dir, "output"))
		if err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		pid := cmd.Process.Pid
		seen := map[int]bool{} // every worker pid seen
		b.Cleanup(func() {
			for _, w := range testkit.ChildrenOf(pid) {
				seen[w] = true
			}
			cmd.Process.Signal(syscall.SIGTERM) // nginx's fast stop
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			for w := range seen {
				if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", w)); testkit.Alive(w) && strings.TrimSuffix(exe, " (deleted)") == path {
					syscall.Kill(w, syscall.SIGKILL)
				}
			}
			if b.Failed() {
				log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				output, _ := os.ReadFile(out.Name())
				b.Logf("nginx output:\n%s\nerror.log:\n%s", output, log)
			}
		})

		// waitWorkers waits until pid has n worker processes not seen
		// before, and marks them seen.
		waitWorkers := func(timeout time.Duration) error {
			deadline := time.Now().Add(timeout)
			for {
				var fresh []int
				for _, w := range testkit.ChildrenOf(pid) {
					if !seen[w] {
						fresh = append(fresh, w)
					}
				}
				if len(fresh) >= n {
					for _, w := range fresh {
						seen[w] = true
					}
					return nil
				}
				select {
				case <-exited:
					output, _ := os.ReadFile(out.Name())
					return fmt.Errorf("nginx exited: %v: %s", cmd.ProcessState, output)
				default:
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("nginx master %d has %d new workers after %v, want %d", pid, len(fresh), timeout, n)
				}
				time.Sleep(time.Millisecond)
			}
		}
		if err := waitWorkers(30 * time.Second); err != nil {
			b.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("nginx does not accept on %s: %v", addr, err)
			}
		}
		return reloadable{
			addr: addr,
			reload: func(ctx context.Context) error {
				sig, err := exec.CommandContext(ctx, path, append(args, "-s", "reload")...).CombinedOutput()
				if err != nil {
					return fmt.Errorf("nginx -s reload: %v: %s", err, sig)
				}
				return waitWorkers(30 * time.Second)
			},
			settle: func() {
				// The old workers exit once their connections are done.
				deadline := time.Now().Add(30 * time.Second)
				for len(testkit.ChildrenOf(pid)) > n {
					if time.Now().After(deadline) {
						b.Errorf("nginx still has %d workers 30 s after the last reload, want %d", len(testkit.ChildrenOf(pid)), n)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			},
		}
	}
}
