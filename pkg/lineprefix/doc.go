// Package lineprefix implements --child-output prefix: each line a child
// writes to its stdout or stderr is written by the master to its own, with a
// prefix naming the slot and pid:
//
//	[slot 2 pid 1234] GET / 200
//
// # Use
//
//	out := lineprefix.Shared(os.Stdout)           // once, for all children
//	c, w, err := lineprefix.New(out)               // per child and stream
//	cmd.Stdout = w                                 // an *os.File: passed as is
//	err = cmd.Start()
//	w.Close()                                      // the master's copy
//	c.Start(lineprefix.Prefix(slot, cmd.Process.Pid))
//	...
//	<-c.Done()                                     // every writer closed
//
// # Invariants
//
// Each Copier reads its pipe in a goroutine of its own, never in the
// master's event loop, and writes each prefixed line to dst in one Write
// call. Shared serializes those calls, so lines of several children never
// interleave within a line. Nothing is dropped: a dst that stalls (a
// terminal paused, a full journald) stalls the Copiers writing to it, then,
// once their pipes are full, the children writing to those pipes, exactly
// as if the children had inherited the master's stdout; it delays no other
// Copier with a dst of its own and no other part of the master. A child
// that floods holds Shared's lock for one line at a time, so the others
// still get their turns.
//
// A line is cut every MaxLine bytes, the later pieces marked with
// ContinuedSeparator after the prefix instead of Separator, so that a
// child writing without newlines, or binary data, costs a bounded amount
// of memory. Bytes are copied as they are, NUL and invalid UTF-8 included;
// only '\n' ends a line. An unterminated line is held until its newline or
// the end of the pipe, when it is written with a newline.
//
// The copy ends when every writer of the pipe has closed it: the child and
// whatever it forked that inherited the descriptor. A daemon that escaped
// the child (without a cgroup to kill it) may keep the pipe open for good;
// Close ends the copy regardless.
package lineprefix
