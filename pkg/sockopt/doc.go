// Package sockopt holds the socket options prefork depends on: the
// SO_REUSEPORT control function every child listener is bound with, and the
// kernel setting net.ipv4.tcp_migrate_req that decides whether a closing
// reuseport listener hands its accept queue to the rest of its group.
package sockopt
