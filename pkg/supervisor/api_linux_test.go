package supervisor

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// do sends one request to handler and returns the status and body.
func do(t *testing.T, handler http.Handler, method, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Code, rec.Body.String()
}

// The admin API answers from the loop.
func TestAdminHandler(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	h.readyAll(1)
	admin := h.s.adminHandler()
	code, body := do(t, admin, "GET", "/status")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || len(st.Children) != 1 {
		t.Fatalf("GET /status = %d %s (%v)", code, body, err)
	}
	if code, body := do(t, admin, "POST", "/scale?workers=x"); code != 400 || !strings.Contains(body, "not a whole number") {
		t.Errorf("POST /scale?workers=x = %d %s", code, body)
	}
	if code, body := do(t, admin, "POST", "/scale?workers=0"); code != 409 || !strings.Contains(body, "out of range") {
		t.Errorf("POST /scale?workers=0 = %d %s", code, body)
	}
	if code, body := do(t, admin, "POST", "/scale?workers=2"); code != 200 || !strings.Contains(body, `"workers":2`) {
		t.Errorf("POST /scale?workers=2 = %d %s", code, body)
	}
	h.readyAll(1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if code, body := do(t, admin, "POST", "/reload"); code != 200 || !strings.Contains(body, `"generation":2`) {
			t.Errorf("POST /reload = %d %s", code, body)
		}
	}()
	h.waitFor("the reload's children", func() bool { return len(h.procs.live()) == 4 })
	h.settle()
	h.readyAll(2)
	<-done
	if code, _ := do(t, admin, "POST", "/stop"); code != 202 {
		t.Errorf("POST /stop = %d", code)
	}
	if err := h.wait(); err != nil {
		t.Errorf("Run = %v", err)
	}
	if code, _ := do(t, admin, "GET", "/status"); code != 503 {
		t.Errorf("GET /status after the stop = %d, want 503", code)
	}
}

// A rejected reload is 409, a rolled back one 500.
func TestAdminReloadErrors(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	h := newHarness(t, cfg, loading(func() (Config, error) { return cfg, os.ErrNotExist }))
	if code, body := do(t, h.s.adminHandler(), "POST", "/reload"); code != 409 || !strings.Contains(body, "reload rejected") {
		t.Errorf("POST /reload = %d %s", code, body)
	}
	h2 := newHarness(t, testConfig(t, 1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if code, body := do(t, h2.s.adminHandler(), "POST", "/reload"); code != 500 || !strings.Contains(body, "rolled back") {
			t.Errorf("POST /reload = %d %s", code, body)
		}
	}()
	h2.waitFor("the reload's child", func() bool { return len(h2.procs.live()) == 2 })
	h2.settle()
	h2.exit(h2.child(0, 2), exitCode(1))
	<-done
}

// /metrics, /healthz and /readyz.
func TestMetricsHandler(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 2))
	m := h.s.metricsHandler()
	if code, body := do(t, m, "GET", "/readyz"); code != 503 || !strings.Contains(body, "no ready child in slot 0, 1") {
		t.Errorf("/readyz = %d %q", code, body)
	}
	h.readyAll(1)
	if code, _ := do(t, m, "GET", "/readyz"); code != 200 {
		t.Errorf("/readyz = %d once ready", code)
	}
	if code, _ := do(t, m, "GET", "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	code, body := do(t, m, "GET", "/metrics")
	if code != 200 || !strings.Contains(body, `prefork_child_info{`) || !strings.Contains(body, "prefork_workers 2") {
		t.Errorf("/metrics = %d, without the children:\n%s", code, body)
	}
	h.s.Stop(StopFast)
	h.wait()
	if code, body := do(t, m, "GET", "/readyz"); code != 503 || !strings.Contains(body, "stopping") {
		t.Errorf("/readyz after the stop = %d %q", code, body)
	}
}

// The control socket is 0600 from its first moment; a stale socket file is
// replaced, a live master's socket and a non-socket are refused.
func TestListenControl(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ctl.sock")
	ln, err := listenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if _, err := listenControl(path); err == nil || !strings.Contains(err.Error(), "in use by a running master") {
		t.Errorf("second listen = %v, want in use", err)
	}
	ln.Close() // leaves the file: removal is the master's
	ln2, err := listenControl(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln2.Close()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if _, err := listenControl(plain); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen on a plain file = %v", err)
	}
	if _, err := listenControl(filepath.Join(dir, "missing", "x.sock")); err == nil {
		t.Errorf("listen in a missing directory succeeded")
	}
}

// The admin API is served on the control socket and /metrics on the
// metrics address from the moment Run starts.
func TestServesControlAndMetrics(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	cfg.Control = filepath.Join(t.TempDir(), "ctl.sock")
	cfg.Metrics = "127.0.0.1:0"
	h := newHarness(t, cfg)
	client := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", cfg.Control)
		},
	}}
	resp, err := client.Get("http://master/status")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /status over the control socket: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + h.s.metrics.Addr().String() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	h.s.Stop(StopGraceful)
	h.wait()
	if _, err := os.Stat(cfg.Control); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}
