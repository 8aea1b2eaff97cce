package supervisor

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/prefork/prefork/pkg/proctree"
)

// kernelObserver is observer on Linux: /proc and sock_diag, through
// pkg/proctree. A child's processes are its descendants, its process
// group, and its cgroup where it has one.
type kernelObserver struct {
	procs *osProcs
}

// The watch polls, quickly at first (most servers are up within tens of
// milliseconds), then every watchMaxEvery: a scan of a child's tree costs
// tens of microseconds.
const (
	watchFirstEvery = 5 * time.Millisecond
	watchMaxEvery   = 100 * time.Millisecond
)

func (o kernelObserver) waiting(ctx context.Context, w waitSpec) bool {
	seen, ok := o.check(w)
	if !ok {
		return false
	}
	t := time.NewTimer(watchFirstEvery)
	defer t.Stop()
	for every := watchFirstEvery; ; every = min(every*3/2, watchMaxEvery) {
		if seen() {
			return true
		}
		t.Reset(every)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// check returns the test that w is met; false when there is none to make.
func (o kernelObserver) check(w waitSpec) (func() bool, bool) {
	members := func() []int {
		pids, err := proctree.Members(w.pid, o.procs.cgroupDir(w.pid))
		if err != nil {
			return nil
		}
		return pids
	}
	if w.fd >= 0 {
		inode, err := proctree.InodeOf(w.fd)
		if err != nil {
			return nil, false
		}
		return func() bool {
			ok, err := proctree.WaitsOn(members(), inode)
			return err == nil && ok
		}, true
	}
	addr, err := resolveListen(w.listen)
	if err != nil {
		return nil, false
	}
	return func() bool {
		ok, err := proctree.ListensOn(members(), addr)
		return err == nil && ok
	}, true
}

func (o kernelObserver) addressInUse(listen string) ([]int, bool) {
	addr, err := resolveListen(listen)
	if err != nil {
		return nil, false
	}
	holders, blocked, err := proctree.AddressInUse(addr)
	return holders, err == nil && blocked
}

// resolveListen reads a --listen address as the socket it names: a host
// left out is the wildcard, localhost is the loopback.
func resolveListen(listen string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return netip.AddrPort{}, err
	}
	switch host {
	case "":
		host = "0.0.0.0"
	case "localhost":
		host = "127.0.0.1"
	}
	return netip.ParseAddrPort(net.JoinHostPort(host, port))
}

func newObserver(p *osProcs) observer { return kernelObserver{procs: p} }
