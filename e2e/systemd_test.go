package e2e

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/internal/testkit"
)

// With NOTIFY_SOCKET set for the master, it speaks Type=notify-reload:
// READY=1 once the first generation serves, RELOADING=1 with MONOTONIC_USEC
// at a reload and READY=1 at its end, STOPPING=1 at a stop.
func TestSystemdNotifyReload(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("@prefork-e2e-%d-%d", os.Getpid(), time.Now().UnixNano())
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	next := func(what string) string {
		t.Helper()
		buf := make([]byte, 4096)
		sock.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		return string(buf[:n])
	}
	m := startMasterOn(t, testkit.FreeAddr(t), []string{"NOTIFY_SOCKET=" + addr}, "--workers", "2")
	if msg := next("READY=1"); msg != "READY=1" {
		t.Fatalf("first message %q, want READY=1", msg)
	}
	readyAt := time.Now()
	// The log arrives through a pipe, maybe after the datagram: compare
	// the times the master stamped on its lines.
	for _, l := range m.waitMsg(10*time.Second, 2, "child ready") {
		if at := logTime(t, l); at.After(readyAt) {
			t.Errorf("READY=1 came before slot %d was ready (%v later)", l.int("slot"), at.Sub(readyAt))
		}
	}
	m.signal(syscall.SIGHUP)
	msg := next("RELOADING=1")
	if !strings.HasPrefix(msg, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("reload message %q, want RELOADING=1 and MONOTONIC_USEC", msg)
	}
	if msg := next("READY=1 after the reload"); msg != "READY=1" {
		t.Errorf("message after the reload %q, want READY=1", msg)
	}
	m.signal(syscall.SIGTERM)
	if msg := next("STOPPING=1"); msg != "STOPPING=1" {
		t.Errorf("stop message %q, want STOPPING=1", msg)
	}
	if code := m.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// With WatchdogSec= (WATCHDOG_USEC in its environment) the master pings
// systemd's watchdog from its event loop, every half period.
func TestSystemdWatchdogPings(t *testing.T) {
	addr := fmt.Sprintf("@prefork-e2e-wd-%d-%d", os.Getpid(), time.Now().UnixNano())
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	startMasterOn(t, testkit.FreeAddr(t), []string{"NOTIFY_SOCKET=" + addr, "WATCHDOG_USEC=400000"}, "--workers", "1")
	buf := make([]byte, 4096)
	var pings []time.Time
	sock.SetReadDeadline(time.Now().Add(20 * time.Second))
	for len(pings) < 4 {
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("after %d WATCHDOG=1: %v", len(pings), err)
		}
		if string(buf[:n]) == "WATCHDOG=1" {
			pings = append(pings, time.Now())
		}
	}
	// Every 200ms; the bound is loose on purpose: only a master pinging
	// far too often (a busy loop) fails it.
	if avg := pings[3].Sub(pings[0]) / 3; avg < 100*time.Millisecond {
		t.Errorf("WATCHDOG=1 every %v on average, want about 200ms", avg)
	}
}
