package supervisor

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// blockingLoad is an Options.Load whose first call blocks until release,
// as a read of a file on a hung filesystem does; later calls return cfg
// at once.
type blockingLoad struct {
	cfg     Config
	calls   atomic.Int32
	release chan struct{}
	once    sync.Once
}

func newBlockingLoad(t *testing.T, cfg Config) *blockingLoad {
	b := &blockingLoad{cfg: cfg, release: make(chan struct{})}
	// Freed at the end of the test at the latest; its result then finds
	// the loop gone, and the goroutine ends.
	t.Cleanup(b.free)
	return b
}

func (b *blockingLoad) load() (Config, error) {
	if b.calls.Add(1) == 1 {
		<-b.release
	}
	return b.cfg, nil
}

func (b *blockingLoad) free() { b.once.Do(func() { close(b.release) }) }

// configFile names the file Load reads.
func configFile(path string) harnessOption {
	return func(_ *env, o *Options) { o.ConfigFile = path }
}

// The reload reads its configuration off the loop: while the read hangs,
// a crashed child is restarted and status answers; at the deadline the
// reload is rejected in one line, and no second read starts while the
// first is stuck.
func TestReloadReadsConfigOffTheLoop(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 1)
	b := newBlockingLoad(t, cfg)
	h := newHarness(t, cfg, loading(b.load), configFile("/etc/prefork.yaml"))
	h.onLoop(func() { h.s.reload.read.timeout = 3 * time.Second })
	h.readyAll(1)
	res := h.reloadAsync()

	// Supervision goes on while the read hangs.
	starts := len(h.procs.started())
	h.exit(h.child(0, 1), killedBy(unix.SIGKILL))
	for i := 0; i < 20 && len(h.procs.started()) == starts; i++ {
		h.clock.Advance(100 * time.Millisecond) // a backoff, if any
	}
	if got := len(h.procs.started()); got != starts+1 {
		t.Fatalf("%d children started after a crash during the read, want 1", got-starts)
	}
	if st := h.status(); len(st.Children) != 1 || st.Children[0].Generation != 1 {
		t.Errorf("status during the read = %+v", st.Children)
	}
	select {
	case r := <-res:
		t.Fatalf("reload answered before its read returned or timed out: %+v", r)
	default:
	}

	// The deadline rejects the reload.
	h.clock.Advance(3 * time.Second)
	r := h.result(res)
	want := "config: reading /etc/prefork.yaml took longer than 3s"
	if !errors.Is(r.Err, ErrReloadRejected) || !strings.Contains(r.Err.Error(), want) || r.Generation != 1 {
		t.Fatalf("reload = %+v, want rejected with %q", r, want)
	}

	// A second reload while the read is still stuck starts no other.
	r = h.result(h.reloadAsync())
	if !errors.Is(r.Err, ErrReloadRejected) || !strings.Contains(r.Err.Error(), "has not returned; no new read starts until it does") {
		t.Errorf("reload during a stuck read = %+v, want rejected", r)
	}
	if got := b.calls.Load(); got != 1 {
		t.Errorf("Load called %d times, want 1: a second read joined the stuck one", got)
	}

	// Once the stuck read returns, its result is ignored and reloads
	// work again.
	b.free()
	h.waitFor("the late result", func() bool { return h.logs.count("a config read returned after its reload had given up") == 1 })
	res = h.reloadAsync()
	h.readyAll(2)
	if r := h.result(res); r.Err != nil || r.Generation != 2 {
		t.Fatalf("reload after the stuck read returned = %+v", r)
	}
	if got := h.logs.count("reload started"); got != 1 {
		t.Errorf("%d reloads started, want 1", got)
	}
}

// A stop during the read ends the loop at once; the reload's caller is
// told the supervisor stops.
func TestStopDuringConfigRead(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, 2)
	b := newBlockingLoad(t, cfg)
	h := newHarness(t, cfg, loading(b.load))
	h.readyAll(1)
	res := h.reloadAsync()
	h.s.Stop(StopGraceful)
	for _, p := range h.procs.live() {
		h.exit(p, exitCode(0))
	}
	if err := h.wait(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if r := h.result(res); !errors.Is(r.Err, ErrStopping) {
		t.Errorf("reload = %+v, want ErrStopping", r)
	}
}

// /healthz says 503, and why, while the loop does not answer; 200 again
// once it does.
func TestHealthzStuckLoop(t *testing.T) {
	t.Parallel()
	h := newHarness(t, testConfig(t, 1))
	m := h.s.metricsHandler()
	if code, _ := do(t, m, "GET", "/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	h.s.send(call(func() { <-release })) // a stuck loop
	code, body := do(t, m, "GET", "/healthz")
	if code != 503 || !strings.Contains(body, "event loop has not answered for 2s") {
		t.Errorf("/healthz with the loop stuck = %d %q, want 503 and why", code, body)
	}
	free()
	h.settle()
	if code, _ := do(t, m, "GET", "/healthz"); code != 200 {
		t.Errorf("/healthz once the loop answers = %d", code)
	}
	h.s.Stop(StopFast)
	h.wait()
	if code, body := do(t, m, "GET", "/healthz"); code != 503 || !strings.Contains(body, "stopping") {
		t.Errorf("/healthz after the stop = %d %q", code, body)
	}
}
