package metrics

import "github.com/prometheus/client_golang/prometheus"

// BuildInfo exports prefork_build_info, 1 with the running master's
// version and Go release as labels, in the style of Prometheus's own
// *_build_info: a dashboard joins on it, or counts the versions of a
// fleet. Apart from Collector because it needs no snapshot: it is there
// even while the event loop cannot answer.
type BuildInfo struct {
	desc               *prometheus.Desc
	version, goVersion string
}

// NewBuildInfo returns the collector of prefork_build_info for the given
// version and Go release (version.String and version.GoVersion).
func NewBuildInfo(version, goVersion string) *BuildInfo {
	return &BuildInfo{
		desc: prometheus.NewDesc("prefork_build_info",
			"1, labelled with the running master's version and the Go release it was built with.",
			[]string{"version", "goversion"}, nil),
		version:   version,
		goVersion: goVersion,
	}
}

// Describe implements prometheus.Collector.
func (b *BuildInfo) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

// Collect implements prometheus.Collector.
func (b *BuildInfo) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, 1, b.version, b.goVersion)
}
