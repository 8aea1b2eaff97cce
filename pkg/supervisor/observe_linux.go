package supervisor

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/prefork/prefork/pkg/freeze"
	"github.com/prefork/prefork/pkg/proctree"
	"golang.org/x/sys/unix"
)

// kernelObserver is observer on Linux: /proc and sock_diag, through
// pkg/proctree. A child's processes are its descendants, its process
// group, and its cgroup where it has one.
type kernelObserver struct {
	procs *osProcs
}

// The watch polls, quickly at first (most servers are up within tens of
// milliseconds), then every watchMaxEvery. One look at a child in a
// cgroup of its own costs about 0.1 to 0.3 ms here (pkg/proctree's
// benchmarks); without a cgroup, finding its process group reads every
// process of the host.
const (
	watchFirstEvery = 5 * time.Millisecond
	watchMaxEvery   = 100 * time.Millisecond
	// watchMaxErrors is how many looks in a row may fail before the
	// watch gives up and says why: a process that exits mid-look is no
	// error, a /proc it may not read is.
	watchMaxErrors = 5
)

func (o kernelObserver) waiting(ctx context.Context, w waitSpec) error {
	seen, err := o.check(w)
	if err != nil {
		return err
	}
	t := time.NewTimer(watchFirstEvery)
	defer t.Stop()
	failed := 0
	for every := watchFirstEvery; ; every = min(every*3/2, watchMaxEvery) {
		switch ok, err := seen(); {
		case ok:
			return nil
		case err != nil:
			if failed++; failed >= watchMaxErrors {
				return err
			}
		default:
			failed = 0
		}
		t.Reset(every)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// check returns the look that tells whether w is met: the child's
// processes hold a listener on the address (child socket mode), or wait on
// the socket it was given (master socket mode).
func (o kernelObserver) check(w waitSpec) (func() (bool, error), error) {
	var met func(pids []int) (bool, error)
	if w.fd >= 0 {
		inode, err := proctree.InodeOf(w.fd)
		if err != nil {
			return nil, err
		}
		met = func(pids []int) (bool, error) { return proctree.WaitsOn(pids, inode) }
	} else {
		addr, err := resolveListen(w.listen.Addr)
		if err != nil {
			return nil, err
		}
		met = func(pids []int) (bool, error) { return proctree.ListensOn(pids, addr) }
		if w.listen.Network == NetUDP {
			met = func(pids []int) (bool, error) { return proctree.BoundOn(pids, addr) }
		}
	}
	return func() (bool, error) {
		pids, err := proctree.Members(w.pid, o.procs.cgroupDir(w.pid))
		if err != nil {
			return false, err
		}
		return met(pids)
	}, nil
}

func (o kernelObserver) addressInUse(l Listener) ([]int, bool) {
	addr, err := resolveListen(l.Addr)
	if err != nil {
		return nil, false
	}
	probe := proctree.AddressInUse
	if l.Network == NetUDP {
		probe = proctree.PacketAddressInUse
	}
	holders, blocked, err := probe(addr)
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

// freeze freezes each child's cgroup where it has one of its own, and
// otherwise the processes of its tree (proctree.Members), through
// pkg/freeze.
func (o kernelObserver) freeze(ctx context.Context, pids []int) (func() error, bool, error) {
	targets := make([]freeze.Target, 0, len(pids))
	var errs []error
	for _, pid := range pids {
		o.procs.mu.Lock()
		g := o.procs.groups[pid]
		o.procs.mu.Unlock()
		if g != nil {
			targets = append(targets, freeze.Target{Cgroup: g})
			continue
		}
		members, err := proctree.Members(pid, "")
		if err != nil {
			errs = append(errs, err)
			members = []int{pid}
		}
		targets = append(targets, freeze.Target{Pids: members})
	}
	f, err := freeze.Freeze(ctx, targets)
	return f.Thaw, f.Complete() && len(errs) == 0, errors.Join(append(errs, err)...)
}

// take finds the listener on listen among the processes of the child pid
// and takes a copy of it (proctree.TakeListener), within ctx's deadline.
func (o kernelObserver) take(ctx context.Context, pid int, listen string) (int, uint64, error) {
	addr, err := resolveListen(listen)
	if err != nil {
		return -1, 0, err
	}
	pids, err := proctree.Members(pid, o.procs.cgroupDir(pid))
	if err != nil {
		return -1, 0, err
	}
	if ctx.Err() != nil {
		return -1, 0, ctx.Err()
	}
	return proctree.TakeListener(pids, addr)
}

// closeFD closes a descriptor the loop owns alone.
func closeFD(fd int) { unix.Close(fd) }
