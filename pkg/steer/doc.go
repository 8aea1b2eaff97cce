// Package steer steers the new connections of a SO_REUSEPORT group away
// from the slots whose listeners nobody accepts on, with an SK_REUSEPORT
// eBPF program. It steers the datagrams of a UDP group the same way (see
// UDP below).
//
// # The problem
//
// In master socket mode every slot has its own listener in one reuseport
// group, and the kernel hands each new connection to one of them by a hash
// of its 4-tuple. When the child of a slot is stopped, stuck or being
// replaced, the hash keeps giving that slot its share of new connections,
// and they wait in its accept queue until somebody accepts them. A program
// attached to the group chooses the listener instead.
//
// # The choice
//
// For a new connection (the SYN, for TCP) the kernel passes the program the
// flow hash it would itself have used (reuse_md->hash: inet_ehashfn of the
// 4-tuple, the same value whatever the program does) and, when the program
// selects nothing, picks socks[reciprocal_scale(hash, n)] among the n
// listening sockets, in the order they called listen()
// (reuseport_select_sock_by_hash, net/core/sock_reuseport.c). The program
// does, for n active slots (SetSlots):
//
//  0. Count the run in runs (Steerer.Runs): a group whose connections are
//     accepted while the count stands still runs another program.
//  1. idx = reciprocal_scale(hash, n) = (uint64(hash) * n) >> 32, the
//     kernel's own pick. When the listeners were made in slot order and
//     none was closed since, it is the very listener the kernel would have
//     chosen, connection by connection, so attaching the program with every
//     slot healthy changes nobody's destination and the spread stays the
//     kernel's. If slot idx is healthy (SetHealthy) and its socket is in the
//     array (SetSocket), select it.
//  2. Otherwise spread the connection over the healthy slots: the low 32
//     bits of hash*n (the part reciprocal_scale throws away, uniform within
//     idx's share) choose a place pos among the h healthy active slots, again
//     by reciprocal_scale, in a dense list (spares) that Steerer keeps in
//     slot order. So the share of an unhealthy slot goes to every healthy
//     slot evenly, not to its neighbour alone: with 4 slots and one
//     unhealthy, each other slot gets 1/3, not 1/4, 1/4 and 1/2. The entry
//     is checked again (active, healthy) and selected.
//  3. If that fails (the slot has no socket in the array, or the list is
//     being rewritten), try the next entries, spares[(pos+1) mod h],
//     spares[(pos+2) mod h], ..., for at most 64 entries in all.
//  4. If none can be selected: return SK_PASS without selecting, and the
//     kernel's hash decides among all listeners, as if no program were
//     attached. New connections still succeed; they only may wait as they
//     would without steering.
//
// The program never returns SK_DROP: steering can delay nothing and refuse
// nothing that the kernel alone would not.
//
// # The loop and the verifier
//
// Step 3 is a loop of at most 64 tries, unrolled when the program is built
// (the asm package writes it in Go, no C compiler involved): straight-line
// code, so there is no back-edge for the verifier to bound and it loads on
// any kernel with SK_REUSEPORT programs. Each try computes its index as
// (pos + t) mod h with one ALU instruction instead of a branch, and every
// failing path of a try meets the next try with the same state, so the
// verifier walks each try once: the program is about 1,900 instructions,
// the verifier processes about 5,500 (of its limit of 1,000,000) in about
// 10 ms, whatever maxSlots is (measured on Linux 6.18).
// Trying every slot instead, as a bounded loop up to maxSlots, was measured
// first: 190,000 instructions and 0.5 s to verify for 1024 slots, and no
// load at all for 4096. Probing the list of healthy slots rather than the
// slots themselves is what makes 64 tries enough: each entry is a healthy
// slot, and an entry fails only when its socket is missing. With up to 64
// healthy slots, every one is tried; beyond, a connection whose 64 tries
// all lack a socket is left to the kernel. MaxSlots (4096, the
// supervisor's MaxWorkers) bounds the maps only.
//
// # Maps
//
//   - sockets, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: key uint32 slot, value the
//     listener's descriptor as a uint64 on update (its socket cookie on
//     lookup). The kernel removes a socket from it by itself when the socket
//     is closed or shut down. A socket can be in one such array only, and a
//     program can select only sockets of the group it runs for: one
//     Steerer per reuseport group (per listen address).
//   - health, ARRAY of uint32 per slot: 1 = healthy; anything else, and
//     every slot at load time, is unhealthy.
//   - spares, ARRAY of uint32: the healthy active slots in slot order, the
//     list of step 2.
//   - config, ARRAY of one {n, h uint32}: the number of active slots and the
//     length of spares.
//   - runs, PERCPU_ARRAY of one uint64: the program's runs, summed by Runs.
//   - conns, PERCPU_ARRAY of maxSlots+1 uint64: the new connections the
//     program placed, by slot (counted when bpf_sk_select_reuseport
//     accepts the slot's socket), and at key maxSlots those it left to the
//     kernel (step 4); summed by Connections. A migrating connection
//     (reuse_md->migrating_sk set) is not counted again.
//
// A freshly loaded Steerer has n = 0 and steers nothing; so does a group
// whose slots are all unhealthy. Updates are single map writes, ordered so
// that a program running meanwhile never selects a slot that is marked
// unhealthy or not active in what it read; a stale entry of spares is
// checked (step 2 verifies health and n) and then falls to step 3.
//
// # Attaching, and what outlives what
//
// Attach does setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, prog) on
// any listening socket of the group: the program belongs to the group
// (struct sock_reuseport), not to that socket, and the kernel holds its own
// reference to it and, through it, to the maps. So:
//
//   - Closing the socket the program was attached through changes nothing:
//     the rest of the group keeps the program (tested), and the closed
//     socket leaves the sockets array by itself. A socket that joins the
//     group later (scale up) is steered as soon as it is put in the array.
//   - Close does not detach the program: the kernel keeps it until Detach,
//     another Attach, or the group's last socket closes. Close first sets
//     n = 0 so that the program left behind selects nothing and the group
//     is back to the kernel's hash, then releases its descriptors.
//
// # Closing a listener: the accept queue migrates
//
// The program is loaded with the attach type
// BPF_SK_REUSEPORT_SELECT_OR_MIGRATE, which Linux 5.14 and later honour:
// closing one listener of the group then hands the connections in its
// accept queue, and the handshakes in flight, to the other listeners
// instead of resetting them, whatever net.ipv4.tcp_migrate_req says
// (tested with it at 0). The kernel runs the program for each
// (reuse_md->migrating_sk set, hash the connection's own), which picks a
// healthy slot as above, or falls back to the kernel's hash. A supervisor
// that removes a slot calls SetSlots first, then closes the slot's
// listener, and loses nothing. The migrated connections follow the hash
// like new ones, so the queue of a removed last slot n-1 lands on slot n-2,
// whose share under n-1 slots covers the top of the hash range. Older
// kernels ignore the attach type (or refuse it, and Load falls back to
// BPF_SK_REUSEPORT_SELECT); migration there needs tcp_migrate_req=1.
//
// # Rescuing a stuck slot's queue: Requeue
//
// A slot whose child is stopped or deadlocked keeps the connections that
// reached its accept queue before it was marked unhealthy; steering only
// keeps new ones away. Requeue(slot, fd) moves them without closing the
// listener, which stays the slot's for its next child: shutdown(fd,
// SHUT_RD) takes the socket out of the group and out of the sockets array
// and hands its queue on as a close would (the program picks a healthy
// slot for each connection), then listen(fd, backlog), with the backlog
// the socket had (one the child set with its own listen() included),
// puts it back in the group, and SetSocket puts it back in the array,
// which refuses a socket that is not listening.
//
// What it guarantees: every established connection in the queue moves to
// a healthy slot, and none is reset (measured: 40 of 40 moved, answered
// by the other listener, 0 reset, with tcp_migrate_req=0). It returns
// the queue's length read just before the move. It refuses, doing
// nothing, when the program does not migrate (ErrNotMigrating: shutdown
// would reset the queue, tested), when fd is not the socket slot has in
// the array, and when no other healthy active slot has a socket there to
// take the queue. Mark the slot unhealthy before, so that the program
// sends no new connection to it meanwhile.
//
// What it does not:
//
//   - Handshakes in flight (SYN received, final ACK not yet) are not moved:
//     they complete into the re-listened queue. Check the queue afterwards
//     and call Requeue again while the slot is still stuck.
//   - A process running accept() on fd during the two calls (any holder of
//     the socket, not only the stuck child) has it fail with EINVAL, and
//     Go's http.Server.Serve then returns for good. Freeze the socket's
//     holders (SIGSTOP or the cgroup freezer) before Requeue.
//   - The socket rejoins at the end of the group, so the kernel's own
//     hash mapping (socks[reciprocal_scale(hash, n)], step 4 and
//     connections the program leaves alone) changes; the program's
//     choice, by slot number through the array, does not.
//   - A socket bound to port 0 gives its port back at shutdown and
//     listen() binds a new one: it has left the group. Requeue still moves
//     the queue, then returns an error wrapping ErrListenerLost, as it
//     does when listen fails: close that socket and give the slot a new
//     listener. Bind every listener of a group to its port explicitly.
//   - It cannot see which program the group runs: if the group's program
//     was replaced or detached (Runs stands still), shutdown resets the
//     queue as a close would.
//
// # UDP
//
// A group of UDP sockets bound with SO_REUSEPORT on one port is a
// reuseport group too, and the program works on it unchanged (tested on
// Linux 6.18): Attach takes a bound UDP socket of the group, SetSocket
// puts a bound one in the array (an unbound one is refused with EINVAL),
// and SetSlots, SetHealthy and ClearSocket choose as above. The kernel
// runs the program for every datagram that reaches the group, with hash
// the kernel's own hash of the datagram's 4-tuple, so the datagrams of one
// source address and port all go where its first went, as long as the
// slots do not change; with every slot healthy the program's pick is the kernel's,
// datagram by datagram, the sockets ordered as they were bound (tested:
// the same 400 source ports land on the same sockets once the program is
// detached). An unhealthy slot gets no datagram and its share is spread
// over the others (tested). What differs from TCP:
//
//   - Runs and Connections count datagrams, not connections: one run and
//     one placement for each datagram (tested, to the unit), none of the
//     retries and stray segments that make TCP's count an upper bound.
//   - Nothing migrates. Closing a UDP socket drops the datagrams waiting
//     in its receive buffer: the program is not run for them and no other
//     slot reads them (tested). The migrating attach type and
//     net.ipv4.tcp_migrate_req concern TCP listeners only.
//   - Requeue is TCP only: a UDP socket has no accept queue, and shutdown
//     hands its receive buffer to nobody. Requeue refuses a UDP socket,
//     doing nothing (tested). A stopped child's buffered datagrams wait
//     for it, or go with its socket; steering keeps new ones away.
//   - A TCP and a UDP listener on the same port are two groups, each with
//     its own Steerer.
//
// Without a program, the kernel's spread of one datagram from each of
// 1,000 source ports over 4 sockets (TestUDPKernelSpread, 50 rounds,
// Linux 6.18) had a max/min of 1.13 at the median, 1.23 at the 90th
// percentile, 1.02 to 1.38 in all: the binomial spread of 1,000 draws
// (250 ± 14 each).
//
// # Requirements
//
// Linux 4.19 or later (5.3 for Detach, 5.14 for migration), CAP_BPF and
// CAP_NET_ADMIN (CAP_SYS_ADMIN before 5.8) or root: unprivileged BPF is
// not enough, and before 5.11 maps are also charged to RLIMIT_MEMLOCK.
// Load and Supported say which is missing.
//
// The listeners must be TCP sockets, over IPv4 or IPv6, bound with
// SO_REUSEPORT and listening (or UDP sockets bound with SO_REUSEPORT):
// not MPTCP, which Go (1.24 and later) chooses by default for a listener
// when the kernel has it (net.mptcp.enabled=1).
// The kernel refuses an MPTCP socket both in the sockets array and for
// SO_ATTACH_REUSEPORT_EBPF (its reuseport group is made of the TCP subflow
// listeners that MPTCP creates, which have no descriptor of their own);
// Attach and SetSocket say so. Make the listeners with
// net.ListenConfig.SetMultipathTCP(false).
package steer
