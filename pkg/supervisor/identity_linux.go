package supervisor

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// identity is who the children run as, when it is not the master.
type identity struct {
	name   string // user:group, for the log
	user   string // the user's name, "" when it has no entry
	home   string // the user's home directory, "" when it has no entry
	uid    uint32
	gid    uint32
	groups []uint32 // supplementary groups
	// bindCap raises CAP_NET_BIND_SERVICE as an ambient capability: an
	// unprivileged child binds a port below the unprivileged start itself
	// in child socket mode, with that one capability and no other.
	bindCap bool
}

// resolveIdentity looks up the user and group of cfg and checks that the
// master may switch to them. It returns nil when the children keep the
// master's identity.
func resolveIdentity(cfg Config) (*identity, error) {
	if cfg.User == "" && cfg.Group == "" {
		return nil, nil
	}
	id := &identity{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
	userName, groupName := strconv.Itoa(os.Geteuid()), strconv.Itoa(os.Getegid())
	if cfg.User != "" {
		u, err := lookupUser(cfg.User)
		if err != nil {
			return nil, fmt.Errorf("user: %w", err)
		}
		id.user, id.home = u.Username, u.HomeDir
		if id.user == "" {
			id.user = u.Uid
		}
		if u.Gid == "" {
			// A bare uid (a distroless image's, say): its group must be
			// given; the master's own (root's, often) is no default.
			if cfg.Group == "" {
				return nil, fmt.Errorf("user: uid %s has no entry in the user database; give --group too", u.Uid)
			}
			u.Gid = "0" // replaced by --group below
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		id.uid, id.gid, userName = uint32(uid), uint32(gid), u.Username
		if userName == "" {
			userName = u.Uid
		}
		groupName = u.Gid
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			groupName = g.Name
		}
		// The user's supplementary groups, as login and systemd's User=
		// give them (initgroups); a bare uid has none.
		var gids []string
		if u.Username != "" {
			if gids, err = u.GroupIds(); err != nil {
				return nil, fmt.Errorf("user: groups of %s: %w", u.Username, err)
			}
		}
		for _, s := range gids {
			if n, err := strconv.ParseUint(s, 10, 32); err == nil && uint32(n) != id.gid {
				id.groups = append(id.groups, uint32(n))
			}
		}
	}
	if cfg.Group != "" {
		g, err := lookupGroup(cfg.Group)
		if err != nil {
			return nil, fmt.Errorf("group: %w", err)
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		id.gid, groupName = uint32(gid), g.Name
	}
	id.name = userName + ":" + groupName
	if err := id.check(cfg); err != nil {
		return nil, err
	}
	return id, nil
}

// lookupUser finds a user by name, or by number when it is one.
func lookupUser(s string) (*user.User, error) {
	u, err := user.Lookup(s)
	if err == nil {
		return u, nil
	}
	var unknown user.UnknownUserError
	if n, nerr := strconv.ParseUint(s, 10, 32); nerr == nil {
		if n == 1<<32-1 {
			return nil, fmt.Errorf("uid %s means \"unchanged\" to the kernel", s)
		}
		u, err := user.LookupId(s)
		var unknownID user.UnknownUserIdError
		switch {
		case err == nil:
			return u, nil
		case errors.As(err, &unknownID):
			return &user.User{Uid: s, HomeDir: "/"}, nil // a uid needs no entry
		}
		return nil, err
	}
	if errors.As(err, &unknown) {
		return nil, fmt.Errorf("no user %q on this system", s)
	}
	return nil, err
}

// lookupGroup finds a group by name, or by number when it is one.
func lookupGroup(s string) (*user.Group, error) {
	g, err := user.LookupGroup(s)
	if err == nil {
		return g, nil
	}
	if n, nerr := strconv.ParseUint(s, 10, 32); nerr == nil {
		if n == 1<<32-1 {
			return nil, fmt.Errorf("gid %s means \"unchanged\" to the kernel", s)
		}
		g, err := user.LookupGroupId(s)
		var unknownID user.UnknownGroupIdError
		switch {
		case err == nil:
			return g, nil
		case errors.As(err, &unknownID):
			return &user.Group{Gid: s, Name: s}, nil // a gid needs no entry
		}
		return nil, err
	}
	var unknown user.UnknownGroupError
	if errors.As(err, &unknown) {
		return nil, fmt.Errorf("no group %q on this system", s)
	}
	return nil, err
}

// Capabilities the master needs to start and signal children of another
// identity.
const (
	capKill           = 5  // CAP_KILL
	capSetgid         = 6  // CAP_SETGID
	capSetuid         = 7  // CAP_SETUID
	capNetBindService = 10 // CAP_NET_BIND_SERVICE
)

// check refuses an identity the master cannot switch to, with the reason,
// and decides whether the children need CAP_NET_BIND_SERVICE.
func (id *identity) check(cfg Config) error {
	eff, prm, err := capabilities()
	if err != nil {
		return fmt.Errorf("user: read the master's capabilities: %w", err)
	}
	var missing []string
	if id.uid != uint32(os.Geteuid()) {
		if !eff.has(capSetuid) {
			missing = append(missing, "CAP_SETUID")
		}
		if !eff.has(capKill) {
			// Signals to a child of another user need it: drain, kill.
			missing = append(missing, "CAP_KILL")
		}
	}
	// The supplementary groups are always set, to drop the master's own.
	if !eff.has(capSetgid) {
		missing = append(missing, "CAP_SETGID")
	}
	if len(missing) > 0 {
		flag := "user"
		if cfg.User == "" {
			flag = "group"
		}
		return fmt.Errorf("%s: running the children as %s needs root or %s; the master runs as uid %d without them",
			flag, id.name, strings.Join(missing, ", "), os.Geteuid())
	}
	if cfg.Sockets != SocketsChild || id.uid == 0 {
		return nil // the master binds, or the child is root
	}
	port := 0
	for _, l := range cfg.Listen {
		_, portStr, err := net.SplitHostPort(l.Addr)
		if err != nil {
			continue // Validate reports it
		}
		if p, _ := strconv.Atoi(portStr); p < unprivilegedPortStart() {
			port = p
			break
		}
	}
	if port == 0 {
		return nil
	}
	if !prm.has(capNetBindService) {
		return fmt.Errorf("user: children running as %s cannot bind port %d in child socket mode: the master lacks CAP_NET_BIND_SERVICE to pass them; use --sockets master, where the master binds",
			id.name, port)
	}
	id.bindCap = true
	return nil
}

// capSet is a set of capabilities, bit n for capability n.
type capSet uint64

func (c capSet) has(n uint) bool { return c&(1<<n) != 0 }

// capabilities returns the master's effective and permitted sets.
func capabilities() (eff, prm capSet, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, 0, err
	}
	eff = capSet(data[0].Effective) | capSet(data[1].Effective)<<32
	prm = capSet(data[0].Permitted) | capSet(data[1].Permitted)<<32
	return eff, prm, nil
}

// unprivilegedPortStart is the first port anyone may bind, from the
// network namespace's sysctl (1024 where it cannot be read).
func unprivilegedPortStart() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 1024
	}
	return n
}

// credential is what ForkExec needs to start a child as id.
func (id *identity) credential() *syscall.Credential {
	return &syscall.Credential{Uid: id.uid, Gid: id.gid, Groups: id.groups}
}

// dropAmbient clears the calling thread's ambient capability set and
// returns what it held.
func dropAmbient() []uintptr {
	var held []uintptr
	for c := uintptr(0); c < 64; c++ {
		set, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, c, 0, 0)
		if err != nil {
			break // past the kernel's last capability
		}
		if set == 1 {
			held = append(held, c)
		}
	}
	if len(held) > 0 {
		unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	}
	return held
}

// raiseAmbient raises each of caps in the calling thread's ambient set
// again, as dropAmbient found them: before the master execs itself, so the
// new master starts with the capabilities the old one was given
// (systemd's AmbientCapabilities=).
func raiseAmbient(caps []uintptr) error {
	for _, c := range caps {
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c, 0, 0); err != nil {
			return fmt.Errorf("capability %d: %w", c, err)
		}
	}
	return nil
}
