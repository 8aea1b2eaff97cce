package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// parentPID returns the parent of pid, from /proc.
func parentPID(pid int) (int, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatPPID(data)
}

// parseStatPPID extracts the parent pid from the contents of
// /proc/PID/stat. The command name in parentheses may hold spaces and
// parentheses itself, so fields are counted from the last ')'.
func parseStatPPID(data []byte) (int, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc stat: no command name")
	}
	fields := bytes.Fields(data[i+1:])
	if len(fields) < 2 {
		return 0, fmt.Errorf("parse /proc stat: too few fields")
	}
	ppid, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return 0, fmt.Errorf("parse /proc stat: ppid: %w", err)
	}
	return ppid, nil
}

// residentBytes returns the resident memory of pid, from /proc/PID/statm.
func residentBytes(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, err
	}
	return parseStatmRSS(data, uint64(os.Getpagesize()))
}

// parseStatmRSS reads the resident set, the second field of
// /proc/PID/statm, which counts pages.
func parseStatmRSS(data []byte, pageSize uint64) (uint64, error) {
	fields := bytes.Fields(data)
	if len(fields) < 2 {
		return 0, fmt.Errorf("parse /proc statm: %d fields", len(fields))
	}
	pages, err := strconv.ParseUint(string(fields[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc statm: resident: %w", err)
	}
	return pages * pageSize, nil
}
