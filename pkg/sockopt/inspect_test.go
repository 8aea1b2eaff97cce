package sockopt

import (
	"bytes"
	"fmt"
	"maps"
	"testing"
)

const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 4711 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4712 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F91 00000000:0000 0A 00000000:00000007 00:00000000 00000000     0        0 4713 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000020 00:00000000 00000000     0        0 4714 1 0000000000000000 20 4 30 10 -1
`

func TestParseListenQueues(t *testing.T) {
	queues := map[uint64]uint64{}
	if err := parseListenQueues([]byte(procNetTCP), 8080, queues); err != nil {
		t.Fatal(err)
	}
	// Port 8080 is 1F90: two listeners; 8081's and the established
	// connection's lines are not listeners of 8080.
	if len(queues) != 2 || queues[4711] != 3 || queues[4712] != 0 {
		t.Errorf("queues = %v, want {4711:3 4712:0}", queues)
	}
	if err := parseListenQueues([]byte("header\n 0: short\n"), 8080, queues); err == nil {
		t.Error("a short line parsed")
	}
}

func TestParseListenOverflows(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{name: "found", in: "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 42 43\nIpExt: InNoRoutes\nIpExt: 0\n", want: 42},
		{name: "missing", in: "IpExt: InNoRoutes\nIpExt: 0\n", wantErr: true},
		{name: "bad value", in: "TcpExt: ListenOverflows\nTcpExt: x\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseListenOverflows([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseListenOverflows = %d, %v; want %d, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSocketInode(t *testing.T) {
	if n, ok := SocketInode("socket:[12345]"); !ok || n != 12345 {
		t.Errorf("SocketInode = %d, %v", n, ok)
	}
	if _, ok := SocketInode("/dev/null"); ok {
		t.Error("/dev/null named a socket")
	}
}

const procNetUDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:14E9 00000000:0000 07 00000000:00000900 00:00000000 00000000     0        0 5001 2 0000000000000000 0
  102: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 5002 2 0000000000000000 0
  103: 0100007F:14EA 00000000:0000 07 00000000:00000300 00:00000000 00000000     0        0 5003 2 0000000000000000 0
  104: 0100007F:14E9 0100007F:0035 01 00000000:00000A00 00:00000000 00000000     0        0 5004 2 0000000000000000 3
`

const procNetUDP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  201: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 07 00000000:0000FFFF 00:00000000 00000000     0        0 6001 2 0000000000000000 0
`

func TestParseReceiveQueues(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		port    int
		want    map[uint64]uint64
		wantErr bool
	}{
		// 5353 is 14E9: two unconnected sockets and a connected one,
		// left out; 5354's socket is not on 5353.
		{name: "udp", in: procNetUDP, port: 5353, want: map[uint64]uint64{5001: 0x900, 5002: 0}},
		{name: "udp6", in: procNetUDP6, port: 5353, want: map[uint64]uint64{6001: 0xFFFF}},
		{name: "other port", in: procNetUDP, port: 5354, want: map[uint64]uint64{5003: 0x300}},
		{name: "none", in: procNetUDP, port: 53, want: map[uint64]uint64{}},
		{name: "header only", in: "  sl  local_address\n", port: 53, want: map[uint64]uint64{}},
		{name: "empty", in: "", port: 53, want: map[uint64]uint64{}},
		{name: "short line", in: "header\n 0: short\n", port: 53, wantErr: true},
		{name: "no colon in queues", in: "h\n 1: 0100007F:0035 00000000:0000 07 00000000 00:00000000 00000000 0 0 7 2 0 0\n", port: 53, wantErr: true},
		{name: "bad rx_queue", in: "h\n 1: 0100007F:0035 00000000:0000 07 0:zz 00:00000000 00000000 0 0 7 2 0 0\n", port: 53, wantErr: true},
		{name: "bad inode", in: "h\n 1: 0100007F:0035 00000000:0000 07 0:1 00:00000000 00000000 0 0 x 2 0 0\n", port: 53, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[uint64]uint64{}
			err := parseReceiveQueues([]byte(tt.in), tt.port, got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseReceiveQueues error = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !maps.Equal(got, tt.want) {
				t.Errorf("parseReceiveQueues = %v, want %v", got, tt.want)
			}
		})
	}
}

// The fuzz targets check that no contents of /proc/net/{tcp,udp}{,6}
// panic the parsers, and that what they find comes from a line about the
// port.
func FuzzParseReceiveQueues(f *testing.F) {
	f.Add([]byte(procNetUDP), 5353)
	f.Add([]byte(procNetUDP6), 5353)
	f.Add([]byte("h\n 1: 0100007F:0035 0:0 07 0:1 0:0 0 0 0 7\n"), 53)
	f.Fuzz(func(t *testing.T, b []byte, port int) {
		fuzzQueues(t, b, port, parseReceiveQueues)
	})
}

func FuzzParseListenQueues(f *testing.F) {
	f.Add([]byte(procNetTCP), 8080)
	f.Fuzz(func(t *testing.T, b []byte, port int) {
		fuzzQueues(t, b, port, parseListenQueues)
	})
}

func fuzzQueues(t *testing.T, b []byte, port int, parse func([]byte, int, map[uint64]uint64) error) {
	queues := map[uint64]uint64{}
	if err := parse(b, port, queues); err != nil {
		return
	}
	if len(queues) > 0 && !bytes.Contains(b, fmt.Appendf(nil, ":%04X", port)) {
		t.Fatalf("found %v on port %d in %q, which names no such port", queues, port, b)
	}
}
