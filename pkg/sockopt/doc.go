// Package sockopt holds the socket options prefork depends on: the
// SO_REUSEPORT control function every child listener is bound with, the
// bare listening descriptors the master holds in master socket mode
// (ListenFD, the same socket without Go's netpoller), and the kernel
// setting net.ipv4.tcp_migrate_req that decides whether a closing
// reuseport listener hands its accept queue to the rest of its group.
package sockopt
