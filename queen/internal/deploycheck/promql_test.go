package deploycheck_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// ruleExprs returns the expression of every rule in a Prometheus rules
// file, in order. It reads the part of YAML that alerts.yml uses: "expr:"
// followed by a plain or quoted scalar on the same line, or by a block
// scalar ("|" or ">") on the lines below. It fails the test unless it
// finds exactly one expression per rule, so a change of layout that it
// cannot read does not go unnoticed.
func ruleExprs(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var exprs []string
	rules := 0
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimLeft(line, " ")
		if strings.HasPrefix(trimmed, "- alert:") || strings.HasPrefix(trimmed, "- record:") {
			rules++
		}
		if !strings.HasPrefix(trimmed, "expr:") {
			continue
		}
		indent := len(line) - len(trimmed)
		v := strings.TrimSpace(strings.TrimPrefix(trimmed, "expr:"))
		switch {
		case strings.HasPrefix(v, "|") || strings.HasPrefix(v, ">"):
			var block []string
			for i+1 < len(lines) {
				next := lines[i+1]
				if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
					break
				}
				block = append(block, strings.TrimSpace(next))
				i++
			}
			v = strings.TrimSpace(strings.Join(block, "\n"))
		case strings.HasPrefix(v, `"`):
			// A double-quoted YAML scalar on one line is a JSON string.
			var s string
			if err := json.Unmarshal([]byte(v), &s); err != nil {
				t.Fatalf("%s:%d: expr %s: %v", path, i+1, v, err)
			}
			v = s
		case strings.HasPrefix(v, "'"):
			v = strings.ReplaceAll(strings.TrimSuffix(strings.TrimPrefix(v, "'"), "'"), "''", "'")
		}
		if v == "" {
			t.Fatalf("%s:%d: empty expr", path, i+1)
		}
		exprs = append(exprs, v)
	}
	if len(exprs) != rules || rules == 0 {
		t.Fatalf("%s: read %d expressions for %d rules", path, len(exprs), rules)
	}
	return exprs
}

// dashboardFiles lists the Grafana dashboards under deploy/.
func dashboardFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(deployPath("grafana", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no dashboards under deploy/grafana/dashboards")
	}
	return files
}

// readDashboard decodes a dashboard into plain maps and slices.
func readDashboard(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// dashboardQueries returns every PromQL expression in a dashboard: each
// "expr" anywhere in it, and the query of each templating variable.
func dashboardQueries(t testing.TB, path string) []string {
	t.Helper()
	d := readDashboard(t, path)
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					out = append(out, s)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d)
	for _, v := range templateVars(d) {
		if q := varQuery(v); q != "" {
			out = append(out, q)
		}
	}
	sort.Strings(out)
	return out
}

// templateVars returns the dashboard's templating variables.
func templateVars(d map[string]any) []map[string]any {
	tmpl, _ := d["templating"].(map[string]any)
	list, _ := tmpl["list"].([]any)
	var vars []map[string]any
	for _, v := range list {
		if m, ok := v.(map[string]any); ok {
			vars = append(vars, m)
		}
	}
	return vars
}

// varQuery is the query of a query variable: a string, or an object with
// a "query" field in the Prometheus editor's newer shape.
func varQuery(v map[string]any) string {
	if v["type"] != "query" {
		return ""
	}
	switch q := v["query"].(type) {
	case string:
		return q
	case map[string]any:
		s, _ := q["query"].(string)
		return s
	}
	return ""
}

var (
	// metricRe matches the names of the metrics the binaries export, the
	// only ones deploy/ may use besides up.
	metricRe = regexp.MustCompile(`\b(?:rbee|go|process)_[a-z0-9_]*[a-z0-9]\b`)
	// selectorRe matches a metric name with its label matchers.
	selectorRe = regexp.MustCompile(`\b((?:rbee|go|process)_[a-z0-9_]*[a-z0-9]|up)\s*\{([^}]*)\}`)
	// matcherRe matches the label name of one matcher.
	matcherRe = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	// labelValuesRe matches Grafana's label_values(metric, label).
	labelValuesRe = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{[^}]*\})?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
	// grafanaVarRe matches a dashboard variable such as $hive or ${hive}.
	grafanaVarRe = regexp.MustCompile(`\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?`)
)

// metricNames returns the exported-metric names an expression uses.
func metricNames(expr string) []string {
	return metricRe.FindAllString(expr, -1)
}

// labelUse is one label name that an expression asks of a metric.
type labelUse struct{ metric, label string }

// labelUses returns the labels an expression selects on, per metric: the
// matchers in braces and the label of label_values(). Labels in by() and
// without() are not read; a wrong one there shows as an empty panel in
// TestPrometheusScrapes' log rather than as a failure.
func labelUses(expr string) []labelUse {
	var out []labelUse
	for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
		for _, l := range matcherRe.FindAllStringSubmatch(m[2], -1) {
			out = append(out, labelUse{m[1], l[1]})
		}
	}
	for _, m := range labelValuesRe.FindAllStringSubmatch(expr, -1) {
		out = append(out, labelUse{m[1], m[2]})
	}
	return out
}

// grafanaToPromQL replaces Grafana's variables with values Prometheus
// accepts, so dashboard queries can be checked and run: intervals become
// durations, every other variable (they all stand in regex matchers)
// matches anything.
func grafanaToPromQL(expr string) string {
	r := strings.NewReplacer(
		"$__rate_interval", "1m", "${__rate_interval}", "1m",
		"$__interval", "15s", "${__interval}", "15s",
		"$__range", "1h", "${__range}", "1h",
	)
	return grafanaVarRe.ReplaceAllString(r.Replace(expr), ".*")
}

// exposition is what one /metrics answer holds: each sample name with the
// label names seen on it.
type exposition map[string]map[string]bool

// parseExposition reads the Prometheus text format. It reads sample lines
// only; TYPE and HELP lines name families, which for histograms are not
// names a query can use.
func parseExposition(t testing.TB, text string) exposition {
	t.Helper()
	out := exposition{}
	for n, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end <= 0 {
			t.Fatalf("/metrics line %d: %q", n+1, line)
		}
		name := line[:end]
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		if line[end] != '{' {
			continue
		}
		labels, err := parseLabelNames(line[end+1:])
		if err != nil {
			t.Fatalf("/metrics line %d: %v: %q", n+1, err, line)
		}
		for _, l := range labels {
			out[name][l] = true
		}
	}
	return out
}

// parseLabelNames reads `a="x",b="y\"z"} 1` and returns a and b.
func parseLabelNames(s string) ([]string, error) {
	var names []string
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return names, nil
		}
		eq := strings.Index(s, `="`)
		if eq <= 0 {
			return nil, errBadLabels
		}
		names = append(names, strings.TrimSpace(s[:eq]))
		s = s[eq+2:]
		// Skip the quoted value, honouring backslash escapes.
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
			}
		}
		if i >= len(s) {
			return nil, errBadLabels
		}
		s = s[i+1:]
	}
}

var errBadLabels = errors.New("malformed labels")

// decodeJSON decodes a response body and closes it.
func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestQueryParsing checks the readers the other tests rely on, so a
// metric they fail to see cannot pass for a metric that exists.
func TestQueryParsing(t *testing.T) {
	t.Run("metrics and labels", func(t *testing.T) {
		tests := []struct {
			expr   string
			names  []string
			labels []labelUse
		}{
			{
				expr:   `sum by (le) (rate(rbee_job_duration_seconds_bucket{operation=~"$operation"}[$__rate_interval]))`,
				names:  []string{"rbee_job_duration_seconds_bucket"},
				labels: []labelUse{{"rbee_job_duration_seconds_bucket", "operation"}},
			},
			{
				expr:   `rbee_hive_gpu_memory_used_bytes / rbee_hive_gpu_memory_total_bytes{hive!="x", gpu = "0"} > 0.95`,
				names:  []string{"rbee_hive_gpu_memory_used_bytes", "rbee_hive_gpu_memory_total_bytes"},
				labels: []labelUse{{"rbee_hive_gpu_memory_total_bytes", "hive"}, {"rbee_hive_gpu_memory_total_bytes", "gpu"}},
			},
			{
				expr:   `absent(up{job="rbee-queen"} == 1)`,
				labels: []labelUse{{"up", "job"}},
			},
			{
				expr:   `label_values(rbee_hive_slots, hive)`,
				names:  []string{"rbee_hive_slots"},
				labels: []labelUse{{"rbee_hive_slots", "hive"}},
			},
			{
				expr:   `process_resident_memory_bytes{route="/v1/jobs/:id/stream"}`,
				names:  []string{"process_resident_memory_bytes"},
				labels: []labelUse{{"process_resident_memory_bytes", "route"}},
			},
		}
		for _, tt := range tests {
			if got := metricNames(tt.expr); strings.Join(got, " ") != strings.Join(tt.names, " ") {
				t.Errorf("metricNames(%s) = %v, want %v", tt.expr, got, tt.names)
			}
			if got := labelUses(tt.expr); fmt.Sprint(got) != fmt.Sprint(tt.labels) {
				t.Errorf("labelUses(%s) = %v, want %v", tt.expr, got, tt.labels)
			}
		}
	})

	t.Run("grafana variables", func(t *testing.T) {
		got := grafanaToPromQL(`rate(x{hive=~"$hive",op=~"${operation}"}[$__rate_interval]) / increase(x[$__range])`)
		want := `rate(x{hive=~".*",op=~".*"}[1m]) / increase(x[1h])`
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	})

	t.Run("exposition", func(t *testing.T) {
		text := "# HELP a_total x\n# TYPE a_total counter\na_total 1\n" +
			`b{name="NVIDIA A100, \"80GB\"",route="/v1/jobs/:id"} 2` + "\n" +
			`b{kind="x}"} 3` + "\n"
		got := parseExposition(t, text)
		if fmt.Sprint(got) != "map[a_total:map[] b:map[kind:true name:true route:true]]" {
			t.Errorf("got %v", got)
		}
	})

	t.Run("rule files", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rules.yml")
		rules := "groups:\n  - name: g\n    rules:\n" +
			"      - alert: A\n        expr: up == 0\n        for: 1m\n" +
			"      - alert: B\n        expr: |\n          sum(x)\n            > 1\n\n        labels: {}\n" +
			"      - alert: C\n        expr: \"y{a=\\\"b\\\"}\"\n" +
			"      - record: d:e\n        expr: 'z{a=''b''}'\n"
		if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
			t.Fatal(err)
		}
		got := ruleExprs(t, path)
		want := []string{"up == 0", "sum(x)\n> 1", `y{a="b"}`, `z{a='b'}`}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}
