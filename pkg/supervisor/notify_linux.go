package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// notifyMaxDatagram bounds one sd_notify message; systemd reads at most a
// page-sized buffer too.
const notifyMaxDatagram = 4096

// credentialsSpace is the control-message room for the sender's
// credentials that SO_PASSCRED attaches to every datagram.
var credentialsSpace = unix.CmsgSpace(unix.SizeofUcred)

// notifyServer is the master's end of the sd_notify protocol: a unix
// datagram socket with SO_PASSCRED, so that the kernel stamps every message
// with its sender's pid and the master knows which child spoke, exactly as
// systemd does. It lives in the abstract namespace, so nothing is left on
// disk when the master is killed.
type notifyServer struct {
	conn *net.UnixConn
	addr string // the value of NOTIFY_SOCKET
}

func listenNotify() (*notifyServer, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	addr := fmt.Sprintf("@prefork/%d/%s", os.Getpid(), hex.EncodeToString(id[:]))
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: SO_PASSCRED: %w", errors.Join(err, serr))
	}
	return &notifyServer{conn: conn, addr: addr}, nil
}

// read returns the next datagram and the pid and uid of the process that
// sent it, as the kernel stamped them. A datagram without credentials
// (which SO_PASSCRED rules out) has pid 0 and uid -1.
func (s *notifyServer) read(buf, oob []byte) (pid, uid int, data []byte, err error) {
	n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return 0, -1, nil, err
	}
	pid, uid = sender(oob[:oobn])
	return pid, uid, buf[:n], nil
}

func sender(oob []byte) (pid, uid int) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, -1
	}
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			return int(cred.Pid), int(cred.Uid)
		}
	}
	return 0, -1
}

func (s *notifyServer) close() error { return s.conn.Close() }

// setReadDeadline bounds the next read.
func (s *notifyServer) setReadDeadline(t time.Time) error { return s.conn.SetReadDeadline(t) }
