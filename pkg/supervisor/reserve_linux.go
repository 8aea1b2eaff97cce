package supervisor

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/prefork/prefork/pkg/sockopt"
	"golang.org/x/sys/unix"
)

// reservation holds an address of child socket mode for the uid of its
// children while the master runs: a bound, non-listening SO_REUSEPORT
// socket (sockopt.ReserveFD). In the gap between a child's death and its
// successor's bind, no other user can bind the address (issue 12: a
// squatter took the port and answered every request). The children bind
// beside it (same uid, SO_REUSEPORT); it joins no accept group and never
// takes a connection.
//
// It is made once a child of the serving generation is ready, beside
// that child's listener, not before the first child binds: a program
// that binds without SO_REUSEPORT (one copy of Python's http.server, say)
// could not bind at all beside it. Beside such a listener the
// reservation fails instead, and the master says so once.
type reservation struct {
	fd  int
	uid int
}

// keepReserved makes the set's reservations those of want (address to
// uid): it closes the others and binds the missing ones. It returns why
// it could not bind some, by address.
func (s *socketSet) keepReserved(want map[string]int) map[string]error {
	for addr, r := range s.reserved {
		if uid, ok := want[addr]; !ok || uid != r.uid {
			unix.Close(r.fd)
			delete(s.reserved, addr)
		}
	}
	var failed map[string]error
	for addr, uid := range want {
		if _, ok := s.reserved[addr]; ok {
			continue
		}
		fd, err := reserveAs(addr, uid)
		if err != nil {
			if failed == nil {
				failed = make(map[string]error)
			}
			failed[addr] = err
			continue
		}
		s.reserved[addr] = &reservation{fd: fd, uid: uid}
	}
	return failed
}

// unreserveOthers closes the reservation of addr if it was made for
// another uid than the master's, whose listeners it would refuse.
func (s *socketSet) unreserveOthers(addr string) {
	if r, ok := s.reserved[addr]; ok && r.uid != os.Geteuid() {
		unix.Close(r.fd)
		delete(s.reserved, addr)
	}
}

// reserveAs makes a reservation of addr owned by uid. The kernel gives a
// socket the filesystem uid of the thread that makes it, and lets only
// sockets of one owner share a port: for children of another user
// (--user), the socket is made on a locked thread whose filesystem uid is
// theirs for that moment. A thread that could not switch back is not
// given back to the runtime: it ends with its goroutine.
func reserveAs(addr string, uid int) (int, error) {
	if uid == os.Geteuid() {
		return sockopt.ReserveFD(addr)
	}
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		prev, _ := unix.SetfsuidRetUid(uid)
		fd, err := sockopt.ReserveFD(addr)
		unix.SetfsuidRetUid(prev)
		if now, _ := unix.SetfsuidRetUid(-1); now == prev { // -1 changes nothing, and says what it is
			runtime.UnlockOSThread()
		}
		done <- result{fd, err}
	}()
	r := <-done
	if r.err != nil {
		return -1, r.err
	}
	var st unix.Stat_t
	if err := unix.Fstat(r.fd, &st); err != nil || int(st.Uid) != uid {
		unix.Close(r.fd)
		return -1, fmt.Errorf("reserve %s: the socket could not be made as uid %d (setfsuid needs CAP_SETUID)", addr, uid)
	}
	return r.fd, nil
}

// wantReserved returns the addresses to hold, with the uid to hold each
// for: the serving generation's in child socket mode, for its children.
// Master socket mode needs none: the master's listeners hold the address.
func (s *Supervisor) wantReserved() map[string]int {
	g := s.cur
	if g == nil || g.cfg.Sockets != SocketsChild || s.stopping != 0 {
		return nil
	}
	uid := os.Geteuid()
	if g.id != nil {
		uid = int(g.id.uid)
	}
	want := make(map[string]int)
	for _, l := range g.cfg.Listen {
		// A datagram address has no listen queue to squat: a bound
		// socket of another uid's would refuse the children's bind,
		// which they then report.
		if l.Network == NetTCP {
			want[l.key()] = uid
		}
	}
	return want
}

// followReservations has the socket set bring the reservations in step
// each time it releases listeners.
func (s *Supervisor) followReservations() { s.sockets.reserve = s.syncReservations }

// syncReservations brings the reservations in step with the serving
// generation; one it cannot make is said once per address: the master
// runs on without it, as it did before reservations.
func (s *Supervisor) syncReservations() {
	for addr, err := range s.sockets.keepReserved(s.wantReserved()) {
		if s.reserveWarned[addr] {
			continue
		}
		if s.reserveWarned == nil {
			s.reserveWarned = make(map[string]bool)
		}
		s.reserveWarned[addr] = true
		if errors.Is(err, unix.EADDRINUSE) {
			s.log.Info("the listen address is not held between children: their listener does not set SO_REUSEPORT, "+
				"so another user could bind it while a child restarts", "listen", addr)
			continue
		}
		s.log.Warn("cannot hold the listen address between children; another user could bind it while a child restarts",
			"listen", addr, "err", err)
	}
}
