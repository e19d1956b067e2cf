package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"rbee.dev/shared/api"
)

var testWorker = api.Worker{
	WorkerID: "w-1a2b", ModelID: "llama-3-8b", Backend: "llama", Host: "127.0.0.1", Port: 41234,
	URL: "http://127.0.0.1:41234", State: api.WorkerReady, PID: 4242, GPUs: []int{0, 1}, CtxSize: 8192,
	StartedAt: baseTime, Hive: "h1",
}

func TestWorkerCatalog(t *testing.T) {
	q := newFakeQueen(t)
	catalog := []api.Backend{
		{Name: "reference", Kind: "reference", Command: []string{"/usr/bin/rbee-worker", "--port", "{port}"}, HealthPath: "/health"},
		{Name: "mine", Kind: "command", Command: []string{"python", "serve.py", "--port", "{port}"}, HealthPath: "/healthz"},
	}
	q.script = resultScript("worker_catalog_list", catalog)
	r := q.run(t, "worker", "catalog", "--hive", "h1")
	r.want(t, 0)
	want := []string{
		"NAME KIND HEALTH COMMAND",
		"reference reference /health /usr/bin/rbee-worker --port {port}",
		"mine command /healthz python serve.py --port {port}",
	}
	if got := words(r.stdout); !slices.Equal(got, want) {
		t.Errorf("table:\n%s", r.stdout)
	}
	creates, _, _ := q.snapshot()
	if req := creates[0].req; req.Operation != api.OpWorkerCatalogList || req.Hive != "h1" {
		t.Errorf("request %+v", req)
	}
	r = q.run(t, "--json", "worker", "catalog", "--hive", "h1")
	r.want(t, 0)
	var got []api.Backend
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 2 || got[1].HealthPath != "/healthz" {
		t.Errorf("--json %q: %v", r.stdout, err)
	}
}

// spawnScript narrates a spawn as the hive does: the worker's startup
// lines, then its record.
func spawnScript(j *fakeJob) {
	j.narrate("started", "")
	j.emit(api.SSENarration, api.Event{Actor: "workers", Action: "spawning", Message: "starting a llama worker for model llama-3-8b on GPUs [0 1]"})
	j.emit(api.SSENarration, api.Event{Actor: "worker", Action: "log", Message: "loading model llama-3-8b.gguf"})
	j.emit(api.SSENarration, api.Event{Actor: "worker", Action: "log", Message: "  listening on 127.0.0.1:41234"})
	j.emit(api.SSEData, api.Event{Actor: "workers", Action: "worker_spawn", Data: testWorker})
	j.end(api.StateDone, nil, "")
}

func TestWorkerSpawn(t *testing.T) {
	q := newFakeQueen(t)
	q.script = spawnScript
	r := q.run(t, "worker", "spawn", "--hive", "h1", "--model", "llama-3-8b", "--backend", "llama", "--gpus", "0,1", "--ctx-size", "8192", "--timeout", "5m")
	r.want(t, 0)
	if r.stderr != "loading model llama-3-8b.gguf\n  listening on 127.0.0.1:41234\n" {
		t.Errorf("stderr %q: want the worker's lines as it wrote them", r.stderr)
	}
	wantLines(t, r.stdout, "ID w-1a2b", "HIVE h1", "MODEL llama-3-8b", "BACKEND llama", "URL http://127.0.0.1:41234",
		"STATE ready", "PID 4242", "GPUS 0,1", "CTX SIZE 8192", "STARTED 2025-03-04 05:06:07", "RESTARTS 0")
	creates, _, _ := q.snapshot()
	if req := creates[0].req; req.Operation != api.OpWorkerSpawn || req.Hive != "h1" || req.Payload.(*api.WorkerSpawn).ModelID != "llama-3-8b" ||
		req.Payload.(*api.WorkerSpawn).Backend != "llama" || fmt.Sprint(req.Payload.(*api.WorkerSpawn).GPUs) != "[0 1]" ||
		req.Payload.(*api.WorkerSpawn).CtxSize != 8192 || req.TimeoutS != 300 {
		t.Errorf("request %+v", req)
	}

	r = q.run(t, "--json", "worker", "spawn", "--hive", "h1", "--model", "llama-3-8b", "--backend", "llama")
	r.want(t, 0)
	var w api.Worker
	if err := json.Unmarshal([]byte(r.stdout), &w); err != nil || w.WorkerID != "w-1a2b" || r.stderr != "" {
		t.Errorf("--json stdout %q, stderr %q: %v", r.stdout, r.stderr, err)
	}
	creates, _, _ = q.snapshot()
	if spawn := creates[1].req.Payload.(*api.WorkerSpawn); spawn.GPUs != nil || spawn.CtxSize != 0 {
		t.Errorf("defaults sent: %+v", spawn)
	}
}

func TestWorkerSpawnFails(t *testing.T) {
	q := newFakeQueen(t)
	q.script = func(j *fakeJob) {
		j.emit(api.SSENarration, api.Event{Actor: "worker", Action: "log", Message: "error: out of memory"})
		j.end(api.StateFailed, nil, "hive h1: worker w-1 exited with status 1; last output:\n  error: out of memory")
	}
	r := q.run(t, "worker", "spawn", "--hive", "h1", "--model", "m", "--backend", "reference")
	r.want(t, 1)
	want := "error: out of memory\nrbee: job job-1 failed: hive h1: worker w-1 exited with status 1; last output:\n  error: out of memory\n"
	if r.stdout != "" || r.stderr != want {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// Ctrl-C during a spawn cancels the job, so the hive stops the worker.
func TestWorkerSpawnInterrupt(t *testing.T) {
	q := newFakeQueen(t)
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	q.script = func(j *fakeJob) {
		j.waitStream()
		j.emit(api.SSENarration, api.Event{Actor: "worker", Action: "log", Message: "loading"})
		interrupt()
		if !j.waitCancel() {
			return
		}
		j.end(api.StateCancelled, nil, "cancelled")
	}
	r := q.runWith(t, invocation{ctx: ctx}, "worker", "spawn", "--hive", "h1", "--model", "m", "--backend", "reference")
	r.want(t, 130)
	if r.stderr != "loading\nrbee: interrupted; job job-1 cancelled\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	if _, cancels, _ := q.snapshot(); fmt.Sprint(cancels) != "[job-1]" {
		t.Errorf("cancels %v", cancels)
	}
}

func TestWorkerListGetStop(t *testing.T) {
	q := newFakeQueen(t)
	idle := api.Worker{WorkerID: "w-2", ModelID: "tiny", Backend: "reference", State: api.WorkerStarting}
	q.script = resultScript("worker_list", []api.Worker{testWorker, idle})
	r := q.run(t, "worker", "ls", "--hive", "h1")
	r.want(t, 0)
	got := words(r.stdout)
	if len(got) != 3 || got[0] != "ID MODEL BACKEND STATE URL GPUS RESTARTS STARTED" ||
		!strings.HasPrefix(got[1], "w-1a2b llama-3-8b llama ready http://127.0.0.1:41234 0,1 0 ") || !strings.HasSuffix(got[1], " ago") ||
		got[2] != "w-2 tiny reference starting - - 0 -" {
		t.Errorf("table:\n%s", r.stdout)
	}

	q.script = resultScript("worker_get", testWorker)
	r = q.run(t, "worker", "get", "w-1a2b", "--hive", "h1")
	r.want(t, 0)
	wantLines(t, r.stdout, "ID w-1a2b", "STATE ready", "URL http://127.0.0.1:41234")

	stopped := testWorker
	stopped.State = api.WorkerStopped
	q.script = resultScript("worker_stop", stopped)
	r = q.run(t, "worker", "stop", "w-1a2b", "--hive", "h1")
	r.want(t, 0)
	if r.stdout != "worker w-1a2b stopped (llama-3-8b on hive h1)\n" {
		t.Errorf("stop stdout %q", r.stdout)
	}
	r = q.run(t, "--json", "worker", "stop", "w-1a2b", "--hive", "h1")
	r.want(t, 0)
	var w api.Worker
	if err := json.Unmarshal([]byte(r.stdout), &w); err != nil || w.State != api.WorkerStopped {
		t.Errorf("--json %q: %v", r.stdout, err)
	}

	creates, _, _ := q.snapshot()
	ops := make([]string, len(creates))
	for i, c := range creates {
		id := ""
		if w, ok := c.req.Payload.(*api.WorkerRef); ok {
			id = w.WorkerID
		}
		ops[i] = c.req.Operation + ":" + id + "@" + c.req.Hive
	}
	if want := "[worker_list:@h1 worker_get:w-1a2b@h1 worker_stop:w-1a2b@h1 worker_stop:w-1a2b@h1]"; fmt.Sprint(ops) != want {
		t.Errorf("requests %v, want %s", ops, want)
	}

	q.script = func(j *fakeJob) { j.end(api.StateFailed, nil, "worker w-9 not found on hive h1") }
	r = q.run(t, "worker", "stop", "w-9", "--hive", "h1")
	r.want(t, 1)
	if r.stderr != "rbee: job job-5 failed: worker w-9 not found on hive h1\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestWorkerLogs(t *testing.T) {
	q := newFakeQueen(t)
	q.script = resultScript("worker_get", testWorker)
	r := q.run(t, "worker", "logs", "w-1a2b", "--hive", "h1")
	r.want(t, 0)
	wantLines(t, r.stdout, "ID w-1a2b", "STATE ready")
	// The fake queen does not know the hive, so its data dir stays a name.
	if r.stderr != "rbee: hive h1 sends no log lines; worker w-1a2b's whole output is in <data dir>/workers/w-1a2b.log on the hive\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	creates, _, _ := q.snapshot()
	if req := creates[0].req; req.Operation != api.OpWorkerGet || req.Payload.(*api.WorkerRef).WorkerID != "w-1a2b" {
		t.Errorf("request %+v", req)
	}

	// A hive that sends the recent lines with the record gets them shown.
	withLogs := map[string]any{"worker_id": "w-1a2b", "model_id": "m", "backend": "reference", "state": "ready",
		"logs": []string{"line one", "line two"}}
	q.script = resultScript("worker_get", withLogs)
	r = q.run(t, "worker", "logs", "w-1a2b", "--hive", "h1")
	r.want(t, 0)
	if !strings.HasSuffix(r.stdout, "\nline one\nline two\n") || r.stderr != "" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

func TestWorkerUsageErrors(t *testing.T) {
	q := newFakeQueen(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"worker", "ls"}, "--hive is required"},
		{[]string{"worker", "spawn", "--hive", "h1", "--model", "m"}, "--model and --backend are required"},
		{[]string{"worker", "spawn", "--hive", "h1", "--model", "m", "--backend", "reference", "--gpus", "x"}, `invalid argument "x"`},
		{[]string{"worker", "spawn", "--hive", "h1", "--model", "m", "--backend", "reference", "--ctx-size", "-1"}, "ctx_size must be between"},
		{[]string{"worker", "stop", "a.b", "--hive", "h1"}, `worker_id "a.b" is not a worker id`},
		{[]string{"worker", "logs", "--hive", "h1"}, "needs WORKER"},
	} {
		r := q.run(t, tt.args...)
		r.want(t, 2)
		if !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: stderr %q, want %q", tt.args, r.stderr, tt.want)
		}
	}
	if creates, _, _ := q.snapshot(); len(creates) != 0 {
		t.Fatalf("usage errors reached the queen: %+v", creates)
	}
}
