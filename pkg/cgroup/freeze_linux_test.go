package cgroup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// readFlag reads a 0/1 file of the group with parse, failing the test on
// error.
func readFlag(t *testing.T, g *Group, file string, parse func([]byte) (bool, error)) bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(g.Dir, file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// busyGroup makes a group running a busy shell loop, which stays on a CPU
// and so must be stopped by the freezer, not found asleep.
func busyGroup(t *testing.T) *Group {
	t.Helper()
	g := newGroup(t, own(t))
	startIn(t, g.Dir, "sh", "-c", "while :; do :; done")
	waitFor(t, "the loop to use CPU", func() bool {
		d, err := g.CPU()
		return err == nil && d > 0
	})
	return g
}

func TestFreezeThaw(t *testing.T) {
	g := busyGroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	already, err := g.Freeze(ctx)
	if err != nil || already {
		t.Fatalf("Freeze = %v, %v; want false, nil", already, err)
	}
	t.Cleanup(func() { g.Thaw() }) // before Remove's cleanup, which runs later
	if !readFlag(t, g, fileEvents, parseFrozen) {
		t.Fatal("Freeze returned, but cgroup.events does not say frozen 1")
	}
	// Frozen: the loop gets no CPU. A frozen group's usage stays the same
	// however long one looks; 20 ms is ample for a busy loop to show.
	before, _ := g.CPU()
	time.Sleep(20 * time.Millisecond)
	if after, _ := g.CPU(); after != before {
		t.Errorf("frozen group used CPU: %v -> %v", before, after)
	}
	if err := g.Thaw(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "frozen 0", func() bool { return !readFlag(t, g, fileEvents, parseFrozen) })
	waitFor(t, "the loop to run again", func() bool {
		d, err := g.CPU()
		return err == nil && d > before
	})
}

func TestFreezeAlreadyFrozen(t *testing.T) {
	g := busyGroup(t)
	if err := g.writeFreeze("1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Thaw() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	already, err := g.Freeze(ctx)
	if err != nil || !already {
		t.Fatalf("Freeze = %v, %v; want true, nil", already, err)
	}
	if !readFlag(t, g, fileEvents, parseFrozen) {
		t.Fatal("Freeze returned, but cgroup.events does not say frozen 1")
	}
}

func TestFreezeCanceled(t *testing.T) {
	g := busyGroup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	already, err := g.Freeze(ctx)
	t.Cleanup(func() { g.Thaw() })
	if already || !errors.Is(err, context.Canceled) {
		t.Fatalf("Freeze = %v, %v; want false, context.Canceled", already, err)
	}
	if !readFlag(t, g, fileFreeze, parseFreeze) {
		t.Error("the freeze was not left asked for")
	}
	if err := g.Thaw(); err != nil {
		t.Fatal(err)
	}
	if readFlag(t, g, fileFreeze, parseFreeze) {
		t.Error("cgroup.freeze still 1 after Thaw")
	}
}

func TestFreezeGone(t *testing.T) {
	g := &Group{Dir: filepath.Join(own(t).Dir, "prefork-test-no-such-group")}
	_, err := g.Freeze(context.Background())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Freeze of a missing group = %v; want fs.ErrNotExist", err)
	}
	if err := g.Thaw(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Thaw of a missing group = %v; want fs.ErrNotExist", err)
	}
}
