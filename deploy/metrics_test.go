package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeMetrics returns the metrics of the "## Metrics" table of the
// project's README, name -> type ("counter", "gauge (1)", "histogram"...).
// The README is the contract an operator reads, so the deploy files may use
// what it lists and nothing else.
func readmeMetrics(t *testing.T) map[string]string {
	t.Helper()
	metrics := parseMetricsTable(readFile(t, "../README.md"))
	// The table has eleven rows; far fewer means it was not found.
	if len(metrics) < 8 {
		t.Fatalf("README.md: found only %d rows of prefork metrics under \"## Metrics\"", len(metrics))
	}
	return metrics
}

var metricRow = regexp.MustCompile("^\\|\\s*`(prefork_[a-z0-9_]+)`\\s*\\|\\s*([^|]+?)\\s*\\|")

func parseMetricsTable(readme []byte) map[string]string {
	metrics := map[string]string{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(line) == "## Metrics"
			continue
		}
		if m := metricRow.FindStringSubmatch(line); in && m != nil {
			metrics[m[1]] = m[2]
		}
	}
	return metrics
}

var (
	promqlString   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlVariable = regexp.MustCompile(`\$\{?\w+\}?`)
	promqlMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promqlRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promqlLabels   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
		"group_left", "group_right", "inf", "nan", "Inf", "NaN"}
)

// metricNames returns the metric names a PromQL expression selects. It
// knows PromQL's shape well enough for that: once strings, label matchers,
// ranges and label lists are cut out, an identifier is a function or
// aggregation when "(" follows it, a keyword, or a metric name.
func metricNames(expr string) []string {
	expr = promqlString.ReplaceAllString(expr, `""`)
	expr = promqlVariable.ReplaceAllString(expr, "")
	expr = promqlMatchers.ReplaceAllString(expr, "")
	expr = promqlRange.ReplaceAllString(expr, "")
	expr = promqlLabels.ReplaceAllString(expr, "")
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(expr, -1) {
		name, before, after := expr[loc[0]:loc[1]], "", strings.TrimLeft(expr[loc[1]:], " \t\n")
		if loc[0] > 0 {
			before = expr[loc[0]-1 : loc[0]]
		}
		switch {
		case strings.ContainsAny(before, "0123456789."): // the exponent of 1e3, the unit of 5m
		case strings.HasPrefix(after, "("): // a function or an aggregation
		case slices.Contains(promqlKeywords, name):
		default:
			names = append(names, name)
		}
	}
	return names
}

// checkMetric says why a metric name in a deploy file is not one a
// prefork master exports.
func checkMetric(name string, readme map[string]string) error {
	if _, ok := readme[name]; ok {
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if ok && readme[base] == "histogram" {
			return nil
		}
	}
	// Prometheus's own series and the master's Go and process collectors.
	if name == "up" || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
		return nil
	}
	if strings.HasPrefix(name, "prefork_") {
		return fmt.Errorf("%s is not in the README's metrics table", name)
	}
	return fmt.Errorf("%s is neither a prefork metric nor up, go_* or process_*", name)
}

// checkExpr checks every metric of expr; an expression that selects none
// is an error too, since it would make every check here pass.
func checkExpr(expr string, readme map[string]string) []error {
	names := metricNames(expr)
	if len(names) == 0 {
		return []error{fmt.Errorf("no metric found in %q", expr)}
	}
	var errs []error
	for _, n := range names {
		if err := checkMetric(n, readme); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		expr string
		want []string
	}{
		{name: "plain", expr: `up`, want: []string{"up"}},
		{name: "matchers and range", expr: `rate(prefork_child_accepts_total{instance=~"$instance", slot!="a{b}"}[$__rate_interval])`,
			want: []string{"prefork_child_accepts_total"}},
		{name: "grouping labels are not metrics",
			expr: `sum by (job, instance) (x) - on (job, instance) group_left (slot) avg without (pid) (y)`,
			want: []string{"x", "y"}},
		{name: "keywords, numbers and durations",
			expr: `a > bool 1e3 and b offset 5m or c unless d > Inf`, want: []string{"a", "b", "c", "d"}},
		{name: "histogram", expr: `histogram_quantile(0.99, sum by (le) (rate(h_bucket[1h])))`, want: []string{"h_bucket"}},
		{name: "subquery", expr: `max_over_time(deriv(q[5m])[30m:1m])`, want: []string{"q"}},
		{name: "colons of recording rules", expr: `job:requests:rate5m * 2`, want: []string{"job:requests:rate5m"}},
		{name: "no metric", expr: `vector(1)`, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
				t.Errorf("metricNames(%q) = %q, want %q", tc.expr, got, tc.want)
			}
		})
	}
}

func TestCheckMetric(t *testing.T) {
	readme := map[string]string{
		"prefork_child_accepts_total":     "counter",
		"prefork_reload_duration_seconds": "histogram",
	}
	for _, tc := range []struct {
		name   string
		metric string
		ok     bool
	}{
		{name: "listed", metric: "prefork_child_accepts_total", ok: true},
		{name: "histogram bucket", metric: "prefork_reload_duration_seconds_bucket", ok: true},
		{name: "histogram count", metric: "prefork_reload_duration_seconds_count", ok: true},
		{name: "standard collector", metric: "process_resident_memory_bytes", ok: true},
		{name: "scrape health", metric: "up", ok: true},
		{name: "misspelt", metric: "prefork_child_accept_total"},
		{name: "bucket of a counter", metric: "prefork_child_accepts_total_bucket"},
		{name: "histogram without suffix", metric: "prefork_reload_duration"},
		{name: "another exporter's", metric: "node_cpu_seconds_total"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkMetric(tc.metric, readme); (err == nil) != tc.ok {
				t.Errorf("checkMetric(%s) = %v, want ok=%v", tc.metric, err, tc.ok)
			}
		})
	}
}

func TestParseMetricsTable(t *testing.T) {
	readme := []byte("## Metrics\n\n| metric | type |\n|---|---|\n" +
		"| `prefork_a_total` | counter | slot | x |\n| `prefork_h_seconds` | histogram | | y |\n\n" +
		"## Other\n\n| `prefork_elsewhere` | gauge | | z |\n")
	want := map[string]string{"prefork_a_total": "counter", "prefork_h_seconds": "histogram"}
	if got := parseMetricsTable(readme); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseMetricsTable = %v, want %v", got, want)
	}
}
