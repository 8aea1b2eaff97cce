//go:build linux

// Package testkit holds what the end-to-end tests and the benchmarks of
// the built binaries share: a free loopback port, /proc views of processes,
// the setup of a network namespace of a test's own, and an exact HTTP/1.1
// round trip whose every failure is counted and classified.
package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// FreeAddr returns a loopback address with a port nothing listens on now.
// Port 0 cannot be handed to the master: every child would get its own.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Alive reports whether pid is a process that has not ended. A zombie has
// ended (TRAPS 8: kill -0 succeeds on it).
func Alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if state, ok := strings.CutPrefix(line, "State:"); ok {
			return !strings.HasPrefix(strings.TrimSpace(state), "Z")
		}
	}
	return false
}

// ChildrenOf returns the pids whose parent is pid.
func ChildrenOf(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var pids []int
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(s); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

// Descendants returns pid and every process below it.
func Descendants(pid int) []int {
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, ChildrenOf(tree[i])...)
	}
	return tree
}

// AliveOf returns the pids of pids that have not ended (a zombie has).
func AliveOf(pids []int) []int {
	var live []int
	for _, pid := range pids {
		if Alive(pid) {
			live = append(live, pid)
		}
	}
	return live
}

// GroupMembers returns the live processes whose process group is one of
// pgids: what is left of the groups a master's children led (a forking
// server's workers stay in theirs, even once orphaned).
func GroupMembers(pgids []int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var members []int
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		if pgrp, _ := strconv.Atoi(fields[2]); slices.Contains(pgids, pgrp) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			members = append(members, pid)
		}
	}
	return members
}

// InChildCgroupOf reports whether pid runs in the cgroup of a child of the
// master masterPID (prefork-MASTERPID-...), and whether it runs in any
// child's cgroup at all: a pid a test logged may since have been reused.
func InChildCgroupOf(pid, masterPID int) (ours, anyChild bool) {
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false, false
	}
	return strings.Contains(string(cg), fmt.Sprintf("/prefork-%d-", masterPID)), strings.Contains(string(cg), "/prefork-")
}

// SetupNetns brings loopback up and sets net.ipv4.tcp_migrate_req to
// migrate in the caller's network namespace, and refuses to when that is
// the namespace its parent runs in: the machine's own sysctls are never
// touched.
func SetupNetns(migrate int) error {
	if err := checkOwnNetns(); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/tcp_migrate_req", []byte(strconv.Itoa(migrate)), 0o644); err != nil {
		return fmt.Errorf("set tcp_migrate_req: %w", err)
	}
	return nil
}

// checkOwnNetns fails unless the caller runs in another network namespace
// than its parent.
func checkOwnNetns() error {
	self, err1 := os.Readlink("/proc/self/ns/net")
	parent, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", os.Getppid()))
	if err1 != nil || err2 != nil || self == parent {
		return fmt.Errorf("not in a network namespace of its own (self %q, parent %q)", self, parent)
	}
	return nil
}

// ErrStatus is wrapped by RoundTrip for an answer other than 200.
var ErrStatus = errors.New("status not 200")

// RoundTrip writes one GET / on conn (with Connection: close when
// closeConn) and reads the whole answer. It reports whether the connection
// must not be reused. It is the tests' own client rather than net/http's
// because http.Transport silently retries a request whose connection
// broke, which would hide exactly the failures these tests count.
func RoundTrip(conn net.Conn, br *bufio.Reader, closeConn bool) (closeAfter bool, err error) {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: prefork\r\n\r\n"
	if closeConn {
		req = "GET / HTTP/1.1\r\nHost: prefork\r\nConnection: close\r\n\r\n"
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return true, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return true, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return true, err
	}
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("%w: %d", ErrStatus, resp.StatusCode)
	}
	return resp.Close, nil
}

// Classify names the kind of a failed request: refused, reset, eof,
// status, broken pipe, timeout or other.
func Classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, ErrStatus):
		return "status"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other"
}

// Stopped reports whether every thread of pid is stopped (state T in
// /proc/PID/task/*/stat): SIGSTOP takes effect thread by thread, and a
// test that acts before the last one stopped races with it.
func Stopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			return false
		}
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 || i+2 >= len(data) || data[i+2] != 'T' {
			return false
		}
	}
	return len(stats) > 0
}

// AcceptQueued returns how many connections wait in the accept queues of
// the sockets listening on port, from /proc/net/tcp and /proc/net/tcp6.
func AcceptQueued(port int) (int, error) {
	queues, err := sockopt.ListenQueues(port)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, q := range queues {
		n += int(q)
	}
	return n, nil
}

// NotifySocket finds the sd_notify socket of the master pid, an abstract
// unix socket named @prefork/PID/..., in /proc/net/unix: as any local
// user can.
func NotifySocket(pid int) (string, error) {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return "", err
	}
	name := regexp.MustCompile(fmt.Sprintf(`@prefork/%d/[0-9a-f]+`, pid)).Find(data)
	if name == nil {
		return "", fmt.Errorf("no notify socket of pid %d in /proc/net/unix", pid)
	}
	return string(name), nil
}
