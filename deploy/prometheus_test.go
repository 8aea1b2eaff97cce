package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const howToGetPromtool = "Debian package prometheus; .ci/run installs only its promtool"

// TestPromtool runs Prometheus's own checks: the config (which loads the
// rules too), the rules, and their unit tests in rules_test.yml.
func TestPromtool(t *testing.T) {
	promtool := lookTool(t, "promtool", howToGetPromtool)
	for _, args := range [][]string{
		{"check", "config", "scrape.yml"},
		{"check", "rules", "rules.yml"},
		{"test", "rules", "rules_test.yml"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if out, err := run(t, "prometheus", promtool, args...); err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	var rf ruleFile
	if err := yaml.Unmarshal(readFile(t, "prometheus/rules.yml"), &rf); err != nil {
		t.Fatal(err)
	}
	return rf
}

// The rules select only what a master exports, and every alert tells the
// operator what happened and where its runbook is.
func TestAlertRules(t *testing.T) {
	readme := readmeMetrics(t)
	anchors := markdownAnchors(string(readFile(t, "README.md")))
	alerts := 0
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a recording rule (%s) would export a name the README does not list", g.Name, r.Record)
				continue
			}
			alerts++
			for _, err := range checkExpr(r.Expr, readme) {
				t.Errorf("%s: %v", r.Alert, err)
			}
			for _, key := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[key]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, key)
				}
			}
			if _, anchor, _ := strings.Cut(r.Annotations["runbook_url"], "deploy/README.md#"); !anchors[anchor] {
				t.Errorf("%s: runbook_url %q: no such heading in deploy/README.md", r.Alert, r.Annotations["runbook_url"])
			}
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", r.Alert)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alert in rules.yml")
	}
}

var markdownHeading = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)

// markdownAnchors returns the anchors GitHub gives the headings of doc:
// lower case, punctuation dropped, spaces turned into hyphens.
func markdownAnchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	for _, m := range markdownHeading.FindAllStringSubmatch(doc, -1) {
		a := strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				return r
			case r >= 'A' && r <= 'Z':
				return r - 'A' + 'a'
			case r == ' ':
				return '-'
			}
			return -1
		}, m[1])
		anchors[a] = true
	}
	return anchors
}

// Every alert has a unit test that fires it and one where it stays quiet;
// promtool itself only checks the cases that exist.
func TestAlertRulesAreTested(t *testing.T) {
	var tf struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(readFile(t, "prometheus/rules_test.yml"), &tf); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: rules_test.yml has a firing case: %v, a quiet one: %v", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
}

func TestMarkdownAnchors(t *testing.T) {
	got := markdownAnchors("# Top\n\n### PreforkDown\ntext # not a heading\n## Prometheus: rules and alerts\n")
	for _, want := range []string{"top", "preforkdown", "prometheus-rules-and-alerts"} {
		if !got[want] {
			t.Errorf("no anchor %q in %v", want, got)
		}
	}
	if want := fmt.Sprint(map[string]bool{"top": true, "preforkdown": true, "prometheus-rules-and-alerts": true}); fmt.Sprint(got) != want {
		t.Errorf("anchors %v, want %v", got, want)
	}
}
