package supervisor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The names of master socket mode's listeners in systemd's file
// descriptor store (fdstore_linux.go), and the parse of the LISTEN_*
// variables that hand them back. Pure: no descriptor is touched here.

// fdNamePrefix starts the name of every listener the master stores.
const fdNamePrefix = "prefork."

// fdNameMax is the longest name systemd accepts (FDNAME_MAX).
const fdNameMax = 255

// errFDName is wrapped by every error of parseFDName.
var errFDName = errors.New("not a prefork listener's name")

// fdName returns the name under which the listener of slot on addr is
// stored: "prefork.<slot>.<address>", the address with '%', ':', space
// and every byte outside printable ASCII written %XX (systemd's names may
// not hold ':', the separator of LISTEN_FDNAMES). For example
// prefork.0.127.0.0.1%3A8080 and prefork.3.[%3A%3A1]%3A80. The address is
// the configured one, as written: the set is keyed by it. It fails for a
// negative slot, an empty address, and a name longer than 255 bytes.
func fdName(addr string, slot int) (string, error) {
	if slot < 0 || addr == "" {
		return "", fmt.Errorf("fd name of slot %d on %q: no such listener", slot, addr)
	}
	var b strings.Builder
	b.WriteString(fdNamePrefix)
	b.WriteString(strconv.Itoa(slot))
	b.WriteByte('.')
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if fdNameEscapes(c) {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	if b.Len() > fdNameMax {
		return "", fmt.Errorf("fd name of slot %d on %q: longer than %d bytes", slot, addr, fdNameMax)
	}
	return b.String(), nil
}

// fdNameEscapes reports whether fdName writes c as %XX.
func fdNameEscapes(c byte) bool { return c == '%' || c == ':' || c <= ' ' || c >= 0x7f }

// parseFDName is the inverse of fdName: it returns the address and the
// slot. It accepts only the names fdName makes (no leading zero in the
// slot, %XX in upper case and only where fdName puts it), so that names
// and listeners map one to one.
func parseFDName(name string) (addr string, slot int, err error) {
	rest, ok := strings.CutPrefix(name, fdNamePrefix)
	if !ok || len(name) > fdNameMax {
		return "", 0, fmt.Errorf("%q: %w", name, errFDName)
	}
	digits, escaped, ok := strings.Cut(rest, ".")
	slot, err = strconv.Atoi(digits)
	if !ok || err != nil || slot < 0 || strconv.Itoa(slot) != digits {
		return "", 0, fmt.Errorf("%q: no slot number: %w", name, errFDName)
	}
	var b strings.Builder
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		if c != '%' {
			if fdNameEscapes(c) {
				return "", 0, fmt.Errorf("%q: byte %#x not escaped: %w", name, c, errFDName)
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(escaped) {
			return "", 0, fmt.Errorf("%q: %% at the end: %w", name, errFDName)
		}
		hex := escaped[i+1 : i+3]
		v, err := strconv.ParseUint(hex, 16, 8)
		if err != nil || fmt.Sprintf("%02X", v) != hex || !fdNameEscapes(byte(v)) {
			return "", 0, fmt.Errorf("%q: bad escape %%%s: %w", name, hex, errFDName)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	if b.Len() == 0 {
		return "", 0, fmt.Errorf("%q: no address: %w", name, errFDName)
	}
	return b.String(), slot, nil
}

// listenFD is one descriptor that the service manager passed at start.
type listenFD struct {
	fd   int
	name string
}

// maxListenFDs bounds LISTEN_FDS: far above any store a unit would
// configure, it keeps a corrupt value from making the master walk
// millions of descriptors.
const maxListenFDs = 1 << 16

// listenFDsStart is the first descriptor of LISTEN_FDS (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// parseListenEnv reads the socket activation variables as sd_listen_fds
// does: the descriptors 3..3+LISTEN_FDS-1 are the process's when
// LISTEN_PID is its pid, named by LISTEN_FDNAMES (':'-separated). None
// when LISTEN_PID or LISTEN_FDS is empty or LISTEN_PID is another pid.
// Names missing, or not one per descriptor, are "unknown", as systemd
// names an unnamed one; the second result then says why.
func parseListenEnv(pid int, listenPID, listenFDs, names string) ([]listenFD, string, error) {
	if listenPID == "" || listenFDs == "" {
		return nil, "", nil
	}
	p, err := strconv.Atoi(listenPID)
	if err != nil || p <= 0 {
		return nil, "", fmt.Errorf("LISTEN_PID=%q: not a pid", listenPID)
	}
	if p != pid {
		return nil, "", nil
	}
	n, err := strconv.Atoi(listenFDs)
	if err != nil || n < 0 || n > maxListenFDs {
		return nil, "", fmt.Errorf("LISTEN_FDS=%q: not a count of descriptors", listenFDs)
	}
	if n == 0 {
		return nil, "", nil
	}
	split := strings.Split(names, ":")
	why := ""
	if len(split) != n {
		why = fmt.Sprintf("LISTEN_FDNAMES has %d names for %d descriptors", len(split), n)
		if names == "" {
			why = "LISTEN_FDNAMES is empty"
		}
		split = nil
	}
	fds := make([]listenFD, n)
	for i := range fds {
		fds[i] = listenFD{fd: listenFDsStart + i, name: "unknown"}
		if split != nil {
			fds[i].name = split[i]
		}
	}
	return fds, why, nil
}
