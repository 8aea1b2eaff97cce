// Package metrics turns a snapshot of a prefork master's state into
// Prometheus metrics at scrape time (Collector), and reads the socket state
// the snapshot does not hold from the kernel: each slot's queue on each
// listener, and ListenOverflows. The children's counter pages are package
// counters'.
//
// Every listener of every slot has its count series, labelled slot and
// listener: prefork_child_accepts_total for a TCP listener,
// prefork_child_datagrams_total for a UDP one, kept for a listener no
// longer served (Port 0) so that no counter disappears. A served listener
// also has its queue now: prefork_child_listen_queue_length (TCP, the
// connections in the accept queue) or prefork_child_receive_queue_bytes
// (UDP, rx_queue of /proc/net/udp: the memory the waiting datagrams take,
// each its payload plus the kernel's overhead, about 800 bytes for a
// 100-byte datagram on Linux 6.18). The slot's socket is the master's
// (SlotListener.Inode, master socket mode) or the slot's ready child's own
// on the listener's port, found among its descriptors once and cached
// while that child serves it (child socket mode). The kernel's table of a
// network and port is read once per scrape, whatever the number of slots.
package metrics
