package workers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rbee.dev/hive/internal/workers"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// workerBin is the rbee-worker binary built for these tests.
var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rbee-worker-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "rbee-worker")
	out, err := exec.Command("go", "build", "-o", workerBin, "rbee.dev/hive/cmd/rbee-worker").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build rbee-worker: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// reference is the catalog entry of the test-built reference worker; extra
// flags go after the template.
func reference(name string, extra ...string) api.Backend {
	cmd := []string{workerBin, "--host", "{host}", "--port", "{port}", "--model", "{model}", "--model-id", "{model_id}", "--ctx-size", "{ctx}", "--token-rate", "0"}
	return api.Backend{Name: name, Kind: workers.KindReference, Command: append(cmd, extra...)}
}

// events records what a supervisor reports through OnEvent.
type events struct {
	mu  sync.Mutex
	got []string
	ws  []api.Worker
}

func (e *events) add(w api.Worker, ev string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, ev)
	e.ws = append(e.ws, w)
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprint(e.got)
}

func (e *events) find(ev string) (api.Worker, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, g := range e.got {
		if g == ev {
			return e.ws[i], true
		}
	}
	return api.Worker{}, false
}

// newSupervisor makes a supervisor on dir with the reference backend and
// any extra ones; it does not run it.
func newSupervisor(t testing.TB, dir string, extra ...api.Backend) (*workers.Supervisor, *events) {
	t.Helper()
	ev := &events{}
	s, err := workers.New(workers.Config{
		DataDir: dir, Hive: "h1", Backends: append([]api.Backend{reference("reference")}, extra...),
		StopGrace: 2 * time.Second, OnEvent: ev.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, ev
}

// mustRun runs s until the test ends, which stops its workers.
func mustRun(t testing.TB, s *workers.Supervisor) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func modelFile(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "tiny.gguf")
	if err := os.WriteFile(p, []byte("GGUF not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustSpawn(t testing.TB, s *workers.Supervisor, model string, log func(string)) api.Worker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := s.Spawn(ctx, workers.SpawnRequest{ModelID: "tiny", ModelPath: model, Backend: "reference"}, log)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// chat asks a worker for a completion and returns its text.
func chat(t testing.TB, w api.Worker) string {
	t.Helper()
	resp, err := http.Post(w.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":4}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
		t.Fatalf("chat on %s: %d %v %+v", w.URL, resp.StatusCode, err, out)
	}
	return out.Choices[0].Message.Content
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err != nil || !strings.Contains(string(b), ") Z ")
}

// stopped reports whether every thread of pid is stopped by a signal.
func stopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil || !strings.Contains(string(b), ") T ") {
			return false
		}
	}
	return true
}

func stateWorkers(t testing.TB, dir string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "workers", workers.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Workers []struct {
			Worker api.Worker `json:"worker"`
			PGID   int        `json:"pgid"`
		} `json:"workers"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, w := range st.Workers {
		if w.PGID != w.Worker.PID {
			t.Errorf("state of %s: pgid %d, pid %d", w.Worker.WorkerID, w.PGID, w.Worker.PID)
		}
		ids = append(ids, w.Worker.WorkerID)
	}
	return ids
}

func TestSpawnServeStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, ev := newSupervisor(t, dir)
	mustRun(t, s)

	var mu sync.Mutex
	var lines []string
	w := mustSpawn(t, s, modelFile(t, dir), func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() })
	if w.State != api.WorkerReady || w.Port == 0 || w.PID == 0 || w.ModelID != "tiny" || w.Backend != "reference" ||
		w.Hive != "h1" || w.CtxSize != 4096 || !strings.HasPrefix(w.WorkerID, "w-") || w.URL != fmt.Sprintf("http://127.0.0.1:%d", w.Port) {
		t.Fatalf("spawned %+v", w)
	}
	if chat(t, w) == "" {
		t.Fatal("empty answer")
	}
	mu.Lock()
	startup := strings.Join(lines, "\n")
	mu.Unlock()
	if !strings.Contains(startup, "[rbee]") || !strings.Contains(startup, "listening") || !strings.Contains(startup, "ready") {
		t.Fatalf("startup lines passed to log:\n%s", startup)
	}
	if l := s.List(); len(l) != 1 || l[0].WorkerID != w.WorkerID {
		t.Fatalf("list = %+v", l)
	}
	if logs := s.Logs(w.WorkerID); len(logs) == 0 || len(logs) > workers.LogLines {
		t.Fatalf("logs = %q", logs)
	}
	if ids := stateWorkers(t, dir); !slices.Equal(ids, []string{w.WorkerID}) {
		t.Fatalf("state file holds %v", ids)
	}

	if err := s.Stop(context.Background(), w.WorkerID); err != nil {
		t.Fatal(err)
	}
	if alive(w.PID) || syscall.Kill(-w.PID, 0) == nil {
		t.Fatalf("worker process group %d survives Stop", w.PID)
	}
	if _, err := s.Get(w.WorkerID); !errors.Is(err, workers.ErrNotFound) {
		t.Fatalf("Get after Stop = %v, want ErrNotFound", err)
	}
	if err := s.Stop(context.Background(), w.WorkerID); !errors.Is(err, workers.ErrNotFound) {
		t.Fatalf("second Stop = %v", err)
	}
	if len(s.List()) != 0 || len(stateWorkers(t, dir)) != 0 {
		t.Fatalf("after Stop: list %v, state %v", s.List(), stateWorkers(t, dir))
	}
	if stopped, ok := ev.find(workers.EventStopped); !ok || stopped.State != api.WorkerStopped {
		t.Fatalf("events %v", ev)
	}
	if _, ok := ev.find(workers.EventReady); !ok {
		t.Fatalf("events %v", ev)
	}
}

func TestCrashRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for restarts, timeouts or kills")
	}
	t.Parallel()
	dir := t.TempDir()
	s, ev := newSupervisor(t, dir)
	mustRun(t, s)
	w := mustSpawn(t, s, modelFile(t, dir), nil)

	if err := syscall.Kill(w.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var now api.Worker
	testkit.WaitFor(t, 10*time.Second, "the worker is restarted", func() bool {
		now, _ = s.Get(w.WorkerID)
		return now.State == api.WorkerReady && now.Restarts == 1
	})
	if now.PID == w.PID || !alive(now.PID) {
		t.Fatalf("restarted worker %+v, was pid %d", now, w.PID)
	}
	crashed, ok := ev.find(workers.EventCrashed)
	if !ok || crashed.State != api.WorkerRestarting || crashed.Restarts != 1 || !strings.Contains(crashed.Error, "signal") {
		t.Fatalf("crash event %+v (events %v)", crashed, ev)
	}
	testkit.WaitFor(t, time.Second, "a restarted event", func() bool { _, ok := ev.find(workers.EventRestarted); return ok })
	if chat(t, now) == "" {
		t.Fatal("empty answer after restart")
	}
}

func TestSpawnFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for restarts, timeouts or kills")
	}
	t.Parallel()
	dir := t.TempDir()
	model := modelFile(t, dir)
	s, ev := newSupervisor(t, dir,
		reference("slow", "--load-delay", "1m"),
		api.Backend{Name: "broken", Kind: workers.KindCommand, Command: []string{"sh", "-c",
			`echo "model=$0 ctx=$1 gpus=$CUDA_VISIBLE_DEVICES cannot bind port $2" >&2; exit 3`, "{model}", "{ctx}", "{port}"}},
		api.Backend{Name: "missing", Kind: workers.KindCommand, Command: []string{filepath.Join(dir, "no-such-server"), "{port}"}},
	)
	mustRun(t, s)

	tests := []struct {
		name    string
		req     workers.SpawnRequest
		timeout time.Duration
		want    []string
		is      error
	}{
		{"still loading at the timeout", workers.SpawnRequest{Backend: "slow"}, time.Second,
			[]string{"not ready after", "deadline exceeded", "loading model", "load_delay=1m0s"}, context.DeadlineExceeded},
		{"command exits at once", workers.SpawnRequest{Backend: "broken", GPUs: []int{1, 3}, CtxSize: 512}, 5 * time.Second,
			[]string{"exited while starting: exit status 3", "model=" + model + " ctx=512 gpus=1,3 cannot bind port"}, nil},
		{"program missing", workers.SpawnRequest{Backend: "missing"}, 5 * time.Second, []string{"no-such-server"}, nil},
		{"unknown backend", workers.SpawnRequest{Backend: "gpt-9"}, time.Second, []string{"gpt-9", "reference, slow"}, workers.ErrUnknownBackend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			tt.req.ModelID, tt.req.ModelPath = "tiny", model
			var lines []string
			var mu sync.Mutex
			_, err := s.Spawn(ctx, tt.req, func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() })
			if err == nil {
				t.Fatal("spawn succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if len(s.List()) != 0 {
				t.Errorf("a failed spawn is listed: %+v", s.List())
			}
		})
	}
	// The timed-out worker's process is gone with its group.
	stopped, ok := ev.find(workers.EventStopped)
	if !ok || stopped.Backend != "slow" || alive(stopped.PID) || syscall.Kill(-stopped.PID, 0) == nil {
		t.Fatalf("timed-out worker %+v (events %v)", stopped, ev)
	}
	if ids := stateWorkers(t, dir); len(ids) != 0 {
		t.Fatalf("state file holds %v", ids)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "workers"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") {
			t.Errorf("log %s left behind", e.Name())
		}
	}
}

func TestRunStopsWorkers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, _ := newSupervisor(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	model := modelFile(t, dir)
	a, b := mustSpawn(t, s, model, nil), mustSpawn(t, s, model, nil)
	cancel()
	<-done
	if alive(a.PID) || alive(b.PID) {
		t.Fatal("workers survive the supervisor")
	}
	if ids := stateWorkers(t, dir); len(ids) != 0 {
		t.Fatalf("state file holds %v", ids)
	}
	if _, err := s.Spawn(context.Background(), workers.SpawnRequest{ModelPath: model, Backend: "reference"}, nil); !errors.Is(err, workers.ErrClosed) {
		t.Fatalf("spawn after Run = %v, want ErrClosed", err)
	}
}

// A hive that crashed left a healthy worker: the next one adopts it.
func TestAdoptsLiveWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for restarts, timeouts or kills")
	}
	t.Parallel()
	dir := t.TempDir()
	a, _ := newSupervisor(t, dir)
	w := mustSpawn(t, a, modelFile(t, dir), nil)
	t.Cleanup(func() { _ = syscall.Kill(-w.PID, syscall.SIGKILL) })
	workers.Abandon(a)

	b, ev := newSupervisor(t, dir)
	mustRun(t, b)
	got, err := b.Get(w.WorkerID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.WorkerReady || got.PID != w.PID || got.URL != w.URL || got.ModelID != "tiny" {
		t.Fatalf("adopted %+v, was %+v", got, w)
	}
	if _, ok := ev.find(workers.EventAdopted); !ok {
		t.Fatalf("events %v", ev)
	}
	if chat(t, got) == "" {
		t.Fatal("empty answer")
	}
	if logs := b.Logs(w.WorkerID); !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "listening") }) {
		t.Fatalf("adopted worker's logs: %q", logs)
	}

	// A crash of the adopted worker is noticed by polling and restarts it,
	// now as a child.
	if err := syscall.Kill(w.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var now api.Worker
	testkit.WaitFor(t, 10*time.Second, "the adopted worker is restarted", func() bool {
		now, _ = b.Get(w.WorkerID)
		return now.State == api.WorkerReady && now.Restarts == 1
	})
	if err := b.Stop(context.Background(), w.WorkerID); err != nil {
		t.Fatal(err)
	}
	if alive(now.PID) {
		t.Fatal("restarted worker survives Stop")
	}
}

// Workers a crashed hive left behind that are dead, or alive but not
// answering, are cleaned up and forgotten.
func TestDropsDeadAndHungWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: waits for restarts, timeouts or kills")
	}
	t.Parallel()
	dir := t.TempDir()
	a, _ := newSupervisor(t, dir)
	model := modelFile(t, dir)
	dead, hung := mustSpawn(t, a, model, nil), mustSpawn(t, a, model, nil)
	t.Cleanup(func() { _ = syscall.Kill(-hung.PID, syscall.SIGKILL) })
	workers.Abandon(a)

	if err := syscall.Kill(dead.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the killed worker is gone", func() bool { return !alive(dead.PID) })
	if err := syscall.Kill(hung.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal stops each of its threads when it next runs: on a busy
	// machine a thread may still answer a request a moment later.
	testkit.WaitFor(t, 5*time.Second, "the hung worker is stopped", func() bool { return stopped(hung.PID) })

	b, ev := newSupervisor(t, dir)
	mustRun(t, b)
	if l := b.List(); len(l) != 0 {
		t.Fatalf("adopted %+v", l)
	}
	if alive(hung.PID) {
		t.Fatal("the hung worker was not killed")
	}
	if ids := stateWorkers(t, dir); len(ids) != 0 {
		t.Fatalf("state file holds %v", ids)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.got) != 2 || ev.got[0] != workers.EventDropped || ev.got[1] != workers.EventDropped {
		t.Fatalf("events %v", ev)
	}
}
