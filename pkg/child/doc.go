// Package child is what a Go server uses to be a good prefork child: the
// process side of the child contract in docs/socket-modes.md ("The child
// contract").
//
// The protocol, as the master speaks it:
//
//   - Listen. A child has one or more named listeners, in the order of
//     PREFORK_LISTENERS (http,admin,dns), each a TCP or a UDP address.
//     Under --sockets master the master passes them by systemd socket
//     activation (listener i as fd 3+i, LISTEN_FDS=N, LISTEN_FDNAMES with
//     their names, LISTEN_PID equal to the child's pid); otherwise the
//     child binds each PREFORK_LISTEN_<NAME> itself with SO_REUSEPORT
//     (and SO_REUSEADDR for TCP only) so every child of every generation
//     shares the address.
//     A child given no names has one listener, "default": fd 3, else
//     PREFORK_LISTEN, else (standalone) 127.0.0.1:8080. The same binary
//     thus runs in both socket modes and on its own. Listen takes the
//     first listener, ListenNamed a stream one by name, ListenPacket a
//     UDP one, and Listeners lists them.
//   - Ready. Once the child accepts, it sends READY=1 to NOTIFY_SOCKET (the
//     sd_notify protocol). The master tells children apart by the sender's
//     credentials, so the message carries nothing else.
//   - Watchdog. Under --watchdog D the master sets WATCHDOG_USEC (D in
//     microseconds, without WATCHDOG_PID: it cannot know the pid before
//     the fork). Ready then starts one goroutine that sends WATCHDOG=1 at
//     once and every D/2 while the check of SetWatchdogCheck passes. A
//     child that pinged once and then stays silent for D is taken to be
//     hung: the master sends SIGQUIT (a Go child dumps its goroutines),
//     then SIGKILL, and starts a successor. Pinging goes on while the
//     child drains; the master ignores the watchdog of draining children.
//   - Drain. SIGTERM starts the drain; so does SIGINT, but only when the
//     process runs standalone: under a master (PREFORK_SLOT set) SIGINT is
//     ignored, because a terminal Ctrl-C reaches the whole process group
//     and only the master decides who drains. The child stops accepting,
//     answers every request from then on with "Connection: close", closes a
//     connection only after such a response or once it has been idle for
//     DrainGrace, and returns when none is left, or when
//     PREFORK_DRAIN_TIMEOUT has passed (so a child orphaned by a SIGKILLed
//     master still exits). http.Server.Shutdown is not used: it closes idle
//     keep-alive connections at once and so drops the requests clients are
//     already sending on them.
//   - Master gone. The master starts every child with a parent-death signal
//     of SIGTERM, so a child whose master dies drains exactly as on a
//     planned stop; nothing here polls the parent.
//
// A server needs a few lines:
//
//	ln, err := child.Listen(ctx)
//	...
//	srv := &http.Server{Handler: h}
//	errc := make(chan error, 1)
//	go func() { errc <- child.Serve(srv, ln) }()
//	if err := child.Ready(); err != nil { ... }
//	err = <-errc
//
// A child with more listeners takes each by name before Ready:
//
//	admin, err := child.ListenNamed(ctx, "admin")
//	...
//	pc, err := child.ListenPacket(ctx, "dns") // a *child.PacketConn
//
// The listeners count on the master's shared page (PREFORK_COUNTERS_FD):
// every accepted connection, and every datagram a PacketConn reads, in
// the page's total and in the listener's own counter, with one atomic add
// each: no system call, lock or allocation.
package child
