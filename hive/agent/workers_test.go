package agent_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"rbee.dev/hive/internal/workers"
	"rbee.dev/shared/api"
)

// buildReferenceWorker builds rbee-worker and puts it first on PATH, where
// the hive's built-in catalog finds it.
func buildReferenceWorker(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, workers.ReferenceBinary), "rbee.dev/hive/cmd/rbee-worker").CombinedOutput()
	if err != nil {
		t.Fatalf("build rbee-worker: %v\n%s", err, out)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

func TestWorkerOperations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a worker process")
	}
	buildReferenceWorker(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), strings.NewReader("not a gguf model"))
	}))
	t.Cleanup(srv.Close)
	js := mustHive(t, "h1")

	events := runJob(t, js, "h1", "cat1", api.JobRequest{Operation: api.OpWorkerCatalogList})
	var catalog []api.Backend
	dataOf(t, events, "worker_catalog_list", &catalog)
	if len(catalog) == 0 || catalog[0].Name != "reference" {
		t.Fatalf("catalog %+v", catalog)
	}

	events = runJob(t, js, "h1", "sp0", api.JobRequest{Operation: api.OpWorkerSpawn, Payload: &api.WorkerSpawn{ModelID: "tiny", Backend: "reference"}})
	if end := events[len(events)-1]; end.State != api.StateFailed || !strings.Contains(end.Error, "model tiny not found on hive h1") {
		t.Fatalf("spawn for a missing model ended %+v", end)
	}
	if end := runJob(t, js, "h1", "dl1", api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: srv.URL + "/tiny.gguf"}}); end[len(end)-1].State != api.StateDone {
		t.Fatalf("download ended %+v", end[len(end)-1])
	}
	events = runJob(t, js, "h1", "sp1", api.JobRequest{Operation: api.OpWorkerSpawn, Payload: &api.WorkerSpawn{ModelID: "tiny", Backend: "nope"}})
	if end := events[len(events)-1]; end.State != api.StateFailed || !strings.Contains(end.Error, "unknown worker backend \"nope\"") {
		t.Fatalf("spawn with an unknown backend ended %+v", end)
	}

	events = runJob(t, js, "h1", "sp2", api.JobRequest{Operation: api.OpWorkerSpawn, Payload: &api.WorkerSpawn{ModelID: "tiny", Backend: "reference", CtxSize: 256}})
	if end := events[len(events)-1]; end.State != api.StateDone {
		t.Fatalf("spawn ended %+v\n%+v", end, events)
	}
	var logs int
	for _, e := range events {
		if e.Actor == "worker" && e.Action == "log" && e.Message != "" {
			logs++
		}
	}
	if logs < 2 {
		t.Fatalf("%d worker log lines narrated: %+v", logs, events)
	}
	var w api.Worker
	dataOf(t, events, "worker_spawn", &w)
	if w.State != api.WorkerReady || w.ModelID != "tiny" || w.Backend != "reference" || w.Hive != "h1" || w.CtxSize != 256 || w.URL == "" {
		t.Fatalf("spawned %+v", w)
	}
	resp, err := http.Get(w.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("worker /v1/models: %d", resp.StatusCode)
	}

	events = runJob(t, js, "h1", "ls1", api.JobRequest{Operation: api.OpWorkerList})
	var list []api.Worker
	dataOf(t, events, "worker_list", &list)
	if len(list) != 1 || list[0].WorkerID != w.WorkerID {
		t.Fatalf("list %+v", list)
	}
	events = runJob(t, js, "h1", "get1", api.JobRequest{Operation: api.OpWorkerGet, Payload: &api.WorkerRef{WorkerID: w.WorkerID}})
	var got api.Worker
	dataOf(t, events, "worker_get", &got)
	if got.WorkerID != w.WorkerID || got.PID != w.PID {
		t.Fatalf("get %+v", got)
	}

	events = runJob(t, js, "h1", "stop1", api.JobRequest{Operation: api.OpWorkerStop, Payload: &api.WorkerRef{WorkerID: w.WorkerID}})
	var stopped api.Worker
	dataOf(t, events, "worker_stop", &stopped)
	if stopped.State != api.WorkerStopped {
		t.Fatalf("stopped %+v", stopped)
	}
	if _, err := http.Get(w.URL + "/health"); err == nil {
		t.Fatal("the worker still answers after worker_stop")
	}
	events = runJob(t, js, "h1", "get2", api.JobRequest{Operation: api.OpWorkerGet, Payload: &api.WorkerRef{WorkerID: w.WorkerID}})
	if end := events[len(events)-1]; end.State != api.StateFailed || end.Error != "worker "+w.WorkerID+" not found on hive h1" {
		t.Fatalf("get after stop ended %+v", end)
	}
}
