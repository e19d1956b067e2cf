// Package workers starts, supervises and stops a hive's inference workers:
// llama-server, vLLM, rbee's reference worker or any OpenAI-compatible
// server from the hive's catalog, never an arbitrary command from a request.
//
// Each worker runs in its own process group on a port the hive picks, with
// CUDA_VISIBLE_DEVICES set to the GPUs it was given. It is health-checked
// until ready, restarted with exponential backoff when it crashes, and
// stopped (SIGTERM to the group, SIGKILL after a grace period) on request
// or when the hive stops. Its records live in <data dir>/workers/state.json,
// so a hive that crashed finds the workers it left behind when it starts
// again: it adopts those still alive and healthy, and kills the rest.
package workers

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// Events passed to Config.OnEvent.
const (
	EventReady         = "ready"          // a spawned worker answers its health check
	EventCrashed       = "crashed"        // a ready worker's process exited or stopped answering
	EventRestarted     = "restarted"      // a crashed worker is ready again
	EventRestartFailed = "restart_failed" // a restart attempt did not become ready; retried
	EventFailed        = "failed"         // restarts gave up; the worker stays listed until stopped
	EventStopped       = "stopped"        // stopped on request or with the hive
	EventAdopted       = "adopted"        // found alive from a previous hive run
	EventDropped       = "dropped"        // found dead or unhealthy from a previous run, cleaned up
)

// Config is what a Supervisor needs. Zero durations and counts take the
// defaults shown.
type Config struct {
	// DataDir is the hive's data directory; workers keep their state and
	// logs under DataDir/workers.
	DataDir string
	// Hive is the hive id stamped into worker records.
	Hive string
	// Backends is the catalog; nil means DefaultCatalog.
	Backends []api.Backend
	// Host is the address workers listen on (127.0.0.1): the hive proxies
	// to them, clients never reach them directly.
	Host string
	// DefaultCtxSize is the context size when a spawn asks for none
	// (4096): a server's own default may be the model's full trained
	// context, which can need far more memory than the GPU has.
	DefaultCtxSize int
	// StopGrace is how long a worker has to exit after SIGTERM (5s).
	StopGrace time.Duration
	// StartTimeout bounds a restarted worker's wait to become ready
	// (10m); a spawn is also bounded by its context.
	StartTimeout time.Duration
	// RestartBackoff is the first wait before restarting a crashed worker
	// (1s); it doubles with each failure in a row up to MaxRestartBackoff
	// (30s).
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	// MaxRestartFailures is how many crashes or failed restarts in a row
	// make the supervisor give up and mark the worker failed (10). A
	// worker ready for StableAfter (1m) resets the count.
	MaxRestartFailures int
	StableAfter        time.Duration
	// HealthInterval is how often a ready worker's health is checked (5s);
	// UnhealthyAfter failed checks in a row (6) count as a crash, so a hung
	// worker is restarted like a dead one.
	HealthInterval time.Duration
	UnhealthyAfter int
	// Log receives the supervisor's own warnings.
	Log *slog.Logger
	// OnEvent, when set, is told of each lifecycle event (Event*) with the
	// worker's record at that moment. It must not block for long.
	OnEvent func(w api.Worker, event string)
}

func (c *Config) setDefaults() {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.StopGrace, 5*time.Second)
	def(&c.StartTimeout, 10*time.Minute)
	def(&c.RestartBackoff, time.Second)
	def(&c.MaxRestartBackoff, 30*time.Second)
	def(&c.StableAfter, time.Minute)
	def(&c.HealthInterval, 5*time.Second)
	if c.DefaultCtxSize <= 0 {
		c.DefaultCtxSize = 4096
	}
	if c.MaxRestartFailures <= 0 {
		c.MaxRestartFailures = 10
	}
	if c.UnhealthyAfter <= 0 {
		c.UnhealthyAfter = 6
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// SpawnRequest asks for one worker.
type SpawnRequest struct {
	ModelID string
	// ModelPath is the model file, from the hive's model catalog.
	ModelPath string
	// Backend is a catalog name.
	Backend string
	// GPUs become CUDA_VISIBLE_DEVICES; none leaves the hive's own.
	GPUs []int
	// CtxSize is the context size; 0 takes Config.DefaultCtxSize.
	CtxSize int
	// MaxConcurrent overrides the backend's parallelism (Parallel) for
	// this worker; 0 keeps it.
	MaxConcurrent int
}

// Supervisor runs one hive's workers. Its methods are safe for concurrent
// use. Run must be called for workers to be stopped with the hive.
type Supervisor struct {
	cfg      Config
	backends []api.Backend
	dir      string
	log      *slog.Logger
	client   *http.Client

	// ctx lives until Run has stopped every worker; the goroutines that
	// follow workers end with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// procs counts the goroutines reaping child processes: they end when
	// the processes do.
	procs sync.WaitGroup

	mu      sync.Mutex
	workers map[string]*worker
	closed  bool

	fileMu sync.Mutex
}

// New makes a supervisor, loads the catalog's defaults and settles the
// workers a previous run of the hive left behind: those whose process still
// runs and answers its health check are adopted, the others are killed (if
// anything of them is left) and forgotten.
func New(cfg Config) (*Supervisor, error) {
	cfg.setDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("workers: data dir is required")
	}
	bs := cfg.Backends
	if bs == nil {
		bs = DefaultCatalog()
	}
	bs, err := NormalizeCatalog(bs)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.DataDir, "workers")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("workers dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Supervisor{
		cfg: cfg, backends: bs, dir: dir, log: cfg.Log,
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}},
		ctx:    ctx, cancel: cancel,
		workers: map[string]*worker{},
	}
	s.recover()
	return s, nil
}

// Catalog lists the backends this hive can start.
func (s *Supervisor) Catalog() []api.Backend {
	out := make([]api.Backend, len(s.backends))
	for i, b := range s.backends {
		b.Command = slices.Clone(b.Command)
		out[i] = b
	}
	return out
}

func (s *Supervisor) backend(name string) (api.Backend, bool) {
	for _, b := range s.backends {
		if b.Name == name {
			return b, true
		}
	}
	return api.Backend{}, false
}

func (s *Supervisor) backendNames() string {
	names := make([]string, len(s.backends))
	for i, b := range s.backends {
		names[i] = b.Name
	}
	return strings.Join(names, ", ")
}

// Spawn starts a worker and waits until it answers its health check, or
// until ctx ends (the spawn timeout), or the process exits. Each line the
// worker writes meanwhile goes to log (which may be nil). On failure the
// worker's whole process group is killed and the error quotes its last
// output lines.
func (s *Supervisor) Spawn(ctx context.Context, req SpawnRequest, log func(line string)) (api.Worker, error) {
	b, ok := s.backend(req.Backend)
	if !ok {
		return api.Worker{}, fmt.Errorf("%w %q (this hive has: %s)", ErrUnknownBackend, req.Backend, s.backendNames())
	}
	if req.ModelPath == "" {
		return api.Worker{}, errors.New("spawn worker: no model file")
	}
	for _, g := range req.GPUs {
		if g < 0 {
			return api.Worker{}, fmt.Errorf("spawn worker: %d is not a GPU index", g)
		}
	}
	if req.CtxSize <= 0 {
		req.CtxSize = s.cfg.DefaultCtxSize
	}
	port, err := freePort(s.cfg.Host)
	if err != nil {
		return api.Worker{}, err
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return api.Worker{}, ErrClosed
	}
	id := s.newIDLocked()
	w := s.newWorker(id, b, req.ModelPath, log)
	w.rec = api.Worker{
		WorkerID: id, ModelID: req.ModelID, Backend: b.Name, Host: s.cfg.Host, Port: port,
		URL: "http://" + net.JoinHostPort(s.cfg.Host, strconv.Itoa(port)), State: api.WorkerStarting,
		GPUs: slices.Clone(req.GPUs), CtxSize: req.CtxSize, Parallel: cmp.Or(req.MaxConcurrent, Parallel(b)), StartedAt: time.Now().UTC(), Hive: s.cfg.Hive,
	}
	s.workers[id] = w
	startedAt := w.rec.StartedAt
	s.wg.Add(2)
	s.mu.Unlock()
	_ = os.Remove(w.logPath)
	go func() { defer s.wg.Done(); w.logs.run(s.ctx) }()
	go func() { defer s.wg.Done(); w.loop(nil) }()

	select {
	case err := <-w.started:
		if err != nil {
			<-w.done
			return api.Worker{}, err
		}
		w.logs.poll()
		w.logs.setSink(nil)
		return w.snapshot(), nil
	case <-w.done:
		select {
		case err := <-w.started:
			return api.Worker{}, err
		default:
		}
		return api.Worker{}, fmt.Errorf("worker %s was stopped before it was ready%s", id, lastLines(w.logs.lines()))
	case <-ctx.Done():
		w.requestStop()
		<-w.done
		return api.Worker{}, fmt.Errorf("worker %s (%s) not ready after %s: %w%s",
			id, b.Name, time.Since(startedAt).Round(100*time.Millisecond), context.Cause(ctx), lastLines(w.logs.lines()))
	}
}

func (s *Supervisor) newIDLocked() string {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		id := "w-" + hex.EncodeToString(b[:])
		if _, taken := s.workers[id]; !taken {
			return id
		}
	}
}

// List returns every worker the hive supervises, oldest first.
func (s *Supervisor) List() []api.Worker {
	s.mu.Lock()
	out := make([]api.Worker, 0, len(s.workers))
	for _, w := range s.workers {
		out = append(out, w.snapshotLocked())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].WorkerID < out[j].WorkerID
	})
	return out
}

// Get returns one worker's record, or ErrNotFound.
func (s *Supervisor) Get(id string) (api.Worker, error) {
	w, err := s.lookup(id)
	if err != nil {
		return api.Worker{}, err
	}
	return w.snapshot(), nil
}

func (s *Supervisor) lookup(id string) (*worker, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.workers[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return w, nil
}

// Logs returns a worker's last output lines (at most LogLines), oldest
// first; nil for an unknown worker.
func (s *Supervisor) Logs(id string) []string {
	w, err := s.lookup(id)
	if err != nil {
		return nil
	}
	w.logs.poll()
	return w.logs.lines()
}

// Stop stops a worker: SIGTERM to its process group, SIGKILL after the
// grace period. It returns once the worker is gone from the list, or with
// ctx's error if that takes longer than ctx allows (the stop goes on).
func (s *Supervisor) Stop(ctx context.Context, id string) error {
	w, err := s.lookup(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	w.rec.State = api.WorkerStopping
	s.mu.Unlock()
	w.requestStop()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop worker %s: %w", id, context.Cause(ctx))
	}
}

// Run supervises until ctx ends, then stops every worker (in parallel, each
// with its grace period) and returns once all are gone. Crash detection and
// restarts run from the moment a worker is spawned or adopted.
func (s *Supervisor) Run(ctx context.Context) error {
	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	ws := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.requestStop()
	}
	for _, w := range ws {
		<-w.done
	}
	s.cancel()
	s.wg.Wait()
	s.procs.Wait()
	return nil
}

func (s *Supervisor) event(w api.Worker, ev string) {
	if s.cfg.OnEvent != nil {
		s.cfg.OnEvent(w, ev)
	}
}

// probe asks a worker's health endpoint once and returns the HTTP status,
// or 0 when it did not answer.
func (s *Supervisor) probe(ctx context.Context, url string, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
