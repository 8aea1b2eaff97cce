package metrics

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/prefork/prefork/pkg/sockopt"
)

// LinuxKernel reads the socket state from /proc.
var LinuxKernel = Kernel{
	ListenQueues:    sockopt.ListenQueues,
	ReceiveQueues:   receiveQueues,
	ListenOverflows: sockopt.ListenOverflows,
	ListenerOf:      listenerOf,
}

// receiveQueues returns the bytes in the receive buffer of every
// unconnected UDP socket on port in the caller's network namespace, by
// socket inode.
func receiveQueues(port int) (map[uint64]uint64, error) {
	queues := map[uint64]uint64{}
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		data, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue // no IPv6
		}
		if err != nil {
			return nil, fmt.Errorf("receive queues: %w", err)
		}
		if err := parseReceiveQueues(data, port, queues); err != nil {
			return nil, fmt.Errorf("receive queues: %s: %w", f, err)
		}
	}
	return queues, nil
}

// udpUnconnected is the st column of an unconnected UDP socket (TCP_CLOSE):
// a server's socket bound to its port. A connected socket on the same port
// (01) takes only its peer's datagrams and is no listener.
const udpUnconnected = "07"

// parseReceiveQueues adds to queues the unconnected sockets on port found
// in the contents of /proc/net/udp or udp6. Their rx_queue, the hex second
// half of the "tx_queue:rx_queue" column, is the memory the datagrams
// waiting to be read take in the receive buffer (sk_rmem_alloc, in bytes:
// each datagram's payload plus the kernel's per-packet overhead).
func parseReceiveQueues(data []byte, port int, queues map[uint64]uint64) error {
	want := fmt.Sprintf(":%04X", port)
	lines := strings.Split(string(data), "\n")
	for _, line := range lines[min(1, len(lines)):] { // after the header
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 10 {
			return fmt.Errorf("short line %q", line)
		}
		if f[3] != udpUnconnected || !strings.HasSuffix(f[1], want) {
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
	return nil
}

// listenerOf finds pid's listener among queues by its descriptors. A
// server opens its listener early, so the lowest descriptors come first and
// the walk stops at the first hit, whatever the number of connections.
func listenerOf(pid int, queues map[uint64]uint64) (uint64, bool) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	fds := make([]int, 0, len(entries))
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	slices.Sort(fds)
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/" + strconv.Itoa(fd))
		if err != nil {
			continue
		}
		if inode, ok := sockopt.SocketInode(target); ok {
			if _, listening := queues[inode]; listening {
				return inode, true
			}
		}
	}
	return 0, false
}
