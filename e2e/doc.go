// Package e2e tests the built binaries as an operator runs them: bin/master
// and real children on loopback ports, real signals, real requests. Load
// tests that need net.ipv4.tcp_migrate_req=1 run in a network namespace of
// their own, never touching the machine's.
package e2e
