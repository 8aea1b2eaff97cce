// Package proctree tells, from the kernel alone, what a child's processes
// do with a listening socket (TCP) or a bound one (UDP): whether they wait
// for connections or datagrams on it, and, when a child fails with
// "address already in use", who holds the address.
// The children are foreign servers (nginx, gunicorn, node, uvicorn, caddy,
// Go binaries) that know nothing of prefork, so nothing here asks them.
//
// Sources, all read by the master (root, or the children's user), with
// their formats as checked on Linux 6.18:
//
//   - /proc/PID/task/TID/children (space-separated pids) and getpgid(2),
//     for Members; /proc/PID/stat ("PID (COMM) STATE PPID PGRP ...") on a
//     kernel without the children files.
//   - /proc/PID/fd: each link names an open file; a socket is
//     "socket:[INODE]", an epoll instance "anon_inode:[eventpoll]".
//   - /proc/PID/fdinfo/FD of an epoll fd: one line per registered file,
//     "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x"
//     (fs/eventpoll.c, ep_show_fdinfo), where sdev is the kernel's own
//     dev_t encoding (sockfs is 0x9 on 6.18).
//   - /proc/PID/task/TID/syscall: "NR 0xARG0 ... 0xARG5 0xSP 0xPC" for a
//     thread blocked in system call NR, "running" or "-1 0xSP 0xPC"
//     otherwise.
//   - /proc/PID/mem: the pollfd array or fd_set of a blocked poll or
//     select, at the pointer the syscall file shows.
//   - NETLINK_SOCK_DIAG (inet_diag, TCP, state LISTEN): address, owner,
//     inode and, for IPv6, INET_DIAG_SKV6ONLY. An MPTCP listener (Go's
//     default) appears as its TCP subflow listener, under the inode of the
//     MPTCP socket, which is what its holders' fd links show. The same
//     for UDP (udp_diag), whose sockets are in TCP_CLOSE, or in
//     TCP_ESTABLISHED once connected.
//
// "Waiting for connections" means: the socket is registered for EPOLLIN
// in an epoll set of the process (Go, node, Python's asyncio and
// selectors, nginx, uvicorn), or a thread is blocked in accept/accept4 on
// it (PHP-FPM, Apache with one listener), in read/recvfrom/recvmsg/
// recvmmsg on it (a UDP server reading with blocking calls), in
// poll/ppoll with it in the array, or in select/pselect6 with it in the
// read set (gunicorn's sync worker; Debian 12's glibc makes select a
// pselect6). "Waiting for datagrams" is the same. Not seen: accepts
// through io_uring, SIGIO, or a loop of non-blocking accepts and sleeps;
// a 32-bit process on a 64-bit kernel, whose system call numbers differ,
// is seen through epoll only. All of it is read in the caller's network
// and pid namespaces.
//
// Invariants: a process may exit at any point of a scan; its ENOENT and
// ESRCH are skipped, never reported. Every read is bounded in size. The
// reads of WaitsOn that take a lock an inspected process can hold (an
// epoll set's mutex, its memory map, its exec lock) run with a deadline,
// so a hostile process slows a call down by at most that deadline and
// never hangs it; Members, ListensOn, BoundOn and Holders read nothing of
// the kind. Nothing is cached between calls: each call sees the kernel as
// it is.
//
// TakeListener (TakePacket for UDP) goes one step further and takes a
// child's listener: in child socket mode each child binds its own
// SO_REUSEPORT socket, and a master that steers connections needs a
// descriptor of each one (to put it in the group's socket array, read its
// accept queue, move its queue). It finds the socket with sock_diag and
// /proc/PID/fd, as above, and copies it with pidfd_open and pidfd_getfd
// (Linux 5.6), which the kernel allows under ptrace's rule
// (PTRACE_MODE_ATTACH_REALCREDS): root or CAP_SYS_PTRACE, or the child's
// real uid and a dumpable child, and under YAMA's ptrace_scope 1 only for
// a descendant. The copy shares the child's open file description, flags
// included, and keeps the socket listening after the child exits until the
// master closes it. The whole call runs with a deadline, as pidfd_getfd
// waits for the child's exec lock.
//
// The package works on Linux only; elsewhere every function returns an
// error wrapping errors.ErrUnsupported.
package proctree
