package deploycheck_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/testkit"
)

// root is the repository root, seen from this package's directory.
var root = filepath.Join("..", "..", "..")

// deployPath names a file under deploy/.
func deployPath(parts ...string) string {
	return filepath.Join(append([]string{root, "deploy"}, parts...)...)
}

// needTool returns the path of a binary from the Debian prometheus
// package. Outside CI a missing binary skips the test; in CI it fails it,
// so the checks cannot silently stop running there.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed, and CI=true requires it: apt-get install -y prometheus", name)
	}
	t.Skipf("%s is not installed (apt-get install -y prometheus); skipping. With CI=true this fails instead.", name)
	return ""
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fakeSMI writes a script that answers like nvidia-smi on a machine with
// eight A100s, with the output recorded for the inventory tests, and
// returns its path. The output is copied into the script, which uses
// only shell builtins, so it runs whatever PATH the hive has.
func fakeSMI(t testing.TB) string {
	t.Helper()
	csv, err := os.ReadFile(filepath.Join(root, "hive", "internal", "inventory", "testdata", "gpus-8x-a100.csv"))
	if err != nil {
		t.Fatalf("recorded nvidia-smi output: %v", err)
	}
	if strings.Contains(string(csv), "'") {
		t.Fatal("recorded nvidia-smi output holds a quote; quote it for the shell")
	}
	// The hive asks only for GPUs on each heartbeat; any other query gets
	// an empty answer, as on a machine with no GPU processes.
	script := "#!/bin/sh\n" +
		"case \"$1\" in\n" +
		"--query-gpu=*) printf '%s' '" + string(csv) + "' ;;\n" +
		"esac\n"
	path := filepath.Join(t.TempDir(), "nvidia-smi")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// startQueen boots a queen with embedded NATS and a local hive that sees
// the fake GPUs, waits until it is ready, and returns its base URL.
func startQueen(t *testing.T, edit ...func(*app.Config)) (string, *app.Queen) {
	t.Helper()
	// The local hive reads the variable when it starts.
	t.Setenv("RBEE_NVIDIA_SMI", fakeSMI(t))
	cfg := app.DefaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.LocalHive = true
	// Hives heartbeat at a third of the TTL; 1s is the shortest allowed.
	cfg.HiveTTL = time.Second
	for _, e := range edit {
		e(&cfg)
	}
	q, err := app.Start(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatalf("start queen: %v", err)
	}
	t.Cleanup(func() {
		_ = q.Close()
		http.DefaultClient.CloseIdleConnections()
	})
	base := "http://" + q.HTTPAddr()
	testkit.WaitFor(t, 15*time.Second, "queen ready", func() bool { return httpStatus(base+"/readyz") == http.StatusOK })
	return base, q
}

// startQueenWithSamples boots a queen, runs a hive_check job on its local
// hive so the job counters and histograms have samples, waits for the
// local hive's GPU series, and returns the queen's /metrics text.
func startQueenWithSamples(t *testing.T) string {
	t.Helper()
	base, _ := startQueen(t)
	testkit.WaitFor(t, 15*time.Second, "local hive online", func() bool { return httpStatus(base+"/v1/hives/local") == http.StatusOK })
	runJob(t, base, hiveCheck("local"))
	// The job's end reaches the queen's counters a moment after its
	// stream ends, and the GPUs come with the hive's next heartbeat.
	want := []string{
		"rbee_hive_gpu_memory_used_bytes{", "rbee_hive_jobs_finished_total{",
		"rbee_jobs_finished_total{", "rbee_job_duration_seconds_bucket{", "rbee_job_queue_wait_seconds_bucket{",
	}
	var text string
	testkit.WaitFor(t, 15*time.Second, "job and GPU series on the queen's /metrics", func() bool {
		text = get(t, base+"/metrics")
		for _, w := range want {
			if !strings.Contains(text, "\n"+w) {
				return false
			}
		}
		return true
	})
	return text
}

// liveScrape starts a queen with a local hive and a hive process h2 with
// the reference worker beside it, runs a job on the local hive, downloads
// a model onto h2 and starts a worker for it, and returns the samples of
// the queen's and h2's /metrics together.
func liveScrape(t *testing.T) exposition {
	t.Helper()
	hiveBin := buildHive(t)
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The reference worker serves any bytes as a model.
		_, _ = w.Write([]byte(strings.Repeat("demo model bytes ", 1000)))
	}))
	t.Cleanup(files.Close)
	base, q := startQueen(t, func(c *app.Config) { c.NATSListen, c.Insecure = "127.0.0.1:0", true })
	hiveMetrics := testkit.FreeAddr(t)
	startHive(t, hiveBin, q.NATSURL(), "h2", hiveMetrics)
	testkit.WaitFor(t, 15*time.Second, "hives online", func() bool {
		return httpStatus(base+"/v1/hives/h2") == http.StatusOK && httpStatus(base+"/v1/hives/local") == http.StatusOK
	})
	runJob(t, base, hiveCheck("local"))
	runJob(t, base, fmt.Sprintf(`{"operation":"model_download","hive":"h2","source":%q}`, files.URL+"/demo.gguf"))
	runJob(t, base, `{"operation":"worker_spawn","hive":"h2","model_id":"demo","backend":"reference"}`)
	var hive string
	testkit.WaitFor(t, 15*time.Second, "a ready worker on h2's /metrics", func() bool {
		hive = get(t, "http://"+hiveMetrics+"/metrics")
		return strings.Contains(hive, `rbee_hive_workers{hive="h2",model="demo",state="ready"} 1`)
	})
	live := parseExposition(t, get(t, base+"/metrics"))
	for name, labels := range parseExposition(t, hive) {
		if live[name] == nil {
			live[name] = map[string]bool{}
		}
		for l := range labels {
			live[name][l] = true
		}
	}
	return live
}

// hiveCheck is the request for a short hive_check job on hive.
func hiveCheck(hive string) string {
	return fmt.Sprintf(`{"operation":"hive_check","hive":%q,"events":3}`, hive)
}

// runJob submits a job and reads its stream to the end.
func runJob(t testing.TB, base, body string) {
	t.Helper()
	resp, err := http.Post(base+"/v1/jobs", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		JobID string `json:"job_id"`
	}
	err = decodeJSON(resp, &created)
	if err != nil || resp.StatusCode != http.StatusCreated || created.JobID == "" {
		t.Fatalf("POST /v1/jobs %s: status %d, %+v, %v", body, resp.StatusCode, created, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/jobs/"+created.JobID+"/stream", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("stream job %s: %v", created.JobID, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "data: [DONE]" {
			return
		}
	}
	t.Fatalf("stream of job %s ended without [DONE]: %v", created.JobID, sc.Err())
}

// get fetches url and returns the body; anything but 200 fails the test.
func get(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, data)
	}
	return string(data)
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
