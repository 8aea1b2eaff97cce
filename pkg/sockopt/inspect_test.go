package sockopt

import "testing"

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
