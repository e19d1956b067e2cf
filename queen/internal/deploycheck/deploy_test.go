package deploycheck_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestPromtoolConfig checks the Prometheus configuration and rules with
// promtool, and the dashboards' PromQL by handing it to promtool as
// recording rules, which it parses the same way.
func TestPromtoolConfig(t *testing.T) {
	promtool := needTool(t, "promtool")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	n := 0
	for _, f := range dashboardFiles(t) {
		for _, q := range dashboardQueries(t, f) {
			if strings.HasPrefix(q, "label_values(") {
				continue // Grafana's function, not PromQL; checked in TestMetricNamesUsedExist.
			}
			expr, _ := json.Marshal(grafanaToPromQL(q))
			n++
			// The comment names the query when promtool reports a line.
			fmt.Fprintf(&rules, "      # %s: %s\n", filepath.Base(f), strings.ReplaceAll(q, "\n", " "))
			fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", n, expr)
		}
	}
	dashRules := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(dashRules, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
	}{
		{"prometheus.yml", []string{"check", "config", deployPath("prometheus", "prometheus.yml")}},
		{"alerts.yml", []string{"check", "rules", deployPath("prometheus", "alerts.yml")}},
		{"dashboard queries", []string{"check", "rules", dashRules}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(promtool, tt.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
		})
	}
}

// TestPromtoolCheckMetrics lints what a live queen with a local hive
// serves on /metrics.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := needTool(t, "promtool")
	checkMetrics(t, promtool, "queen", startQueenWithSamples(t))
}

// checkMetrics pipes a /metrics answer into promtool check metrics. It
// exits 1 on text it cannot parse and 3 on lint problems (a counter
// without _total, a unit in the wrong place); both fail the test.
func checkMetrics(t testing.TB, promtool, what, text string) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.ExitCode() == 3:
		t.Errorf("promtool check metrics finds lint problems in the %s's /metrics:\n%s", what, out)
	default:
		t.Errorf("promtool check metrics on the %s's /metrics: %v\n%s", what, err, out)
	}
}

// TestMetricNamesUsedExist checks every metric and label that an alert
// rule or a dashboard uses against what a live cluster serves on /metrics:
// a queen with a local hive (eight recorded GPUs) after a job, and a hive
// process after it started a worker. Every labelled series exists, at 0,
// as soon as its label values are known, so every name used must have a
// sample here: a dashboard or alert never meets "no data" on a healthy
// cluster.
func TestMetricNamesUsedExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a hive and the reference worker and runs them")
	}
	queries := map[string][]string{}
	alerts := deployPath("prometheus", "alerts.yml")
	queries[alerts] = ruleExprs(t, alerts)
	for _, f := range dashboardFiles(t) {
		queries[f] = dashboardQueries(t, f)
	}
	live := liveScrape(t)
	used := map[string]bool{}
	for file, exprs := range queries {
		for _, expr := range exprs {
			names := metricNames(expr)
			if len(names) == 0 && !regexp.MustCompile(`\bup\b`).MatchString(expr) {
				t.Errorf("%s: %q uses no rbee metric", file, expr)
			}
			for _, name := range names {
				used[name] = true
				if live[name] == nil {
					t.Errorf("%s: %q uses %s, which neither the queen's nor the hive's /metrics holds", file, expr, name)
				}
			}
			for _, u := range labelUses(expr) {
				labels := live[u.metric]
				if u.metric == "up" || labels == nil {
					continue
				}
				if labels[u.label] || targetLabel(u.metric, u.label) {
					continue
				}
				t.Errorf("%s: %q selects on label %q of %s, which has only %v", file, expr, u.label, u.metric, keys(labels))
			}
		}
	}
	var unused []string
	for name := range live {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if strings.HasPrefix(name, "rbee_") && !used[name] && !used[base+"_bucket"] {
			unused = append(unused, name)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		t.Logf("exported but used by no dashboard or alert: %v", unused)
	}
}

// targetLabel tells whether Prometheus adds label to metric's series at
// scrape time: job and instance everywhere, and hive on a hive's own
// series, from the service discovery (or the relabelling of the local
// hive's series) in prometheus.yml.
func targetLabel(metric, label string) bool {
	return label == "job" || label == "instance" || (label == "hive" && strings.HasPrefix(metric, "rbee_hive_"))
}

// TestDashboardsValid checks the dashboards' structure: what Grafana needs
// to load them, and that they point at the provisioned datasource.
func TestDashboardsValid(t *testing.T) {
	dsFile, err := os.ReadFile(deployPath("grafana", "provisioning", "datasources", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*uid:\s*(\S+)\s*$`).FindSubmatch(dsFile)
	if m == nil {
		t.Fatal("the provisioned datasource has no uid")
	}
	dsUID := string(m[1])
	provider, err := os.ReadFile(deployPath("grafana", "provisioning", "dashboards", "rbee.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(provider, []byte("type: file")) || !bytes.Contains(provider, []byte("path: ")) {
		t.Error("the dashboard provider is not a file provider with a path")
	}

	uids, titles := map[string]string{}, map[string]string{}
	for _, f := range dashboardFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := readDashboard(t, f)
			if v, _ := d["schemaVersion"].(float64); v < 36 {
				t.Errorf("schemaVersion %v, want 36 or later", d["schemaVersion"])
			}
			uid, _ := d["uid"].(string)
			title, _ := d["title"].(string)
			if uid == "" || title == "" {
				t.Fatalf("uid %q, title %q: both are required", uid, title)
			}
			if other, ok := uids[uid]; ok {
				t.Errorf("uid %s is also used by %s", uid, other)
			}
			if other, ok := titles[title]; ok {
				t.Errorf("title %q is also used by %s", title, other)
			}
			uids[uid], titles[title] = f, f

			vars := map[string]bool{}
			hive := false
			for _, v := range templateVars(d) {
				name, _ := v["name"].(string)
				vars[name] = true
				if v["type"] == "query" && dsOf(v) != dsUID {
					t.Errorf("variable %s: datasource uid %q, want %q", name, dsOf(v), dsUID)
				}
				if name == "hive" && varQuery(v) == "label_values(rbee_hive_slots, hive)" {
					hive = true
				}
			}
			if !hive {
				t.Error("no variable hive = label_values(rbee_hive_slots, hive)")
			}

			panels, _ := d["panels"].([]any)
			if len(panels) == 0 {
				t.Fatal("no panels")
			}
			ids := map[float64]bool{}
			for i, p := range panels {
				checkPanel(t, i, p, dsUID, ids, vars)
			}
		})
	}
}

func checkPanel(t *testing.T, i int, p any, dsUID string, ids map[float64]bool, vars map[string]bool) {
	t.Helper()
	panel, _ := p.(map[string]any)
	title, _ := panel["title"].(string)
	where := fmt.Sprintf("panel %d %q", i, title)
	switch panel["type"] {
	case "timeseries", "stat", "table":
	default:
		t.Errorf("%s: type %v, want timeseries, stat or table", where, panel["type"])
	}
	id, _ := panel["id"].(float64)
	if id == 0 || ids[id] {
		t.Errorf("%s: id %v missing or repeated", where, panel["id"])
	}
	ids[id] = true
	pos, _ := panel["gridPos"].(map[string]any)
	x, _ := pos["x"].(float64)
	w, _ := pos["w"].(float64)
	h, _ := pos["h"].(float64)
	if w <= 0 || h <= 0 || x < 0 || x+w > 24 {
		t.Errorf("%s: gridPos %v does not fit the 24-column grid", where, pos)
	}
	if dsOf(panel) != dsUID {
		t.Errorf("%s: datasource uid %q, want %q", where, dsOf(panel), dsUID)
	}
	targets, _ := panel["targets"].([]any)
	if len(targets) == 0 {
		t.Errorf("%s: no queries", where)
	}
	refs := map[string]bool{}
	for _, tg := range targets {
		target, _ := tg.(map[string]any)
		expr, _ := target["expr"].(string)
		ref, _ := target["refId"].(string)
		if expr == "" || ref == "" || refs[ref] {
			t.Errorf("%s: query %q with refId %q: both required, refId unique", where, expr, ref)
		}
		refs[ref] = true
		if _, ok := target["datasource"]; ok && dsOf(target) != dsUID {
			t.Errorf("%s: query %s: datasource uid %q, want %q", where, ref, dsOf(target), dsUID)
		}
		for _, v := range grafanaVarRe.FindAllString(expr, -1) {
			name := strings.Trim(v, "${}")
			if !strings.HasPrefix(name, "__") && !vars[name] {
				t.Errorf("%s: query %s uses %s, which the dashboard does not define", where, ref, v)
			}
		}
	}
}

// dsOf returns the datasource uid of a panel, query or variable.
func dsOf(v map[string]any) string {
	ds, _ := v["datasource"].(map[string]any)
	uid, _ := ds["uid"].(string)
	return uid
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
