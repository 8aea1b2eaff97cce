package sockopt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// The kernel's view of sockets, read from /proc for the metrics: how many
// connections wait in each listener's accept queue, and how often a full
// queue dropped one.

// ListenQueues returns the accept-queue length of every TCP listener on
// port in the caller's network namespace, by socket inode.
func ListenQueues(port int) (map[uint64]uint64, error) {
	queues := map[uint64]uint64{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listen queues: %w", err)
		}
		if err := parseListenQueues(data, port, queues); err != nil {
			return nil, fmt.Errorf("listen queues: %s: %w", f, err)
		}
	}
	return queues, nil
}

// parseListenQueues adds to queues the listeners on port found in the
// contents of /proc/net/tcp or tcp6. For a socket in LISTEN (state 0A),
// rx_queue is the number of connections waiting to be accepted.
func parseListenQueues(data []byte, port int, queues map[uint64]uint64) error {
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return fmt.Errorf("short line %q", sc.Text())
		}
		if f[3] != "0A" || !strings.HasSuffix(f[1], want) {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			return fmt.Errorf("bad queue field %q", f[4])
		}
		q, err := strconv.ParseUint(rx, 16, 64)
		if err != nil {
			return fmt.Errorf("bad rx_queue %q: %w", rx, err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return fmt.Errorf("bad inode %q: %w", f[9], err)
		}
		queues[inode] = q
	}
	return sc.Err()
}

// ListenOverflows returns the kernel's TcpExt ListenOverflows counter of
// the caller's network namespace: connections dropped because an accept
// queue was full.
func ListenOverflows() (uint64, error) {
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0, fmt.Errorf("listen overflows: %w", err)
	}
	return parseListenOverflows(data)
}

// parseListenOverflows finds ListenOverflows in the contents of
// /proc/net/netstat: pairs of lines, names then values, each starting with
// the same "TcpExt:" prefix.
func parseListenOverflows(data []byte) (uint64, error) {
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) || values[0] != "TcpExt:" {
			continue
		}
		for j, name := range names {
			if name == "ListenOverflows" {
				n, err := strconv.ParseUint(values[j], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("parse ListenOverflows %q: %w", values[j], err)
				}
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("parse /proc/net/netstat: no TcpExt ListenOverflows")
}

// SocketInode returns the inode of the socket a "/proc/PID/fd/N" link
// target such as "socket:[12345]" names, and whether it names one.
func SocketInode(target string) (uint64, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return n, err == nil
}
