package proctree

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	// maxCgroupProcs bounds the read of cgroup.procs: 1 MiB holds over
	// 100,000 pids.
	maxCgroupProcs = 1 << 20
	// maxChildren bounds the read of one thread's children file.
	maxChildren = 1 << 20
)

// Members returns root and every process descended from it, plus every
// process whose process group is root and its descendants: the workers of
// a forking server keep the group of their master when they are
// re-parented (to init or a subreaper) after a middle process exits. If
// cgroupDir is not empty, it names a cgroup v2 directory whose processes
// (cgroup.procs) and their descendants are members too. The pids come
// sorted; root is among them only while it exists (a zombie still does).
// A process that starts or exits during the call may or may not be
// listed.
//
// Cost: with a cgroup, its cgroup.procs and the /proc/PID/task/TID/children
// files of the members' threads; without one, also a listing of /proc and
// a getpgid(2) per process for the group; without the children files (a kernel built without
// CONFIG_PROC_CHILDREN), every /proc/PID/stat.
func Members(root int, cgroupDir string) ([]int, error) {
	var seeds []int
	if cgroupDir != "" {
		pids, err := readCgroupProcs(cgroupDir)
		if err != nil {
			return nil, fmt.Errorf("members of %d: %w", root, err)
		}
		seeds = pids
	}
	find := membersByChildren
	if !childrenFiles() {
		find = membersByStat
	}
	members, err := find(root, seeds)
	if err != nil {
		return nil, fmt.Errorf("members of %d: %w", root, err)
	}
	return members, nil
}

// membersByChildren is Members, given the cgroup's pids (extra), by the
// children files.
func membersByChildren(root int, extra []int) ([]int, error) {
	if len(extra) > 0 {
		// A cgroup holds the whole tree, re-parented workers and
		// daemons that left the group included: no scan of every
		// process for the group is needed.
		return walkChildren(append(extra, root)), nil
	}
	group, err := groupOf(root)
	if err != nil {
		return nil, err
	}
	return walkChildren(append(extra, group...)), nil
}

// membersByStat is Members, given the cgroup's pids (extra), by every
// /proc/PID/stat.
func membersByStat(root int, extra []int) ([]int, error) {
	procs, err := readProcs()
	if err != nil {
		return nil, err
	}
	return descendants(procs, root, extra), nil
}

// groupOf returns the processes whose process group is root, and root if
// it exists (as a zombie too, which still has a group).
func groupOf(root int) ([]int, error) {
	var group []int
	if _, err := unix.Getpgid(root); err == nil {
		group = append(group, root)
	}
	err := scanPids(func(pid int) bool {
		if pgrp, err := unix.Getpgid(pid); err == nil && pgrp == root && pid != root {
			group = append(group, pid)
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("scan /proc: %w", err)
	}
	return group, nil
}

// walkChildren returns, sorted, seeds and their descendants, following
// the children files of each one's threads (a child belongs to the thread
// that forked it).
func walkChildren(seeds []int) []int {
	return walk(seeds, childrenOf)
}

// walk returns, sorted, seeds and every process below them, children
// naming the children of each.
func walk(seeds []int, children func(pid int) []int) []int {
	in := make(map[int]bool, len(seeds))
	var out []int
	for len(seeds) > 0 {
		pid := seeds[len(seeds)-1]
		seeds = seeds[:len(seeds)-1]
		if pid <= 0 || in[pid] {
			continue
		}
		in[pid] = true
		out = append(out, pid)
		seeds = append(seeds, children(pid)...)
	}
	slices.Sort(out)
	return out
}

// childrenOf returns the children of pid; none if it is gone.
func childrenOf(pid int) []int {
	var children []int
	tasks := procPath(pid, "/task/")
	scanDir(tasks, func(_ int, tid string) bool {
		b, err := readBounded(tasks+tid+"/children", maxChildren)
		if err != nil {
			return false // the thread ended
		}
		if len(b) == maxChildren {
			b = b[:bytes.LastIndexByte(b, ' ')+1] // drop a pid cut in two
		}
		pids, _ := parsePids(b)
		children = append(children, pids...)
		return false
	})
	return children
}

// childrenFiles reports whether the kernel has /proc/PID/task/TID/children
// (CONFIG_PROC_CHILDREN, which CRIU needs and most distributions enable).
var childrenFiles = sync.OnceValue(func() bool {
	return unix.Access("/proc/thread-self/children", unix.R_OK) == nil
})

// descendants returns, sorted, the processes of procs that descend from
// root, from a process in root's process group, or from one of extra,
// these included; root counts only if it is in procs.
func descendants(procs []procStat, root int, extra []int) []int {
	children := make(map[int][]int, len(procs))
	seeds := append([]int(nil), extra...)
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
		if p.pid == root || p.pgrp == root {
			seeds = append(seeds, p.pid)
		}
	}
	return walk(seeds, func(pid int) []int { return children[pid] })
}

// readProcs reads /proc/PID/stat of every process. A process that exits
// during the scan is left out.
func readProcs() ([]procStat, error) {
	var procs []procStat
	var firstErr error
	buf := make([]byte, 2<<10) // the longest stat line is about 1,300 bytes
	err := scanPids(func(pid int) bool {
		n, err := readFile(procPath(pid, "/stat"), buf)
		if err == nil {
			var p procStat
			if p, err = parseStat(buf[:n]); err == nil {
				procs = append(procs, p)
			}
		}
		if err != nil && !gone(err) && firstErr == nil {
			firstErr = err
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("scan /proc: %w", err)
	}
	if len(procs) == 0 && firstErr != nil {
		return nil, fmt.Errorf("scan /proc: %w", firstErr)
	}
	return procs, nil
}

// readCgroupProcs reads the pids of the cgroup v2 directory dir.
func readCgroupProcs(dir string) ([]int, error) {
	path := filepath.Join(dir, "cgroup.procs")
	b, err := readBounded(path, maxCgroupProcs)
	if err != nil {
		return nil, fmt.Errorf("read cgroup: %w", err)
	}
	if len(b) == maxCgroupProcs {
		b = b[:bytes.LastIndexByte(b, '\n')+1] // drop a pid cut in two
	}
	pids, err := parsePids(b)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return pids, nil
}
