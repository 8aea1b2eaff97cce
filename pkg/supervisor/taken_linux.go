package supervisor

import (
	"fmt"

	"github.com/prefork/prefork/pkg/sockopt"
	"github.com/prefork/prefork/pkg/steer"
	"golang.org/x/sys/unix"
)

// takenSet holds, in child socket mode, a copy of each ready child's own
// listener, taken with pidfd_getfd (proctree.TakeListener), so that the
// group can be steered as in master socket mode: the copies go in the
// steering program's sockets array, their accept queues tell a stuck
// slot, and a stuck slot's queue can be moved. The program also moves
// the queue of a child's listener when it closes (an exit, a reload), so
// that no connection queued on it is reset, whatever
// net.ipv4.tcp_migrate_req says.
//
// A copy keeps the child's socket open: when the child exits or starts
// draining, the loop drops its copy (drop), after taking it out of the
// array, so that the socket closes with the child's own descriptor and
// its queue moves to the others.
type takenSet struct {
	on       bool                      // --steer, in child socket mode
	steerers map[string]*steer.Steerer // by address
	byPid    map[int]*takenSocket
	bySlot   map[socketKey]*takenSocket // the copy in the program's array
	// off holds, by address, why its group is not steered: a child's
	// listener could not be taken or steered. Said once; the program
	// stays attached where it was, steering nothing (every slot to the
	// kernel's hash) but still moving the queues of closing listeners.
	off    map[string]string
	retire func(*steer.Steerer) // called with a program about to close
	// noMigrate: the program loaded select-only (before Linux 5.14),
	// so closing listeners' queues move only with tcp_migrate_req.
	noMigrate bool
}

// takenSocket is the copy of one child's listener.
type takenSocket struct {
	fd    int
	inode uint64
	pid   int
	key   socketKey
}

func newTakenSet() *takenSet {
	return &takenSet{steerers: make(map[string]*steer.Steerer), byPid: make(map[int]*takenSocket),
		bySlot: make(map[socketKey]*takenSocket), off: make(map[string]string)}
}

// steerer returns the program that steers addr's group, or nil when it is
// not steered (yet, or any more).
func (t *takenSet) steerer(addr string) *steer.Steerer {
	if t.off[addr] != "" {
		return nil
	}
	return t.steerers[addr]
}

// add puts the copy fd of pid's listener in addr's group's program as
// slot's socket, loading and attaching the program with the first copy,
// and reports whether the set keeps fd; if not, the caller closes it.
// While addr's group is not steered, the copy only attaches the program
// (see off). On error the caller closes fd and turns steering off for
// addr.
func (t *takenSet) add(addr string, slot, pid, fd int, inode uint64) (kept bool, err error) {
	st := t.steerers[addr]
	if st == nil {
		if st, err = steer.Load(MaxWorkers); err != nil {
			return false, err
		}
		t.steerers[addr] = st
	}
	// Every copy attaches: a group whose every listener closed (all its
	// children crashed at once) is a new group, without the program.
	if err := st.Attach(fd); err != nil {
		return false, err
	}
	if t.off[addr] != "" {
		return false, nil
	}
	key := socketKey{addr: addr, slot: slot}
	if err := st.SetSocket(slot, fd); err != nil {
		return false, err
	}
	if old := t.bySlot[key]; old != nil && old.pid != pid {
		// The slot's next child (a reload's, a successor): the old
		// child keeps its copy until it drains.
		delete(t.bySlot, key)
	}
	ts := &takenSocket{fd: fd, inode: inode, pid: pid, key: key}
	t.bySlot[key], t.byPid[pid] = ts, ts
	return true, nil
}

// drop closes pid's copy, if any, after taking it out of the program's
// array.
func (t *takenSet) drop(pid int) {
	ts := t.byPid[pid]
	if ts == nil {
		return
	}
	delete(t.byPid, pid)
	if t.bySlot[ts.key] == ts {
		delete(t.bySlot, ts.key)
		st := t.steerers[ts.key.addr]
		if st != nil {
			st.ClearSocket(ts.key.slot)
		}
		// An older child of the slot that still serves (a reload rolled
		// back, a recycling successor that crashed: a draining one has
		// no copy any more) takes its place back in the array.
		for _, other := range t.byPid {
			if other.key == ts.key && st != nil && t.off[ts.key.addr] == "" && st.SetSocket(ts.key.slot, other.fd) == nil {
				t.bySlot[ts.key] = other
				break
			}
		}
	}
	unix.Close(ts.fd)
}

// turnOff stops steering addr's group and reports whether it was on: the
// program stays attached, with no slot, so that the kernel's hash
// chooses and closing listeners' queues still move.
func (t *takenSet) turnOff(addr, why string) bool {
	if t.off[addr] != "" {
		return false
	}
	t.off[addr] = why
	for pid, ts := range t.byPid {
		if ts.key.addr == addr {
			t.drop(pid)
		}
	}
	if st := t.steerers[addr]; st != nil {
		st.SetSlots(0)
	}
	return true
}

// acceptQueue returns how many connections wait on slot's copy.
func (t *takenSet) acceptQueue(addr string, slot int) (uint32, bool) {
	ts := t.bySlot[socketKey{addr: addr, slot: slot}]
	if ts == nil {
		return 0, false
	}
	q, _, err := sockopt.AcceptQueue(ts.fd)
	return q, err == nil
}

// inode returns the inode of slot's copy, or 0.
func (t *takenSet) inode(addr string, slot int) uint64 {
	if ts := t.bySlot[socketKey{addr: addr, slot: slot}]; ts != nil {
		return ts.inode
	}
	return 0
}

// holder returns the pid of the child whose copy is slot's socket, or 0.
func (t *takenSet) holder(addr string, slot int) int {
	if ts := t.bySlot[socketKey{addr: addr, slot: slot}]; ts != nil {
		return ts.pid
	}
	return 0
}

// requeue moves the queue of slot's copy (steer.Steerer.Requeue).
func (t *takenSet) requeue(addr string, slot int) (uint32, error) {
	ts := t.bySlot[socketKey{addr: addr, slot: slot}]
	st := t.steerer(addr)
	if ts == nil || st == nil {
		return 0, fmt.Errorf("requeue slot %d on %s: no steered listener", slot, addr)
	}
	return st.Requeue(slot, ts.fd)
}

// anyFD returns a copy of one of addr's listeners, or -1.
func (t *takenSet) anyFD(addr string) int {
	for _, ts := range t.byPid {
		if ts.key.addr == addr {
			return ts.fd
		}
	}
	return -1
}

// release closes the programs of the addresses that keep no copy and
// that keep is false for: their groups are gone or no longer served.
func (t *takenSet) release(keep func(addr string) bool) {
	for addr, st := range t.steerers {
		if keep(addr) || t.anyFD(addr) >= 0 {
			continue
		}
		if t.retire != nil {
			t.retire(st)
		}
		st.Close()
		delete(t.steerers, addr)
		delete(t.off, addr)
	}
}

// closeAll closes every copy and program.
func (t *takenSet) closeAll() {
	for pid := range t.byPid {
		t.drop(pid)
	}
	t.release(func(string) bool { return false })
}
