package proctree

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
)

// The per-poll cost: the master calls these every 25-50 ms for each
// starting child. The test process stands for a Go child, with a
// listener in its epoll set.

// BenchmarkWaitsOnEpoll finds the test process waiting through its epoll
// set, the usual answer for Go, node and Python servers.
func BenchmarkWaitsOnEpoll(b *testing.B) {
	inode := benchListener(b)
	pids := []int{os.Getpid()}
	for b.Loop() {
		if ok, err := WaitsOn(pids, inode); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkWaitsOnNotWaiting is the worst case: the process holds the
// socket but waits on nothing, so every epoll set and every thread's
// syscall file is read.
func BenchmarkWaitsOnNotWaiting(b *testing.B) {
	_, _, inode := listenFile(b)
	pids := []int{os.Getpid()}
	for b.Loop() {
		if ok, err := WaitsOn(pids, inode); ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkWaitsOnBlockedSelect finds a single-threaded child blocked in
// pselect6, as gunicorn's sync worker is: fd table, syscall file, and
// one word of its memory.
func BenchmarkWaitsOnBlockedSelect(b *testing.B) {
	f, _, inode := listenFile(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=pselect6", "GOMAXPROCS=1")
	pid, _ := start(b, cmd, true, f)
	pids := []int{pid}
	eventually(b, "helper in pselect6", func() (bool, error) { return WaitsOn(pids, inode) })
	for b.Loop() {
		if ok, err := WaitsOn(pids, inode); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkWaitsOnNotHolding: a process that does not hold the socket
// costs one walk of its fd table.
func BenchmarkWaitsOnNotHolding(b *testing.B) {
	pids := []int{os.Getpid()}
	for b.Loop() {
		if ok, err := WaitsOn(pids, 1); ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkListensOn: one sock_diag dump per family, and the fd table.
func BenchmarkListensOn(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	pids := []int{os.Getpid()}
	for b.Loop() {
		if ok, err := ListensOn(pids, addr); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkMembers: one scan of /proc/*/stat.
func BenchmarkMembers(b *testing.B) {
	for b.Loop() {
		if _, err := Members(os.Getpid(), ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAddressInUse: the crash diagnosis, a probe and a scan of every
// process's fds.
func BenchmarkAddressInUse(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	for b.Loop() {
		if _, blocked, err := AddressInUse(addr); !blocked || err != nil {
			b.Fatal(blocked, err)
		}
	}
}

// benchListener returns the inode of a Go listener with a goroutine in
// Accept, closed with the benchmark.
func benchListener(b *testing.B) uint64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go ln.Accept()
	return listenerInode(b, ln)
}
