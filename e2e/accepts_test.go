package e2e

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// Every child counts the connections it accepts on its counter page, and
// the master reads them live: the sum over `master status` equals the
// connections made, to the unit, in both socket modes.
func TestAcceptCountsAreExact(t *testing.T) {
	t.Parallel()
	for _, sockets := range []string{"child", "master"} {
		t.Run(sockets, func(t *testing.T) {
			m := startMaster(t, "--workers", "3", "--sockets", sockets)
			m.waitReady(3)
			if got := sumAccepts(m); got != 0 {
				t.Fatalf("accepts before any connection: %d", got)
			}
			const perRequest, keptConns, requestsEach = 100, 5, 10
			for range perRequest {
				if _, err := getWhoami(m.addr); err != nil {
					t.Fatal(err)
				}
			}
			for range keptConns {
				c, err := net.Dial("tcp", m.addr)
				if err != nil {
					t.Fatal(err)
				}
				kc := &keptConn{Conn: c, br: bufio.NewReader(c)}
				for range requestsEach {
					if _, err := kc.whoami(); err != nil {
						t.Fatal(err)
					}
				}
				c.Close()
			}
			want := uint64(perRequest + keptConns)
			// The last accepts may still be on their way into the pages.
			eventually(t, 5*time.Second, "the accept counts add up", func() bool { return sumAccepts(m) == want })
			if got := sumAccepts(m); got != want {
				t.Fatalf("sum of accepts %d, want %d", got, want)
			}
		})
	}
}

func sumAccepts(m *master) uint64 {
	var sum uint64
	for _, c := range m.status().Children {
		sum += c.Accepts
	}
	return sum
}
