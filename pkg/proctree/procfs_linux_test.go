package proctree

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestScanLines(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 20<<10)
	tests := []struct {
		name  string
		in    string
		limit int
		want  []string
	}{
		{name: "lines", in: "a\nbb\n\nccc\n", limit: 1 << 20, want: []string{"a", "bb", "", "ccc"}},
		{name: "no final newline", in: "a\nbb", limit: 1 << 20, want: []string{"a", "bb"}},
		{name: "long line skipped", in: "a\n" + long + "\nb\n", limit: 1 << 20, want: []string{"a", "b"}},
		{name: "long last line skipped", in: "a\n" + long, limit: 1 << 20, want: []string{"a"}},
		{name: "limit cuts", in: "aaaa\nbbbb\ncccc\n", limit: 7, want: []string{"aaaa"}},
		{name: "many lines", in: strings.Repeat("0123456789\n", 5000), limit: 1 << 20, want: slices.Repeat([]string{"0123456789"}, 5000)},
		{name: "empty", in: "", limit: 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(path, []byte(tt.in), 0o644); err != nil {
				t.Fatal(err)
			}
			var got []string
			err := scanLines(path, tt.limit, func(line []byte) bool {
				got = append(got, string(line))
				return false
			})
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("scanLines = %d lines %.60q, %v; want %d lines %.60q", len(got), got, err, len(tt.want), tt.want)
			}
		})
	}
}

func TestReadBounded(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "f")
	data := strings.Repeat("1234567\n", 3000)
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 100, 4096, 10000, len(data), 1 << 20} {
		got, err := readBounded(path, limit)
		if err != nil || string(got) != data[:min(limit, len(data))] {
			t.Errorf("readBounded(%d) = %d bytes, %v; want %d", limit, len(got), err, min(limit, len(data)))
		}
	}
}

// TestBounded: an inspection that does not return is given up on, and
// its slot is freed once it does.
func TestBounded(t *testing.T) { // not parallel: it takes a slot of WaitsOn's
	release := make(chan struct{})
	_, err := bounded(10*time.Millisecond, func() (bool, error) {
		<-release
		return true, nil
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("bounded(stuck) = %v; want os.ErrDeadlineExceeded", err)
	}
	close(release)
	for i := 0; i < 2*maxInspections; i++ {
		ok, err := bounded(deadline, func() (bool, error) { return true, nil })
		if !ok || err != nil {
			t.Fatalf("bounded(quick) = %v, %v; want true, nil", ok, err)
		}
	}
}

// TestParseDiag feeds parseDiag datagrams laid out as Linux sends them.
func TestParseDiag(t *testing.T) {
	t.Parallel()
	const seq = 7
	v6 := diagMsg(t, unix.AF_INET6, netip.MustParseAddrPort("[::]:8080"), 1000, 4242, true)
	v4 := diagMsg(t, unix.AF_INET, netip.MustParseAddrPort("127.0.0.1:80"), 0, 17, false)
	done := nlMsg(unix.NLMSG_DONE, seq, make([]byte, 4))

	dgram := append(append(nlMsg(unix.SOCK_DIAG_BY_FAMILY, seq, v6), nlMsg(unix.SOCK_DIAG_BY_FAMILY, seq+1, v4)...), nlMsg(unix.SOCK_DIAG_BY_FAMILY, seq, v4)...)
	got, finished, err := parseDiag(dgram, seq, 1<<tcpListen, nil)
	want := []Listener{
		{Addr: netip.MustParseAddrPort("[::]:8080"), Inode: 4242, UID: 1000, V6Only: true},
		{Addr: netip.MustParseAddrPort("127.0.0.1:80"), Inode: 17},
	}
	if err != nil || finished || !slices.Equal(got, want) {
		t.Fatalf("parseDiag = %+v, %v, %v; want %+v, false, nil", got, finished, err, want)
	}
	if _, finished, err := parseDiag(done, seq, 1<<tcpListen, nil); !finished || err != nil {
		t.Fatalf("parseDiag(done) = %v, %v; want true, nil", finished, err)
	}

	einval := int32(unix.EINVAL)
	errno := binary.NativeEndian.AppendUint32(nil, uint32(-einval))
	if _, _, err := parseDiag(nlMsg(unix.NLMSG_ERROR, seq, errno), seq, 1<<tcpListen, nil); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("parseDiag(error) = %v; want EINVAL", err)
	}
	if _, _, err := parseDiag(nlMsg(unix.NLMSG_DONE, seq, errno), seq, 1<<tcpListen, nil); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("parseDiag(done with an error) = %v; want EINVAL", err)
	}
	if _, _, err := parseDiag(dgram[:len(dgram)-3], seq, 1<<tcpListen, nil); err == nil {
		t.Fatal("parseDiag(truncated): want an error")
	}
}

// TestParseDiagStates: only the states asked for are kept, as the kernel
// should have sent no other: for UDP, unconnected sockets (TCP_CLOSE)
// without connected ones (TCP_ESTABLISHED), or both.
func TestParseDiagStates(t *testing.T) {
	t.Parallel()
	const seq = 3
	unconnected := diagMsg(t, unix.AF_INET6, netip.MustParseAddrPort("[::]:53"), 0, 11, false)
	unconnected[1] = tcpClose
	connected := diagMsg(t, unix.AF_INET, netip.MustParseAddrPort("127.0.0.1:53"), 0, 12, false)
	connected[1] = tcpEstablished
	dgram := append(nlMsg(unix.SOCK_DIAG_BY_FAMILY, seq, unconnected), nlMsg(unix.SOCK_DIAG_BY_FAMILY, seq, connected)...)
	tests := []struct {
		name   string
		states uint32
		want   []uint64
	}{
		{name: "unconnected", states: 1 << tcpClose, want: []uint64{11}},
		{name: "all", states: 1<<tcpClose | 1<<tcpEstablished, want: []uint64{11, 12}},
		{name: "listeners", states: 1 << tcpListen, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := parseDiag(dgram, seq, tt.states, nil)
			if err != nil || !slices.Equal(inodesOf(got), tt.want) {
				t.Fatalf("parseDiag(states %#x) = %+v, %v; want inodes %v", tt.states, got, err, tt.want)
			}
		})
	}
	// A state beyond the mask's 32 bits is no state asked for.
	bad := slices.Clone(connected)
	bad[1] = 40
	if got, _, err := parseDiag(nlMsg(unix.SOCK_DIAG_BY_FAMILY, seq, bad), seq, ^uint32(0), nil); len(got) != 0 || err != nil {
		t.Fatalf("parseDiag(state 40) = %+v, %v; want nothing", got, err)
	}
}

// nlMsg lays out a netlink message: header and body.
func nlMsg(typ uint16, seq uint32, body []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body)+4)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint32(b[8:], seq)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// diagMsg lays out a struct inet_diag_msg for a listener, and for IPv6
// its INET_DIAG_SKV6ONLY attribute.
func diagMsg(t *testing.T, family uint8, addr netip.AddrPort, uid, inode uint32, v6only bool) []byte {
	t.Helper()
	b := make([]byte, sizeofInetDiagMsg)
	b[0], b[1] = family, tcpListen
	binary.BigEndian.PutUint16(b[4:], addr.Port())
	ip := addr.Addr().AsSlice()
	copy(b[8:], ip)
	binary.NativeEndian.PutUint32(b[64:], uid)
	binary.NativeEndian.PutUint32(b[68:], inode)
	if family == unix.AF_INET6 {
		attr := make([]byte, 8) // a u8 attribute: 5 bytes, padded to 8
		binary.NativeEndian.PutUint16(attr[0:], 5)
		binary.NativeEndian.PutUint16(attr[2:], inetDiagSKV6Only)
		if v6only {
			attr[4] = 1
		}
		b = append(b, attr...)
	}
	return b
}
