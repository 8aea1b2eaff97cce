// Package execshim is the exec shim of master socket mode as a program of
// a few hundred bytes of machine code, not a Go binary: between the fork
// and the command, something must set LISTEN_PID to the child's own pid,
// which the master cannot know before the fork. The master's own binary
// can do it (supervisor.ExecShim), but starting it initialises the Go
// runtime and every package the master links, which costs several
// milliseconds per child; this shim costs one more exec.
//
// The protocol, the same as supervisor.ExecShim's:
//
//	SHIM __prefork_exec COMMAND [ARG...]
//
// with ParentEnv=<the master's pid> in the environment. The shim sets its
// parent-death signal to SIGTERM (again: an exec that gains privileges
// clears it), checks that its parent is still the master named by
// ParentEnv (the master may have died before the signal was set), and
// execs COMMAND with ARGs and the environment minus ParentEnv plus
// LISTEN_PID=<its own pid>, keeping its pid and descriptors. On any
// failure it writes one line to stderr and exits with status 127. With no
// argument at all it exits 0, which Open uses to check that it runs.
//
// The shim lives in a sealed memfd of the master (Open): nothing on disk,
// so it works in a minimal container and, like /proc/self/exe, keeps
// working when the master's file is replaced.
package execshim
