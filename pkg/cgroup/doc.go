// Package cgroup gives each child of the master a cgroup v2 of its own, so
// that nothing a child started outlives it: a foreign server (nginx,
// gunicorn) forks workers, and a careless one double-forks daemons that
// leave its process group and session and are reparented to init, out of
// reach of a process-group kill. A cgroup holds them all, and one write to
// its cgroup.kill (Linux 5.14) sends SIGKILL to every process in it,
// atomically with respect to forks in flight.
//
// # Use
//
//	parent, err := cgroup.Own()   // once; on error, log it and fall back
//	g, err := parent.New("prefork-<masterpid>-<n>")
//	fd, err := g.Open()
//	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
//	err = cmd.Start()             // then close fd
//	...
//	err = g.Remove(ctx)           // after the child exited, or to end it
//
// The child is forked straight into its group (clone3 with
// CLONE_INTO_CGROUP, Linux 5.7, which Go uses when UseCgroupFD is set), so
// there is no moment in which it runs, or forks, outside it. Go does not fall
// back to clone(2) when clone3 fails: under a seccomp profile that denies
// clone3 (some older container runtimes answer ENOSYS), the spawn itself
// fails, and the caller should then spawn without the group.
//
// # Where the groups are made
//
// The groups are made under the master's own cgroup: the "0::/path" line of
// /proc/self/cgroup joined to the cgroup2 mount point found in
// /proc/self/mountinfo. The mount is searched, not assumed: pure v2 hosts
// mount it at /sys/fs/cgroup, hybrid ones at /sys/fs/cgroup/unified, and a
// container may bind-mount a subtree (the mount's root field says which).
//
// The "no internal processes" rule of cgroup v2 forbids a non-root cgroup
// to hold processes while it enables controllers for its children in
// cgroup.subtree_control. It does not forbid child cgroups as such: this
// package never writes cgroup.subtree_control, so the master may stay in
// its cgroup while its children's groups are leaves below it. The kernel
// enforces the rule both ways, so the master's cgroup, holding the master,
// cannot have controllers enabled below it either: the child groups get no
// cpu or memory controller, only the core files (cgroup.procs,
// cgroup.events, cgroup.kill, cgroup.freeze), which is all this package
// needs. A master that wants resource limits per child must first move
// itself into a leaf of its own ("supervisor"), as systemd's delegation
// documentation advises; this package does not do that.
//
// The root cgroup is exempt from the rule, and a master in it ("0::/", as
// outside systemd or as PID 1 of a container with its own cgroup
// namespace) makes its groups at the top of the hierarchy, beside
// system.slice and user.slice on a systemd host; systemd leaves such
// foreign groups alone. The root itself has no cgroup.kill or
// cgroup.events, which this package never uses on the parent. Inside a
// cgroup namespace, "/" is the namespace's root, an ordinary cgroup on the
// host, and the same rules as for any parent apply; a cgroup2 mounted
// read-only there (the container runtimes' default when unprivileged) makes
// Own fail with "read-only".
//
// Under systemd, the service's cgroup (/system.slice/NAME.service) belongs
// to systemd unless the unit says Delegate=yes. Delegated, it is the
// service's to subdivide; a service running as another user gets its
// cgroup directory and cgroup.procs chowned to it, which is what mkdir and
// CLONE_INTO_CGROUP need. Not delegated, root may still make the groups,
// and Own succeeds, but systemd does not expect them; it still kills every
// process of the whole subtree when the service stops (KillMode=
// control-group) and removes the subtree. Run the master with Delegate=yes.
//
// # Limits
//
// New cleans up a stale group only of the same name; groups of an earlier
// master with another pid are left where they are. A process in
// uninterruptible sleep (state D) dies only when its I/O ends, and Remove
// then reports it when ctx ends.
package cgroup
