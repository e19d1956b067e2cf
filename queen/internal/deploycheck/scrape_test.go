package deploycheck_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/testkit"
)

// TestPrometheusScrapes runs the real Prometheus with deploy/'s
// configuration and rules against a queen with a local hive and a hive
// binary serving --metrics-addr, found through the queen's service
// discovery. Prometheus must scrape both and label the hives' series by
// hive; every alert rule must evaluate without error and stay quiet on a
// healthy cluster; every dashboard query must answer with data; and when
// the hive process dies, RbeeHiveDown must go off for it.
func TestPrometheusScrapes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus and a hive process")
	}
	prometheus := needTool(t, "prometheus")
	promtool := needTool(t, "promtool")
	hiveBin := buildHive(t)

	base, q := startQueen(t, func(c *app.Config) {
		c.NATSListen, c.Insecure = "127.0.0.1:0", true
		c.LocalHiveAllowRun = true
	})
	hiveMetrics := testkit.FreeAddr(t)
	hive := startHive(t, hiveBin, q.NATSURL(), "h2", hiveMetrics)
	testkit.WaitFor(t, 15*time.Second, "hives online", func() bool {
		return httpStatus(base+"/v1/hives/h2") == http.StatusOK && httpStatus(base+"/v1/hives/local") == http.StatusOK
	})
	runJob(t, base, hiveCheck("local"))
	runJob(t, base, hiveCheck("h2"))
	runJob(t, base, hiveCheck("h2"))
	// One failure gives the failure panels and rules something to count.
	runJob(t, base, `{"operation":"run","hive":"local","command":["false"]}`)

	prom := startPrometheus(t, prometheus, q.HTTPAddr())

	// Each check names a query and what its answer must hold.
	checks := []struct {
		query string
		ok    func([]promSample) string
	}{
		{"rbee_jobs_created_total", nonEmpty},
		{`rbee_hive_gpu_memory_used_bytes{hive="h2"}`, func(s []promSample) string {
			if len(s) != 8 {
				return fmt.Sprintf("%d series, want one per recorded GPU (8)", len(s))
			}
			if _, ok := s[0].Metric["exported_hive"]; ok {
				return "the hive label was renamed to exported_hive; honor_labels is missing"
			}
			return ""
		}},
		{`up{job="rbee-hive",hive="h2"} == 1`, nonEmpty},
		{`up{job="rbee-queen"} == 1`, nonEmpty},
		// Labelled by service discovery.
		{`rbee_hive_jobs_finished_total{hive="h2",state="done"}`, nonEmpty},
		// Labelled by the queen job's metric relabelling.
		{`rbee_hive_jobs_finished_total{hive="local",state="failed"}`, nonEmpty},
		{"rbee_hive_slots", func(s []promSample) string {
			hives := map[string]bool{}
			for _, x := range s {
				hives[x.Metric["hive"]] = true
			}
			if !hives["h2"] || !hives["local"] || len(hives) != 2 {
				return fmt.Sprintf("hives %v, want local and h2 (the dashboards' hive variable)", keys(hives))
			}
			return ""
		}},
	}
	deadline := time.Now().Add(45 * time.Second)
	for _, c := range checks {
		for {
			why := c.ok(prom.query(t, c.query))
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("query %s: %s\nprometheus log:\n%s", c.query, why, prom.log())
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	t.Run("alert rules evaluate and stay quiet", func(t *testing.T) {
		// Rules evaluated before the first scrape may be pending (no queen
		// seen yet); on a healthy cluster they must settle to inactive.
		want := len(ruleExprs(t, deployPath("prometheus", "alerts.yml")))
		deadline := time.Now().Add(20 * time.Second)
		for {
			rules := prom.rules(t)
			if len(rules) != want {
				t.Fatalf("prometheus loaded %d rules, alerts.yml has %d", len(rules), want)
			}
			var unsettled []string
			for _, r := range rules {
				if r.Health == "err" {
					t.Fatalf("rule %s: %s", r.Name, r.LastError)
				}
				if r.Health != "ok" || r.State != "inactive" {
					unsettled = append(unsettled, fmt.Sprintf("%s (health %s, %s)", r.Name, r.Health, r.State))
				}
			}
			if len(unsettled) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("on a healthy cluster, still not evaluated or not inactive: %v", unsettled)
			}
			time.Sleep(250 * time.Millisecond)
		}
	})

	t.Run("dashboard queries answer", func(t *testing.T) {
		// A query may come back empty only if it uses a series that
		// neither binary has yet (the worker series, as this test starts no
		// worker; TestMetricNamesUsedExist does).
		live := parseExposition(t, get(t, base+"/metrics"))
		for name, labels := range parseExposition(t, get(t, "http://"+hiveMetrics+"/metrics")) {
			live[name] = labels
		}
		want := map[string]string{}
		for _, f := range dashboardFiles(t) {
			for _, q := range dashboardQueries(t, f) {
				if strings.HasPrefix(q, "label_values(") {
					continue
				}
				missing := ""
				for _, name := range metricNames(q) {
					if live[name] == nil {
						missing = name
					}
				}
				if missing != "" {
					t.Logf("%s: %s may be empty: no %s series yet", filepath.Base(f), q, missing)
					continue
				}
				want[grafanaToPromQL(q)] = filepath.Base(f) + ": " + q
			}
		}
		// Rates need two samples in their window; give Prometheus a few
		// scrapes.
		deadline := time.Now().Add(20 * time.Second)
		for len(want) > 0 && time.Now().Before(deadline) {
			for q := range want {
				if len(prom.query(t, q)) > 0 {
					delete(want, q)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		for _, q := range want {
			t.Errorf("no data for %s", q)
		}
	})

	t.Run("hive metrics lint", func(t *testing.T) {
		checkMetrics(t, promtool, "hive", get(t, "http://"+hiveMetrics+"/metrics"))
	})

	t.Run("hive down alerts", func(t *testing.T) {
		_ = hive.Process.Kill()
		testkit.WaitFor(t, 30*time.Second, "RbeeHiveDown for h2", func() bool {
			for _, a := range prom.alerts(t) {
				if a.Labels["alertname"] == "RbeeHiveDown" && a.Labels["hive"] == "h2" {
					return true
				}
			}
			return false
		})
	})
}

func nonEmpty(s []promSample) string {
	if len(s) == 0 {
		return "no samples"
	}
	return ""
}

// buildHive builds the hive binary and the reference worker into a
// temporary directory, where the hive's built-in catalog finds the worker
// beside it, and returns the hive's path.
func buildHive(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "rbee.dev/hive/cmd/hive", "rbee.dev/hive/cmd/rbee-worker").CombinedOutput()
	if err != nil {
		t.Fatalf("build hive and rbee-worker: %v\n%s", err, out)
	}
	return filepath.Join(dir, "hive")
}

// startHive runs the hive binary with the fake nvidia-smi, serving
// /metrics on metricsAddr, until the test ends.
func startHive(t *testing.T, bin, natsURL, id, metricsAddr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "--id", id, "--nats-url", natsURL, "--data-dir", t.TempDir(), "--metrics-addr", metricsAddr)
	cmd.Env = append(os.Environ(), "RBEE_NVIDIA_SMI="+fakeSMI(t))
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// promServer is a Prometheus process run for one test.
type promServer struct {
	base string
	out  *testkit.SyncBuffer
}

// startPrometheus runs Prometheus with deploy/prometheus/prometheus.yml
// and alerts.yml, changed only to reach the test's queen and to scrape,
// discover and evaluate every second.
func startPrometheus(t *testing.T, bin, queenAddr string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg, err := os.ReadFile(deployPath("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(cfg)
	for _, r := range [][2]string{
		{"queen:7833", queenAddr},
		{"scrape_interval: 15s", "scrape_interval: 1s"},
		{"evaluation_interval: 15s", "evaluation_interval: 1s"},
		{"refresh_interval: 15s", "refresh_interval: 1s"},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("prometheus.yml no longer contains %q; update this test", r[0])
		}
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	rules, err := os.ReadFile(deployPath("prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"prometheus.yml": []byte(text), "alerts.yml": rules} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	addr := testkit.FreeAddr(t)
	p := &promServer{base: "http://" + addr, out: &testkit.SyncBuffer{}}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	deadline := time.Now().Add(30 * time.Second)
	for httpStatus(p.base+"/-/ready") != http.StatusOK {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", p.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s:\n%s", p.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

func (p *promServer) log() string { return p.out.String() }

// promSample is one series of an instant query's answer.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

// query runs an instant query; a query Prometheus rejects fails the test.
func (p *promServer) query(t testing.TB, q string) []promSample {
	t.Helper()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	p.get(t, "/api/v1/query?query="+url.QueryEscape(q), &out)
	if out.Status != "success" {
		t.Fatalf("query %s: %s %s", q, out.Status, out.Error)
	}
	if out.Data.ResultType != "vector" {
		t.Fatalf("query %s: result type %s, want vector", q, out.Data.ResultType)
	}
	return out.Data.Result
}

// promRule is one rule as /api/v1/rules reports it.
type promRule struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// promAlert is one pending or firing alert.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (p *promServer) alerts(t testing.TB) []promAlert {
	t.Helper()
	var out struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	p.get(t, "/api/v1/alerts", &out)
	return out.Data.Alerts
}

func (p *promServer) rules(t testing.TB) []promRule {
	t.Helper()
	var out struct {
		Data struct {
			Groups []struct {
				Rules []promRule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	p.get(t, "/api/v1/rules", &out)
	var rules []promRule
	for _, g := range out.Data.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

func (p *promServer) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(p.base + path)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeJSON(resp, v); err != nil {
		t.Fatalf("GET %s: %d: %v", path, resp.StatusCode, err)
	}
}
