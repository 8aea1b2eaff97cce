package proctree

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    procStat
		wantErr bool
	}{
		{
			name: "python",
			in:   "1411 (python3) R 1409 1409 644 0 -1 4194304 1114 0 6 0 1 0 0 0 20 0 1 0 416310\n",
			want: procStat{pid: 1411, ppid: 1409, pgrp: 1409},
		},
		{
			name: "comm with spaces and parens",
			in:   "42 (a) b) (c d) S 7 42 42 0 -1\n",
			want: procStat{pid: 42, ppid: 7, pgrp: 42},
		},
		{
			name: "comm that looks like fields",
			in:   "5 () R 1 2 3) S 9 5 5\n",
			want: procStat{pid: 5, ppid: 9, pgrp: 5},
		},
		{name: "empty comm", in: "6 () S 1 6 6", want: procStat{pid: 6, ppid: 1, pgrp: 6}},
		{name: "kernel thread", in: "2 (kthreadd) S 0 0 0 0 -1", want: procStat{pid: 2}},
		{name: "empty", in: "", wantErr: true},
		{name: "no comm", in: "12 S 1 12 12", wantErr: true},
		{name: "short", in: "12 (x) S 1", wantErr: true},
		{name: "bad ppid", in: "12 (x) S one 12 12", wantErr: true},
		{name: "bad pid", in: "x (x) S 1 12 12", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseStat(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseSyscall(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    blockedCall
		wantIn  bool
		wantErr bool
	}{
		{
			name:   "accept4",
			in:     "288 0x3 0x7ffd4db161f0 0x7ffd4db161cc 0x80000 0x0 0x0 0x7ffd4db160f8 0x7f9750147f63\n",
			want:   blockedCall{nr: 288, args: [6]uint64{3, 0x7ffd4db161f0, 0x7ffd4db161cc, 0x80000, 0, 0}},
			wantIn: true,
		},
		{
			name:   "poll with a timeout of -1",
			in:     "7 0x7fca195142a0 0x1 0xffffffff 0x7fca195f68d0 0x0 0x0 0x7fff89489688 0x7fca196e4230\n",
			want:   blockedCall{nr: 7, args: [6]uint64{0x7fca195142a0, 1, 0xffffffff, 0x7fca195f68d0, 0, 0}},
			wantIn: true,
		},
		{
			name:   "read",
			in:     "0 0x5 0x301a36b0 0x2000 0x1000 0x0 0x0 0x7ffcac8a6958 0x7f1ba68312ad\n",
			want:   blockedCall{nr: 0, args: [6]uint64{5, 0x301a36b0, 0x2000, 0x1000, 0, 0}},
			wantIn: true,
		},
		{name: "running", in: "running\n"},
		{name: "not in a syscall", in: "-1 0x7ffd4db160f8 0x7f9750147f63\n"},
		{name: "empty", in: "", wantErr: true},
		{name: "short", in: "7 0x1 0x2", wantErr: true},
		{name: "bad number", in: "x 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8", wantErr: true},
		{name: "bad arg", in: "7 0x1 zz 0x3 0x4 0x5 0x6 0x7 0x8", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, in, err := parseSyscall([]byte(tt.in))
			if (err != nil) != tt.wantErr || in != tt.wantIn || got != tt.want {
				t.Fatalf("parseSyscall(%q) = %+v, %v, %v; want %+v, %v, error %v",
					tt.in, got, in, err, tt.want, tt.wantIn, tt.wantErr)
			}
		})
	}
}

func TestParseEpollLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		want   epollEntry
		wantOK bool
	}{
		{
			name:   "Linux 6.18",
			in:     "tfd:        3 events:       19 data:     7f1b00000003  pos:0 ino:134cd1a sdev:9",
			want:   epollEntry{tfd: 3, events: 0x19, ino: 0x134cd1a, sdev: 9, hasDev: true},
			wantOK: true,
		},
		{
			name:   "Go's netpoller, edge-triggered",
			in:     "tfd:       12 events: 80002005 data:   c000180000  pos:0 ino:5f5e100 sdev:8",
			want:   epollEntry{tfd: 12, events: 0x80002005, ino: 0x5f5e100, sdev: 8, hasDev: true},
			wantOK: true,
		},
		{
			name:   "before sdev was added",
			in:     "tfd:        5 events:       1d data:                0  pos:0 ino:61af",
			want:   epollEntry{tfd: 5, events: 0x1d, ino: 0x61af},
			wantOK: true,
		},
		{name: "header pos", in: "pos:\t0"},
		{name: "header ino", in: "ino:\t1038"},
		{name: "no inode", in: "tfd:        3 events:       19 data:     7f1b00000003  pos:0"},
		{name: "bad inode", in: "tfd: 3 events: 19 data: 0 pos:0 ino:xyz sdev:9"},
		{name: "bad events", in: "tfd: 3 events: 1ffffffff data: 0 pos:0 ino:1 sdev:9"},
		{
			name:   "unknown word",
			in:     "tfd: 3 events: 19 junk ino:1",
			want:   epollEntry{tfd: 3, events: 0x19, ino: 1},
			wantOK: true,
		},
		{name: "empty", in: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseEpollLine([]byte(tt.in))
			if ok != tt.wantOK || got != tt.want && tt.wantOK {
				t.Fatalf("parseEpollLine(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestKernelDev(t *testing.T) {
	t.Parallel()
	if got := kernelDev(0, 9); got != 9 {
		t.Errorf("kernelDev(0, 9) = %#x; want 0x9", got)
	}
	if got := kernelDev(259, 3); got != 259<<20|3 {
		t.Errorf("kernelDev(259, 3) = %#x; want %#x", got, 259<<20|3)
	}
}

func TestParseSocketLink(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		want   uint64
		wantOK bool
	}{
		{in: "socket:[20237594]", want: 20237594, wantOK: true},
		{in: "socket:[]"},
		{in: "socket:[12"},
		{in: "socket:[-1]"},
		{in: "anon_inode:[eventpoll]"},
		{in: "pipe:[123]"},
		{in: "/tmp/socket:[1]"},
	}
	for _, tt := range tests {
		got, ok := parseSocketLink([]byte(tt.in))
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseSocketLink(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestParsePids(t *testing.T) {
	t.Parallel()
	got, err := parsePids([]byte("12\n345\n"))
	if err != nil || len(got) != 2 || got[0] != 12 || got[1] != 345 {
		t.Fatalf("parsePids = %v, %v; want [12 345]", got, err)
	}
	if _, err := parsePids([]byte("12\nx\n")); err == nil {
		t.Fatal("parsePids(junk): want an error")
	}
}

func TestPollWatches(t *testing.T) {
	t.Parallel()
	pollfds := func(entries ...[2]int) []byte {
		var b []byte
		for _, e := range entries {
			b = binary.NativeEndian.AppendUint32(b, uint32(int32(e[0])))
			b = binary.NativeEndian.AppendUint16(b, uint16(e[1]))
			b = binary.NativeEndian.AppendUint16(b, 0)
		}
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want bool
	}{
		{name: "POLLIN", in: pollfds([2]int{4, pollIn}, [2]int{10, pollIn}), want: true},
		{name: "POLLRDNORM", in: pollfds([2]int{10, pollRdNorm}), want: true},
		{name: "POLLOUT only", in: pollfds([2]int{10, 0x4})},
		{name: "other fds", in: pollfds([2]int{4, pollIn}, [2]int{-1, pollIn})},
		{name: "partial entry", in: pollfds([2]int{10, pollIn})[:7]},
		{name: "empty"},
	}
	for _, tt := range tests {
		if got := pollWatches(tt.in, []int{10}); got != tt.want {
			t.Errorf("%s: pollWatches = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestFdSetWord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fd, offset int
		mask       uint64
	}{
		{fd: 0, offset: 0, mask: 1},
		{fd: 10, offset: 0, mask: 1 << 10},
		{fd: 63, offset: 0, mask: 1 << 63},
		{fd: 64, offset: 8, mask: 1},
		{fd: 1023, offset: 120, mask: 1 << 63},
	}
	for _, tt := range tests {
		offset, mask := fdSetWord(tt.fd)
		if offset != tt.offset || mask != tt.mask {
			t.Errorf("fdSetWord(%d) = %d, %#x; want %d, %#x", tt.fd, offset, mask, tt.offset, tt.mask)
		}
	}
}

func TestListenerAccepts(t *testing.T) {
	t.Parallel()
	l := func(addr string, v6only bool) Listener {
		return Listener{Addr: netip.MustParseAddrPort(addr), V6Only: v6only}
	}
	tests := []struct {
		name string
		l    Listener
		addr string
		want bool
	}{
		{name: "same", l: l("127.0.0.1:80", false), addr: "127.0.0.1:80", want: true},
		{name: "other port", l: l("127.0.0.1:80", false), addr: "127.0.0.1:81"},
		{name: "other address", l: l("127.0.0.1:80", false), addr: "127.0.0.2:80"},
		{name: "specific is no wildcard", l: l("127.0.0.1:80", false), addr: "0.0.0.0:80"},
		{name: "v4 wildcard", l: l("0.0.0.0:80", false), addr: "127.0.0.1:80", want: true},
		{name: "v4 wildcard, v6 addr", l: l("0.0.0.0:80", false), addr: "[::1]:80"},
		{name: "dual-stack wildcard, v4 addr", l: l("[::]:80", false), addr: "127.0.0.1:80", want: true},
		{name: "dual-stack wildcard, v4 wildcard", l: l("[::]:80", false), addr: "0.0.0.0:80", want: true},
		{name: "v6only wildcard, v4 addr", l: l("[::]:80", true), addr: "127.0.0.1:80"},
		{name: "v6only wildcard, v6 addr", l: l("[::]:80", true), addr: "[::1]:80", want: true},
		{name: "v4-mapped listener", l: l("[::ffff:127.0.0.1]:80", false), addr: "127.0.0.1:80", want: true},
		{name: "v4-mapped addr", l: l("127.0.0.1:80", false), addr: "[::ffff:127.0.0.1]:80", want: true},
		{name: "zone ignored", l: l("[fe80::1]:80", false), addr: "[fe80::1%eth0]:80", want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.l.Accepts(netip.MustParseAddrPort(tt.addr)); got != tt.want {
				t.Fatalf("%s.Accepts(%s) = %v; want %v", tt.l.Addr, tt.addr, got, tt.want)
			}
		})
	}
}

// The fuzz targets check that no input panics the parsers, whose input a
// process partly controls (its comm, its memory), and that what they
// accept is consistent.

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1411 (python3) R 1409 1409 644 0 -1 4194304\n"))
	f.Add([]byte("42 (a) b) (c d) S 7 42 42 0 -1\n"))
	f.Add([]byte("7 ( S 1 2 3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseStat(b)
		if err == nil && !bytes.Contains(b, []byte(")")) {
			t.Fatalf("parseStat(%q) = %+v without a comm", b, s)
		}
	})
}

func FuzzParseSyscall(f *testing.F) {
	f.Add([]byte("288 0x3 0x7ffd4db161f0 0x7ffd4db161cc 0x80000 0x0 0x0 0x7ffd4db160f8 0x7f9750147f63\n"))
	f.Add([]byte("running\n"))
	f.Add([]byte("-1 0x1 0x2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, in, err := parseSyscall(b)
		if (err != nil || !in) && c != (blockedCall{}) {
			t.Fatalf("parseSyscall(%q) = %+v, %v, %v: a result outside a call", b, c, in, err)
		}
		if in && c.nr < 0 {
			t.Fatalf("parseSyscall(%q) = %+v in a negative call", b, c)
		}
	})
}

func FuzzParseEpollLine(f *testing.F) {
	f.Add([]byte("tfd:        3 events:       19 data:     7f1b00000003  pos:0 ino:134cd1a sdev:9"))
	f.Add([]byte("tfd: 5 events: 1d data: 0 pos:0 ino:61af"))
	f.Add([]byte("ino:\t1038"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, ok := parseEpollLine(b)
		if ok && !bytes.HasPrefix(b, []byte("tfd:")) {
			t.Fatalf("parseEpollLine(%q) = %+v, an entry without tfd:", b, e)
		}
	})
}

func FuzzPollWatches(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if pollWatches(b, []int{10}) && len(b) < sizeofPollfd {
			t.Fatalf("pollWatches(%x) found a fd in a partial entry", b)
		}
	})
}
