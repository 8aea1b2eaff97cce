package sockopt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
)

// MigrateReqPath is where Linux exposes net.ipv4.tcp_migrate_req for the
// calling process's network namespace.
const MigrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// ErrUnsupported is returned on systems without SO_REUSEPORT semantics that
// prefork relies on.
var ErrUnsupported = errors.New("sockopt: unsupported on this operating system")

// ListenConfig returns a net.ListenConfig whose sockets get SO_REUSEADDR and
// SO_REUSEPORT before bind, so that every process of one group (same user)
// can bind the same address and the kernel spreads connections over them.
// The sockets are plain TCP: Go listens with MPTCP by default where the
// kernel enables it, and the kernel refuses an MPTCP listener both an
// SK_REUSEPORT program and a place in a REUSEPORT_SOCKARRAY (steering).
func ListenConfig() net.ListenConfig {
	lc := net.ListenConfig{Control: Control}
	lc.SetMultipathTCP(false)
	return lc
}

// Listen binds a TCP listener on address with SO_REUSEPORT set before bind.
func Listen(ctx context.Context, address string) (net.Listener, error) {
	lc := ListenConfig()
	return lc.Listen(ctx, "tcp", address)
}

// ListenPacket binds a UDP socket on address with PacketControl: with
// SO_REUSEPORT, so that every process of one group (same user) can bind
// the address and the kernel spreads datagrams over them by their source
// address and port, and without SO_REUSEADDR (see PacketControl).
func ListenPacket(ctx context.Context, address string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: PacketControl}
	return lc.ListenPacket(ctx, "udp", address)
}

// MigrateReq reports whether net.ipv4.tcp_migrate_req is enabled in the
// caller's network namespace. A kernel without the setting (older than
// 5.14, or not Linux) reads as disabled.
func MigrateReq() (bool, error) {
	data, err := readMigrateReq(MigrateReqPath)
	if err != nil {
		return false, err
	}
	return ParseMigrateReq(data)
}

// readMigrateReq reads the sysctl file; a missing file reads as "0".
func readMigrateReq(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []byte("0\n"), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tcp_migrate_req: %w", err)
	}
	return data, nil
}

// ParseMigrateReq parses the contents of the tcp_migrate_req sysctl file:
// a decimal integer, where any non-zero value means enabled.
func ParseMigrateReq(data []byte) (bool, error) {
	s := strings.TrimSpace(string(data))
	n, err := strconv.Atoi(s)
	if err != nil {
		return false, fmt.Errorf("parse tcp_migrate_req %q: %w", s, err)
	}
	return n != 0, nil
}
