package proctree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// The pure half of the /proc readers: each parser takes the bytes one read
// returned and is table-tested and fuzzed (parse_test.go).

// procStat holds the fields of /proc/PID/stat that Members needs.
type procStat struct {
	pid, ppid, pgrp int
}

// parseStat parses /proc/PID/stat: "PID (COMM) STATE PPID PGRP ...". COMM
// is the process's own name, up to 16 bytes of anything, spaces and ')'
// included, so the fields resume after the last ')'.
func parseStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return procStat{}, fmt.Errorf("stat %q: no (comm)", truncate(b))
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procStat{}, fmt.Errorf("stat %q: pid: %w", truncate(b), err)
	}
	f := bytes.Fields(b[end+1:])
	if len(f) < 3 {
		return procStat{}, fmt.Errorf("stat %q: short", truncate(b))
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return procStat{}, fmt.Errorf("stat %q: ppid: %w", truncate(b), err)
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return procStat{}, fmt.Errorf("stat %q: pgrp: %w", truncate(b), err)
	}
	return procStat{pid: pid, ppid: ppid, pgrp: pgrp}, nil
}

// blockedCall is a thread's system call in progress, from
// /proc/PID/task/TID/syscall.
type blockedCall struct {
	nr   int64
	args [6]uint64
}

// parseSyscall parses /proc/PID/task/TID/syscall (fs/proc/base.c,
// proc_pid_syscall): "NR 0xA0 0xA1 0xA2 0xA3 0xA4 0xA5 0xSP 0xPC" while the
// thread is blocked in system call NR (decimal), "-1 0xSP 0xPC" when it is
// stopped outside one, "running" when it is on a CPU. in is false in the
// last two cases.
func parseSyscall(b []byte) (c blockedCall, in bool, err error) {
	f := bytes.Fields(b)
	if len(f) == 1 && string(f[0]) == "running" {
		return blockedCall{}, false, nil
	}
	if len(f) == 0 {
		return blockedCall{}, false, errors.New("syscall: empty")
	}
	nr, err := strconv.ParseInt(string(f[0]), 10, 64)
	if err != nil {
		return blockedCall{}, false, fmt.Errorf("syscall %q: number: %w", truncate(b), err)
	}
	if nr < 0 {
		return blockedCall{}, false, nil
	}
	if len(f) < 7 {
		return blockedCall{}, false, fmt.Errorf("syscall %q: short", truncate(b))
	}
	c.nr = nr
	for i := range c.args {
		c.args[i], err = strconv.ParseUint(string(f[i+1]), 0, 64)
		if err != nil {
			return blockedCall{}, false, fmt.Errorf("syscall %q: arg %d: %w", truncate(b), i, err)
		}
	}
	return c, true, nil
}

// epollEntry is one file registered in an epoll set.
type epollEntry struct {
	tfd    int    // the fd number it was registered under
	events uint32 // the events it waits for (EPOLLIN = 1, ...)
	ino    uint64 // the inode of the registered file
	sdev   uint32 // the device of its filesystem, kernel dev_t encoding
	hasDev bool   // sdev was present
}

// parseEpollLine parses one line of /proc/PID/fdinfo/FD for an epoll fd.
// Linux (fs/eventpoll.c, ep_show_fdinfo) prints each registered file as
//
//	"tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x"
//
// so a key is followed by its value either at once or after spaces. ok is
// false for the other lines (pos:, flags:, mnt_id:, ino: of the epoll file
// itself) and for a malformed entry.
func parseEpollLine(line []byte) (e epollEntry, ok bool) {
	if !bytes.HasPrefix(line, []byte("tfd:")) {
		return epollEntry{}, false
	}
	var have struct{ tfd, events, ino bool }
	f := bytes.Fields(line)
	for i := 0; i < len(f); i++ {
		key, val, found := bytes.Cut(f[i], []byte(":"))
		if !found {
			continue // not ours to know: a later kernel's addition
		}
		if len(val) == 0 && i+1 < len(f) {
			i++
			val = f[i]
		}
		var err error
		switch string(key) {
		case "tfd":
			e.tfd, err = strconv.Atoi(string(val))
			have.tfd = err == nil
		case "events":
			var v uint64
			v, err = strconv.ParseUint(string(val), 16, 32)
			e.events, have.events = uint32(v), err == nil
		case "ino":
			e.ino, err = strconv.ParseUint(string(val), 16, 64)
			have.ino = err == nil
		case "sdev":
			var v uint64
			v, err = strconv.ParseUint(string(val), 16, 32)
			e.sdev, e.hasDev = uint32(v), err == nil
		}
		if err != nil {
			return epollEntry{}, false
		}
	}
	return e, have.tfd && have.events && have.ino
}

// kernelDev encodes a device number as the kernel prints it in fdinfo
// (its internal dev_t: major in the top 12 bits, minor in the low 20),
// which is not the encoding stat(2) returns.
func kernelDev(major, minor uint32) uint32 {
	return major<<20 | minor&0xfffff
}

// parseSocketLink returns the inode of a /proc/PID/fd link naming a
// socket, "socket:[INODE]".
func parseSocketLink(link []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(link, []byte("socket:["))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != ']' {
		return 0, false
	}
	ino, err := strconv.ParseUint(string(rest[:len(rest)-1]), 10, 64)
	return ino, err == nil
}

// parsePids parses a list of decimal pids, one a line, as cgroup.procs
// holds them.
func parsePids(b []byte) ([]int, error) {
	var pids []int
	for _, f := range bytes.Fields(b) {
		pid, err := strconv.Atoi(string(f))
		if err != nil {
			return nil, fmt.Errorf("pid list: %w", err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// truncate shortens b for an error message: the input comes from a file
// a process can fill (its comm), so it is quoted and bounded.
func truncate(b []byte) []byte {
	const limit = 80
	if len(b) > limit {
		return b[:limit]
	}
	return b
}

// Linux's poll(2) event bits for "readable", which a listening socket
// becomes when a connection waits to be accepted.
const (
	pollIn     = 0x1
	pollRdNorm = 0x40
)

// sizeofPollfd is struct pollfd: int fd, short events, short revents.
const sizeofPollfd = 8

// pollWatches reports whether the pollfd array b asks for one of fds to
// become readable. A trailing partial entry is ignored.
func pollWatches(b []byte, fds []int) bool {
	for ; len(b) >= sizeofPollfd; b = b[sizeofPollfd:] {
		fd := int32(binary.NativeEndian.Uint32(b))
		events := binary.NativeEndian.Uint16(b[4:])
		if events&(pollIn|pollRdNorm) != 0 && slices.Contains(fds, int(fd)) {
			return true
		}
	}
	return false
}

// fdSetWord returns where fd's bit lies in an fd_set, an array of
// unsigned longs (64 bits here) with fd's bit at fd%64 of word fd/64: the
// word's byte offset and the bit's mask.
func fdSetWord(fd int) (offset int, mask uint64) {
	return fd / 64 * 8, 1 << (fd % 64)
}
