package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkSocketModes: what the master itself costs under load in each
// socket mode, side by side. Three masters of 2 workers run for the whole
// benchmark: --sockets child, --sockets master (steering as by default),
// and --sockets master --steer off. Each iteration (a round;
// `-benchtime 3x` for three) loads each of them for 5 s with one request
// per connection (`wrk -t2 -c64 -H 'Connection: close'`, or this
// package's own client when wrk is not installed), in slices of 1 s taken
// in turn, in rotating order, so that the drift of a shared machine hits
// all three alike; around each slice it reads the master's CPU time and
// context switches.
//
// In child mode the master never sees a connection. In master mode it
// holds the listeners the children accept on; held in Go's netpoller,
// they woke it at every connection. Steering adds its health check, every
// 25 ms whether there is load or not. Reported per setup, medians over
// the rounds: the master's CPU in ms per load (utime+stime of
// /proc/PID/stat, in 10 ms ticks, and the threads' schedstat run time),
// its voluntary context switches (all its threads), req/s, and the median
// of the rounds' own throughput ratios to child mode.
func BenchmarkSocketModes(b *testing.B) {
	const (
		workers = 2
		clients = 64
		window  = 5 * time.Second // per setup and round
		slices  = 5               // of window, per setup and round
	)
	wrk, _ := exec.LookPath("wrk")
	if wrk == "" {
		b.Log("wrk is not installed (Debian: apt-get install wrk): the load is this package's own Go client, whose CPU competes with the servers'")
	}
	modes := []*modeRun{
		{name: "child", args: []string{"--sockets", "child"}},
		{name: "master", args: []string{"--sockets", "master"}},
		{name: "master-nosteer", args: []string{"--sockets", "master", "--steer", "off"}},
	}
	for _, mr := range modes {
		mr.m = startMaster(b, workers, mr.args...)
	}
	for _, mr := range modes {
		mr.m.waitReady(time.Minute, workers)
		// Warm up: first requests fault in pages and grow stacks.
		if _, err := modeLoad(wrk, mr.m.addr, clients, 300*time.Millisecond); err != nil {
			b.Fatalf("%s: warm-up: %v", mr.name, err)
		}
	}
	rounds := 0
	for i := 0; b.Loop(); i++ {
		rps := make([]float64, len(modes))
		costs := make([]masterCost, len(modes))
		for t := range slices {
			for k := range modes {
				j := (i + t + k) % len(modes)
				mr := modes[j]
				pid := mr.m.cmd.Process.Pid
				before := readMasterCost(b, pid)
				r, err := modeLoad(wrk, mr.m.addr, clients, window/slices)
				if err != nil {
					b.Fatalf("%s: %v", mr.name, err)
				}
				costs[j] = costs[j].plus(readMasterCost(b, pid).minus(before))
				rps[j] += r / slices
			}
		}
		for j, mr := range modes {
			c := costs[j]
			mr.cpuMS = append(mr.cpuMS, float64(c.ticks)*1000/clockTicks)
			mr.schedMS = append(mr.schedMS, float64(c.schedNS)/1e6)
			mr.vol = append(mr.vol, float64(c.voluntary))
			mr.invol = append(mr.invol, float64(c.involuntary))
			mr.rps = append(mr.rps, rps[j])
			mr.ratio = append(mr.ratio, rps[j]/rps[0])
		}
		rounds++
	}
	for _, mr := range modes {
		mr.m.stop()
	}
	b.ReportMetric(0, "ns/op")
	for _, mr := range modes {
		b.ReportMetric(median(mr.cpuMS), "cpu-ms-"+mr.name)
		b.ReportMetric(median(mr.schedMS), "sched-ms-"+mr.name)
		b.ReportMetric(median(mr.vol), "vcsw-"+mr.name)
		b.ReportMetric(median(mr.rps), "req/s-"+mr.name)
		if mr != modes[0] {
			b.ReportMetric(median(mr.ratio), mr.name+"/child")
		}
	}
	client := "wrk -t2 -c64 -H 'Connection: close'"
	if wrk == "" {
		client = "Go client, 64 connections, one request each"
	}
	b.Logf("%s, %v per setup and round in %d slices, %d rounds, 2 workers; the master's cost per setup and round, medians:", client, window, slices, rounds)
	for _, mr := range modes {
		b.Logf("  %-14s CPU %4.0f ms (schedstat %6.1f ms), context switches %6.0f voluntary %5.0f involuntary, %6.0f req/s, %.3f of child mode (rounds: %s)",
			mr.name, median(mr.cpuMS), median(mr.schedMS), median(mr.vol), median(mr.invol), median(mr.rps), median(mr.ratio), fmtRatios(mr.ratio))
	}
}

// modeRun is one setup's master and what each round measured.
type modeRun struct {
	name                                   string
	args                                   []string
	m                                      *master
	cpuMS, schedMS, vol, invol, rps, ratio []float64
}

// modeLoad loads addr with one request per connection from clients
// connections for d, and returns the answered requests per second.
func modeLoad(wrk, addr string, clients int, d time.Duration) (float64, error) {
	if wrk == "" {
		r := newConnLoad(addr, clients, d, 5*time.Second, 50_000_000)
		if r.failures() != 0 || r.ok == 0 {
			return 0, fmt.Errorf("%d ok, %d failed %v (first: %v)", r.ok, int(r.failures()), r.errs, r.firstErr)
		}
		return r.rate(), nil
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, wrk, "-t2", "-c"+strconv.Itoa(clients), "-d"+strconv.Itoa(secs)+"s",
		"-H", "Connection: close", "http://"+addr+"/").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	return parseWrk(out)
}

// parseWrk reads the requests per second out of wrk's report, and fails
// on any error it counted.
func parseWrk(out []byte) (float64, error) {
	rps := -1.0
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return 0, fmt.Errorf("wrk: %q: %w", line, err)
			}
			rps = v
		case strings.HasPrefix(line, "Non-2xx"), strings.HasPrefix(line, "Socket errors"):
			return 0, fmt.Errorf("wrk counted errors: %q in:\n%s", line, out)
		}
	}
	if rps < 0 {
		return 0, fmt.Errorf("no Requests/sec in wrk's output:\n%s", out)
	}
	return rps, nil
}

// masterCost is the master's CPU time and context switches so far.
type masterCost struct {
	ticks                  int64 // utime+stime, in clock ticks
	schedNS                int64 // the live threads' run time
	voluntary, involuntary int64 // summed over the live threads
}

func readMasterCost(tb testing.TB, pid int) masterCost {
	tb.Helper()
	c := masterCost{ticks: cpuTicks(tb, pid), schedNS: schedNS(pid)}
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue // a thread that just ended
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch k {
			case "voluntary_ctxt_switches":
				c.voluntary += n
			case "nonvoluntary_ctxt_switches":
				c.involuntary += n
			}
		}
	}
	return c
}

func (c masterCost) plus(o masterCost) masterCost {
	return masterCost{ticks: c.ticks + o.ticks, schedNS: c.schedNS + o.schedNS,
		voluntary: c.voluntary + o.voluntary, involuntary: c.involuntary + o.involuntary}
}

func (c masterCost) minus(o masterCost) masterCost {
	return masterCost{ticks: c.ticks - o.ticks, schedNS: c.schedNS - o.schedNS,
		voluntary: c.voluntary - o.voluntary, involuntary: c.involuntary - o.involuntary}
}
