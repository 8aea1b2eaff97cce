// Package deploy holds no code: its directories are the files an operator
// installs to run prefork in production, and its tests hold them to what
// the master really accepts and exports.
//
//   - systemd/: the unit (Type=notify, a checked and waiting ExecReload,
//     KillMode=mixed so the master alone gets SIGTERM and drains), an
//     example config and the tcp_migrate_req sysctl drop-in. Tested with
//     systemd-analyze verify, failing on any warning.
//   - kubernetes/: ConfigMap, Deployment (the master as PID 1, master
//     socket mode), Service, PodDisruptionBudget and PodMonitor. Tested by
//     strict decoding into the API types and the invariants between them
//     (grace period above preStop plus drain timeout, probes on the metrics
//     port, the config read by the master's own parser).
//   - prometheus/: a scrape config, alerting rules and their unit tests.
//     Tested with promtool check config, check rules and test rules.
//   - grafana/: a dashboard. Tested for unique panel ids and datasources.
//
// Every PromQL expression of the rules and the dashboard may use only the
// metrics of the README's "## Metrics" table and the standard up, go_* and
// process_* series, so a renamed metric fails here rather than in an
// operator's empty graph.
package deploy
