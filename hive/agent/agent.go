// Package agent is the hive: it heartbeats its inventory, pulls jobs from
// its work queue only when a slot is free, runs them and narrates every step
// onto the job's JetStream subjects. It is a package rather than a main so
// that the queen can run a hive in-process (--local-hive) and tests can boot
// one on a random port.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/hive/internal/inventory"
	"rbee.dev/hive/internal/models"
	"rbee.dev/hive/internal/workers"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// Version is stamped into heartbeats; release builds set it with -ldflags.
var Version = "dev"

// Config is what a hive needs to run.
type Config struct {
	ID      string
	DataDir string
	// Slots bounds the jobs other than inference that run at once.
	Slots int
	// InferSlots bounds the inference jobs the hive holds at once, running
	// or waiting for a worker; they do not take Slots, and each worker's
	// own parallelism limits what runs on it.
	InferSlots int
	AllowRun   bool
	// RunAllow, if non-empty, lists the only executables run may start:
	// absolute paths, or bare names resolved through PATH.
	RunAllow []string
	Labels   map[string]string
	// MetricsAddr is advertised in heartbeats so Prometheus can find it.
	MetricsAddr string
	// MaxEvents caps the narration events of one job (0: no cap).
	MaxEvents uint64
	// AckWait is how long the work queue waits for a sign of life before
	// redelivering a job; the hive signals progress at a third of it.
	AckWait time.Duration
	// ConfigFile is the hive's JSON config file holding the worker catalog
	// ("backends"); empty means the built-in catalog.
	ConfigFile string
	// MaxModelBytes caps the size of one downloaded model file.
	MaxModelBytes int64
	// MinFreeDisk is the space downloads leave free on the disk holding
	// the models directory.
	MinFreeDisk int64
	// Simulate, when set, replaces every operation's work with a pause
	// this long: the hive still heartbeats, pulls, narrates each job's
	// start and end and answers cancels (benchmarks of many hives).
	Simulate time.Duration
}

// DefaultConfig returns the settings a hive starts from.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		ID:         subjectSafe(host),
		DataDir:    "data/hive",
		Slots:      4,
		InferSlots: 64,
		MaxEvents:  10_000_000,
		AckWait:    30 * time.Second,

		MaxModelBytes: models.DefaultMaxModelBytes,
		MinFreeDisk:   models.DefaultMinFreeDisk,
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs *multierror.Error
	if !bus.ValidToken(c.ID) {
		errs = multierror.Append(errs, fmt.Errorf("hive id %q must be 1-64 letters, digits, '-' or '_'", c.ID))
	}
	if c.DataDir == "" {
		errs = multierror.Append(errs, errors.New("data dir is required"))
	}
	if c.Slots < 1 || c.Slots > 1024 {
		errs = multierror.Append(errs, fmt.Errorf("slots must be between 1 and 1024, not %d", c.Slots))
	}
	if c.InferSlots < 1 || c.InferSlots > 3072 {
		errs = multierror.Append(errs, fmt.Errorf("infer slots must be between 1 and 3072, not %d", c.InferSlots))
	}
	for k := range c.Labels {
		if !bus.ValidToken(k) {
			errs = multierror.Append(errs, fmt.Errorf("label key %q is not valid", k))
		}
	}
	if c.AckWait < time.Second {
		errs = multierror.Append(errs, errors.New("ack wait must be at least 1s"))
	}
	if c.MaxModelBytes <= 0 {
		errs = multierror.Append(errs, fmt.Errorf("max-model-bytes must be above 0, not %d", c.MaxModelBytes))
	}
	if c.Simulate < 0 {
		errs = multierror.Append(errs, fmt.Errorf("simulated work must not be negative, not %s", c.Simulate))
	}
	if c.MinFreeDisk < 0 {
		errs = multierror.Append(errs, fmt.Errorf("min-free-disk must not be negative, not %d", c.MinFreeDisk))
	}
	return errs.ErrorOrNil()
}

// Agent is one running hive.
type Agent struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	smi     inventory.SMI
	started time.Time
	// models is the model catalog under <data dir>/models.
	models *models.Catalog
	// workers supervises the inference workers this hive started.
	workers *workers.Supervisor
	usage   *usage
	changed chan struct{}

	m *hiveMetrics

	// jobSlots and inferSlots hold a token for each job of their kind in
	// hand, and one for the message being pulled.
	jobSlots, inferSlots chan struct{}

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
	// yieldedJobs are the generations this hive handed back to move.
	yieldedJobs yielded
	// inferRunning counts the inference jobs among running.
	inferRunning int
	// beat is the last heartbeat, served to metrics scrapes.
	lastBeat api.Hive
}

// New makes a hive on an open NATS connection, which it does not close.
func New(cfg Config, nc *nats.Conn, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Acknowledgements lost with a dying NATS node must time out, so the
	// narration publisher notices and resends.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "work"), 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	mo := models.EnvOptions(os.Getenv)
	mo.MaxModelBytes, mo.MinFreeDisk = cfg.MaxModelBytes, cfg.MinFreeDisk
	catalog, err := models.Open(cfg.DataDir, mo)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, nc: nc, js: js, models: catalog,
		log:     log.With("component", "hive", "hive_id", cfg.ID),
		smi:     inventory.FromEnvSMI(),
		started: time.Now().UTC(),
		running: map[string]context.CancelCauseFunc{},
		usage:   newUsage(),
		changed: make(chan struct{}, 1),

		jobSlots:   make(chan struct{}, cfg.Slots),
		inferSlots: make(chan struct{}, cfg.InferSlots),
	}
	a.m = newHiveMetrics(a)
	if a.workers, err = newWorkers(a); err != nil {
		return nil, err
	}
	return a, nil
}

// Run serves until ctx ends, then stops taking jobs, ends the running ones
// and removes its heartbeat so queens see it leave at once.
func (a *Agent) Run(ctx context.Context) error {
	// Workers are stopped when Run returns, whatever the reason: after the
	// jobs, so a spawn in progress is cancelled rather than cut short.
	wctx, stopWorkers := context.WithCancel(context.Background())
	workersDone := make(chan struct{})
	go func() { defer close(workersDone); _ = a.workers.Run(wctx) }()
	go a.stopIdleWorkers(wctx)
	defer func() { stopWorkers(); <-workersDone }()
	kv, err := a.attach(ctx)
	if err != nil {
		return err
	}
	sub, err := bus.ServeCancel(a.nc, a.cfg.ID, a.onCancel)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.heartbeat(ctx, kv) }()
	var jobs sync.WaitGroup
	// The queen makes the work-queue consumer once it sees the heartbeat.
	if cons, err := a.dispatchConsumer(ctx); err == nil {
		// One pull loop per job slot, as many requests outstanding as jobs
		// could start: a single loop would wait a round trip per job. While
		// the hive is idle they keep one request out between them.
		gate := newPullGate(a.cfg.Slots)
		wg.Add(1)
		go func() { defer wg.Done(); gate.follow(ctx, a.nc) }()
		for range a.cfg.Slots {
			wg.Add(1)
			go func() { defer wg.Done(); a.pull(ctx, cons, gate, &jobs) }()
		}
		a.log.Info("hive ready", "slots", a.cfg.Slots, "infer_slots", a.cfg.InferSlots, "allow_run", a.cfg.AllowRun)
	}
	<-ctx.Done()

	// The puller is done before the jobs are stopped and counted, so no
	// job it pulled escapes either.
	wg.Wait()
	a.stopAll(errHiveStopping)
	jobs.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := kv.Delete(dctx, a.cfg.ID); err != nil {
		a.log.Warn("remove heartbeat", "err", err)
	}
	return nil
}

// attach waits for the queen to have created the streams and buckets.
func (a *Agent) attach(ctx context.Context) (jetstream.KeyValue, error) {
	backoff := 100 * time.Millisecond
	for {
		kv, err := a.js.KeyValue(ctx, bus.HivesBucket)
		if err == nil {
			return kv, nil
		}
		a.log.Info("waiting for the queen's streams", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// dispatchConsumer waits for this hive's work-queue consumer. Queens make
// it when they see the hive's heartbeat: a hive may look it up, pull from
// it and ack, but not choose what it reads.
func (a *Agent) dispatchConsumer(ctx context.Context) (jetstream.Consumer, error) {
	backoff := 20 * time.Millisecond
	for waited := time.Duration(0); ; waited += backoff {
		cons, err := a.js.Consumer(ctx, bus.DispatchStream, bus.DispatchConsumer(a.cfg.ID))
		if err == nil {
			return cons, nil
		}
		if waited > 5*time.Second {
			a.log.Info("waiting for a queen to make this hive's work queue", "err", err)
			waited = 0
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

func subjectSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) == 0 {
		return "hive"
	}
	return string(b)
}

// info is the hive's current heartbeat.
func (a *Agent) info(ctx context.Context) api.Hive {
	a.mu.Lock()
	running := make([]string, 0, len(a.running))
	for id := range a.running {
		running = append(running, id)
	}
	inferRunning := a.inferRunning
	a.mu.Unlock()
	h := api.Hive{
		ID: a.cfg.ID, Version: Version, StartedAt: a.started, HeartbeatAt: time.Now().UTC(),
		Labels: a.cfg.Labels, AllowRun: a.cfg.AllowRun,
		Slots: a.cfg.Slots, SlotsFree: max(0, a.cfg.Slots-(len(running)-inferRunning)), Running: running,
		InferSlots: a.cfg.InferSlots, InferRunning: inferRunning,
		AckWaitS:    a.cfg.AckWait.Seconds(),
		MetricsAddr: a.cfg.MetricsAddr,
		Inventory:   inventory.Collect(ctx, a.cfg.DataDir, a.smi),
		Workers:     a.workers.List(),
		Yielded:     a.yieldedList(),
	}
	if ms, err := a.models.List(); err == nil {
		h.Models = ms
	}
	if h.Models == nil {
		h.Models = []api.Model{}
	}
	if h.Workers == nil {
		h.Workers = []api.Worker{}
	}
	a.mu.Lock()
	a.lastBeat = h
	a.mu.Unlock()
	return h
}

// last is the most recent heartbeat.
func (a *Agent) last() api.Hive {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastBeat
}

func (a *Agent) slotsFree() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return max(0, a.cfg.Slots-(len(a.running)-a.inferRunning))
}
