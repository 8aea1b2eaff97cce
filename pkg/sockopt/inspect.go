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
	queues, err := readQueues([]string{"/proc/net/tcp", "/proc/net/tcp6"}, port, parseListenQueues)
	if err != nil {
		return nil, fmt.Errorf("listen queues: %w", err)
	}
	return queues, nil
}

// ReceiveQueues returns the receive queue of every unconnected UDP socket
// bound on port in the caller's network namespace, by socket inode: the
// bytes its unread datagrams are charged (see ReceiveQueue), as
// /proc/net/udp and udp6 show them. A connected socket on the port takes
// only its peer's datagrams: it is no server's, and is left out.
func ReceiveQueues(port int) (map[uint64]uint64, error) {
	queues, err := readQueues([]string{"/proc/net/udp", "/proc/net/udp6"}, port, parseReceiveQueues)
	if err != nil {
		return nil, fmt.Errorf("receive queues: %w", err)
	}
	return queues, nil
}

// readQueues reads each of files (a missing one, for a kernel without
// IPv6, is skipped) and adds what parse finds on port to one map.
func readQueues(files []string, port int, parse func([]byte, int, map[uint64]uint64) error) (map[uint64]uint64, error) {
	queues := map[uint64]uint64{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := parse(data, port, queues); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	return queues, nil
}

// parseListenQueues adds to queues the listeners on port found in the
// contents of /proc/net/tcp or tcp6. For a socket in LISTEN (state 0A),
// rx_queue is the number of connections waiting to be accepted.
func parseListenQueues(data []byte, port int, queues map[uint64]uint64) error {
	return parseQueues(data, port, "0A", queues)
}

// parseReceiveQueues adds to queues the unconnected sockets (state 07,
// TCP_CLOSE; a connected one is 01) bound on port found in the contents
// of /proc/net/udp or udp6. For UDP, rx_queue is the memory charged for
// the datagrams not yet read, in bytes.
func parseReceiveQueues(data []byte, port int, queues map[uint64]uint64) error {
	return parseQueues(data, port, "07", queues)
}

// parseQueues adds to queues, by inode, the rx_queue of each socket on
// port in state (any state if empty) found in the contents of a
// /proc/net/{tcp,udp}{,6} file: a header line, then one line a socket,
// "sl local_address rem_address st tx_queue:rx_queue tr:tm->when
// retrnsmt uid timeout inode ...", with the address as hex
// ADDRESS:PORT, the state and both queues in hex, the inode in decimal.
func parseQueues(data []byte, port int, state string, queues map[uint64]uint64) error {
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			return fmt.Errorf("short line %q", sc.Text())
		}
		if (state != "" && f[3] != state) || !strings.HasSuffix(f[1], want) {
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
