package deploy

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// The dashboard's data source is a variable, so that it imports into any
// Grafana whatever its Prometheus data source is called.
const datasourceVar = "${datasource}"

type grafanaDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID         int                `json:"id"`
	Type       string             `json:"type"`
	Title      string             `json:"title"`
	Datasource *grafanaDatasource `json:"datasource"`
	Targets    []struct {
		Datasource *grafanaDatasource `json:"datasource"`
		Expr       string             `json:"expr"`
		RefID      string             `json:"refId"`
	} `json:"targets"`
	// A collapsed row holds its panels.
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

func TestGrafanaDashboard(t *testing.T) {
	var d grafanaDashboard
	if err := json.Unmarshal(readFile(t, "grafana/prefork.json"), &d); err != nil {
		t.Fatal(err)
	}
	for _, err := range d.check(readmeMetrics(t)) {
		t.Error(err)
	}
}

var labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)

func (d grafanaDashboard) check(readme map[string]string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if d.UID == "" || d.SchemaVersion < 36 {
		fail("uid %q, schemaVersion %d: want a uid and schemaVersion >= 36", d.UID, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // the older form: a plain string
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			fail("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
		} else if err := checkMetric(m[1], readme); err != nil {
			fail("variable %s: %v", v.Name, err)
		}
	}
	if vars["datasource"] != "datasource" || vars["instance"] != "query" {
		fail("variables %v: want datasource (a data source) and instance (a query)", vars)
	}
	ids := map[int]string{}
	targets := 0
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
				fail("panel %q: id %d is missing or also %q's", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				fail("panel %q has no query", p.Title)
			}
			refIDs := map[string]bool{}
			for _, tg := range p.Targets {
				targets++
				if tg.Datasource == nil || tg.Datasource.UID != datasourceVar || tg.Datasource.Type != "prometheus" {
					fail("panel %q, query %s: datasource %+v, want prometheus %s", p.Title, tg.RefID, tg.Datasource, datasourceVar)
				}
				if refIDs[tg.RefID] || tg.RefID == "" {
					fail("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
				}
				refIDs[tg.RefID] = true
				// Every query honours the instance picker.
				if !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					fail("panel %q, query %s does not filter by $instance: %s", p.Title, tg.RefID, tg.Expr)
				}
				for _, err := range checkExpr(tg.Expr, readme) {
					fail("panel %q, query %s: %v", p.Title, tg.RefID, err)
				}
			}
		}
	}
	walk(d.Panels)
	if targets == 0 {
		fail("no query in the dashboard")
	}
	return errs
}

// Each check fails on a dashboard broken in its way, nested rows included.
func TestGrafanaCheckFails(t *testing.T) {
	readme := readmeMetrics(t)
	for _, tc := range []struct {
		name    string
		breakIt func(d *grafanaDashboard)
		want    string
	}{
		{"duplicate id in a collapsed row", func(d *grafanaDashboard) {
			row := &d.Panels[len(d.Panels)-1]
			row.Panels[0].ID = d.Panels[1].ID
		}, "also"},
		{"unknown metric", func(d *grafanaDashboard) {
			d.Panels[1].Targets[0].Expr = `prefork_generations{instance=~"$instance"}`
		}, "prefork_generations is not in the README"},
		{"target without datasource", func(d *grafanaDashboard) {
			d.Panels[1].Targets[0].Datasource = nil
		}, "datasource"},
		{"hard-coded datasource in a collapsed row", func(d *grafanaDashboard) {
			row := &d.Panels[len(d.Panels)-1]
			row.Panels[0].Targets[0].Datasource = &grafanaDatasource{Type: "prometheus", UID: "P1809F7CD0C75ACF3"}
		}, "datasource"},
		{"instance picker ignored", func(d *grafanaDashboard) {
			d.Panels[1].Targets[0].Expr = `prefork_generation`
		}, "$instance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d grafanaDashboard
			if err := json.Unmarshal(readFile(t, "grafana/prefork.json"), &d); err != nil {
				t.Fatal(err)
			}
			if last := d.Panels[len(d.Panels)-1]; last.Type != "row" || len(last.Panels) == 0 {
				t.Fatal("the test expects the last panel to be a collapsed row with panels")
			}
			tc.breakIt(&d)
			errs := d.check(readme)
			if !strings.Contains(fmt.Sprint(errs), tc.want) {
				t.Fatalf("errors %v, want one about %q", errs, tc.want)
			}
		})
	}
}
