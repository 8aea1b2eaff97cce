package metrics

import (
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/prefork/prefork/pkg/sockopt"
)

// LinuxKernel reads the socket state from /proc.
var LinuxKernel = Kernel{
	ListenQueues:    sockopt.ListenQueues,
	ReceiveQueues:   sockopt.ReceiveQueues,
	ListenOverflows: sockopt.ListenOverflows,
	ListenerOf:      listenerOf,
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
