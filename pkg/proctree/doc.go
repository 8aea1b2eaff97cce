// Package proctree tells, from the kernel alone, what a child's processes
// do with a listening socket: whether they wait for connections on it, and,
// when a child fails with "address already in use", who holds the address.
// The children are foreign servers (nginx, gunicorn, node, uvicorn, caddy,
// Go binaries) that know nothing of prefork, so nothing here asks them.
//
// Sources, all read by the master (root, or the children's user):
//
//   - /proc/PID/stat: ppid and process group, for Members.
//   - /proc/PID/fd: each link names an open file; a socket is
//     "socket:[INODE]", an epoll instance "anon_inode:[eventpoll]".
//   - /proc/PID/fdinfo/FD of an epoll fd: one line per registered file,
//     "tfd: N events: E data: D  pos:P ino:HEX sdev:HEX" (fs/eventpoll.c,
//     ep_show_fdinfo; checked on Linux 6.18).
//   - /proc/PID/task/TID/syscall: "NR arg0 ... arg5 sp pc" (hex args) for
//     a thread blocked in a system call, "running" or "-1 sp pc" otherwise.
//   - /proc/PID/mem: the pollfd array or fd_set a blocked poll or select
//     reads, at the pointer the syscall file shows.
//   - NETLINK_SOCK_DIAG (inet_diag): the TCP sockets in LISTEN, with
//     address, owner and inode. An MPTCP listener (Go's default) appears
//     as its TCP subflow listener, under the MPTCP socket's inode.
//
// "Waiting for connections" means: the socket is registered for EPOLLIN in
// an epoll set of the process (Go, node, Python's asyncio and selectors,
// nginx, uvicorn), or a thread is blocked in accept/accept4 on it (PHP-FPM,
// Apache's single listener), in poll/ppoll with it in the array, or in
// select/pselect6 with it in the read set (gunicorn's sync worker). A
// process that registered the socket but stopped looking at its epoll set
// still counts; io_uring accepts are not seen; a 32-bit process on a
// 64-bit kernel reports other syscall numbers and is only seen through
// epoll.
//
// Invariants: a process may exit at any point of a scan; its ENOENT and
// ESRCH are skipped, never reported. Every read is bounded in size, and
// the reads that take a lock a process can hold (an epoll set's mutex, its
// memory map, its exec lock) run with a deadline, so a hostile process
// can slow WaitsOn down by that deadline but never hang it. Nothing is
// cached between calls: each call sees the kernel as it is.
//
// The package works on Linux only; elsewhere every function returns an
// error wrapping errors.ErrUnsupported.
package proctree
