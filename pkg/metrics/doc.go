// Package metrics turns a snapshot of a prefork master's state into
// Prometheus metrics at scrape time (Collector), and reads the socket state
// the snapshot does not hold (each slot's accept queue, ListenOverflows)
// from the kernel. The children's counter pages are package counters'.
package metrics
