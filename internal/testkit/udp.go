package testkit

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FreeUDPAddr returns a loopback UDP address that was free a moment ago.
func FreeUDPAddr(tb testing.TB) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

// UDPDrops is the sum of the drops column of /proc/net/udp over the
// sockets bound on ports: datagrams the kernel dropped on them (a full
// receive buffer, most often). A socket closed since is not seen.
func UDPDrops(tb testing.TB, ports ...int) int64 {
	tb.Helper()
	data, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		tb.Fatal(err)
	}
	var drops int64
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 13 || !slices.ContainsFunc(ports, func(p int) bool { return strings.HasSuffix(f[1], fmt.Sprintf(":%04X", p)) }) {
			continue
		}
		n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
		if err != nil {
			tb.Fatalf("/proc/net/udp: drops %q: %v", f[len(f)-1], err)
		}
		drops += n
	}
	return drops
}

// UDPCounters returns the host's UDP counters of /proc/net/snmp by name
// (InErrors, RcvbufErrors, NoPorts, ...): every process's, so only a hint.
func UDPCounters(tb testing.TB) map[string]int64 {
	tb.Helper()
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		tb.Fatal(err)
	}
	var rows [][]string
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "Udp: "); ok {
			rows = append(rows, strings.Fields(rest))
		}
	}
	if len(rows) != 2 || len(rows[0]) != len(rows[1]) {
		tb.Fatalf("/proc/net/snmp: %d Udp rows", len(rows))
	}
	counters := map[string]int64{}
	for i, name := range rows[0] {
		counters[name], _ = strconv.ParseInt(rows[1][i], 10, 64)
	}
	return counters
}
