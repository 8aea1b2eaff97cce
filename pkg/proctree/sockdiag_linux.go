package proctree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// A hand-written NETLINK_SOCK_DIAG client for two questions: which TCP
// sockets are in LISTEN, and which UDP sockets are bound. x/sys/unix has
// the netlink constants but not the inet_diag structures, so they are
// laid out here from include/uapi/linux/inet_diag.h.

const (
	// sizeofInetDiagReqV2 is struct inet_diag_req_v2: family, protocol,
	// ext, pad (1 byte each), states (u32), struct inet_diag_sockid (48).
	sizeofInetDiagReqV2 = 56
	// sizeofInetDiagMsg is struct inet_diag_msg: family, state, timer,
	// retrans (1 byte each), struct inet_diag_sockid (48), expires,
	// rqueue, wqueue, uid, inode (u32 each).
	sizeofInetDiagMsg = 72
	// inetDiagSKV6Only is INET_DIAG_SKV6ONLY, the u8 attribute the
	// kernel adds to every IPv6 socket in LISTEN or CLOSE.
	inetDiagSKV6Only = 11
	// The states of include/net/tcp_states.h that matter here: a TCP
	// listener is in TCP_LISTEN; a UDP socket is in TCP_CLOSE, or in
	// TCP_ESTABLISHED once connected to one peer.
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
	// diagTimeout bounds each receive: the kernel answers at once, this
	// only guards against a bug turning into a hang.
	diagTimeout = 2 * time.Second
)

// dumpSockets returns every socket of the family and protocol
// (IPPROTO_TCP or IPPROTO_UDP) in one of states (a mask of 1<<state) in
// the caller's network namespace.
func dumpSockets(family, protocol uint8, states uint32) ([]Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(diagTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("sock_diag timeout: %w", err)
	}
	const seq = 1 // the socket is ours alone, so one request, one sequence
	if err := unix.Sendto(fd, diagRequest(family, protocol, states, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []Listener
	buf := make([]byte, 32<<10) // NLMSG_GOODSIZE is at most 8 KiB
	for {
		n, _, flags, _, err := unix.Recvmsg(fd, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag receive: %w", err)
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, errors.New("sock_diag receive: message truncated")
		}
		var done bool
		out, done, err = parseDiag(buf[:n], seq, states, out)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		if done {
			return out, nil
		}
	}
}

// diagRequest builds the dump request: a netlink header followed by an
// inet_diag_req_v2 for the sockets of family and protocol in states.
func diagRequest(family, protocol uint8, states, seq uint32) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	r := b[unix.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = protocol
	ne.PutUint32(r[4:], states)
	return b
}

// parseDiag appends to out the sockets in one of states (a mask) in one
// datagram of the dump's answer; done is true at its end (NLMSG_DONE).
// Messages of another sequence are skipped.
func parseDiag(b []byte, seq, states uint32, out []Listener) (_ []Listener, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		size := int(ne.Uint32(b[0:]))
		if size < unix.NLMSG_HDRLEN || size > len(b) {
			return out, false, fmt.Errorf("bad message length %d of %d bytes", size, len(b))
		}
		typ, body := ne.Uint16(b[4:]), b[unix.NLMSG_HDRLEN:size]
		if ne.Uint32(b[8:]) == seq {
			switch typ {
			case unix.NLMSG_DONE:
				return out, true, doneError(body)
			case unix.NLMSG_ERROR:
				return out, true, netlinkError(body)
			case unix.SOCK_DIAG_BY_FAMILY:
				if l, ok := parseDiagMsg(body, states); ok {
					out = append(out, l)
				}
			}
		}
		b = b[min(nlmAlign(size), len(b)):]
	}
	return out, false, nil
}

// parseDiagMsg reads a struct inet_diag_msg and its attributes, if its
// state is one of states: the kernel filters them already, this is a
// guard.
func parseDiagMsg(b []byte, states uint32) (Listener, bool) {
	if len(b) < sizeofInetDiagMsg || b[1] >= 32 || states&(1<<b[1]) == 0 {
		return Listener{}, false
	}
	ne := binary.NativeEndian
	port := binary.BigEndian.Uint16(b[4:])
	var addr netip.Addr
	switch b[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(b[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(b[8:24]))
	default:
		return Listener{}, false
	}
	l := Listener{
		Addr:  netip.AddrPortFrom(addr, port),
		UID:   ne.Uint32(b[64:]),
		Inode: uint64(ne.Uint32(b[68:])),
	}
	for a := b[sizeofInetDiagMsg:]; len(a) >= 4; {
		size, typ := int(ne.Uint16(a[0:])), ne.Uint16(a[2:])
		if size < 4 || size > len(a) {
			break
		}
		if typ == inetDiagSKV6Only && size >= 5 {
			l.V6Only = a[4] != 0
		}
		a = a[min(nlmAlign(size), len(a)):]
	}
	return l, true
}

// doneError returns the error a dump ends with: NLMSG_DONE carries an int
// that is a negative errno when the dump failed midway.
func doneError(body []byte) error {
	if len(body) >= 4 {
		if code := int32(binary.NativeEndian.Uint32(body)); code < 0 {
			return fmt.Errorf("dump: %w", unix.Errno(-code))
		}
	}
	return nil
}

// netlinkError returns the error of an NLMSG_ERROR message, whose body
// starts with a negative errno (0 would be an acknowledgement, which a
// dump does not ask for).
func netlinkError(body []byte) error {
	if len(body) < 4 {
		return errors.New("short error message")
	}
	code := int32(binary.NativeEndian.Uint32(body))
	if code == 0 {
		return errors.New("unexpected acknowledgement")
	}
	return fmt.Errorf("request: %w", unix.Errno(-code))
}

// nlmAlign rounds n up to netlink's 4-byte alignment.
func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
