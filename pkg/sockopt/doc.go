// Package sockopt holds the socket options prefork depends on: the
// SO_REUSEPORT control function every child listener is bound with, the
// bare listening descriptors the master holds in master socket mode
// (ListenFD, the same socket without Go's netpoller), and the kernel
// setting net.ipv4.tcp_migrate_req that decides whether a closing
// reuseport listener hands its accept queue to the rest of its group.
//
// UDP has its counterparts: PacketControl and ListenPacket for a child,
// ListenPacketFD for the master, CheckFreePacket before a group's first
// bind, and ReceiveQueue and ReceiveQueues for the bytes waiting in a
// socket's receive buffer. A UDP group's sockets go without SO_REUSEADDR
// (see PacketControl). There is no UDP ReserveFD: a bound UDP socket is a
// member of its reuseport group from bind on, with nothing like listen
// to hold it back, so a reservation would take a share of the datagrams
// and never read them.
package sockopt
