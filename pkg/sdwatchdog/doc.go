// Package sdwatchdog reads the variables of the systemd watchdog protocol
// (sd_watchdog_enabled(3)): WATCHDOG_USEC, the watchdog timeout in
// microseconds, and WATCHDOG_PID, the process it is meant for. A process
// that has a watchdog sends WATCHDOG=1 to NOTIFY_SOCKET more often than
// the timeout, every half of it as systemd recommends, or is treated as
// hung.
//
// It is the one parser of these variables in prefork: the master reads
// its own watchdog from systemd (WatchdogSec=) with it, and a child, which
// the master gives WATCHDOG_USEC under --watchdog, reads its watchdog with
// it in pkg/child. It imports nothing but the standard library, so a
// child's binary pays nothing for it.
//
// The reading follows go-systemd's daemon.SdWatchdogEnabled, with three
// differences:
//
//   - variables meant for another process are not checked further: a
//     malformed WATCHDOG_USEC with WATCHDOG_PID naming another pid is no
//     watchdog, not an error, as with LISTEN_PID, so a pair leaked from an
//     ancestor is harmless;
//   - a timeout too large for a time.Duration is an error, where
//     SdWatchdogEnabled overflows;
//   - it leaves the environment alone; a caller that starts processes of
//     its own unsets the variables, or leaves them out of their
//     environment, so that those do not ping in its name.
//
// As there, an empty variable reads as unset.
package sdwatchdog
