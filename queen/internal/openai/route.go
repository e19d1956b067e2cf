package openai

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
)

// Errors of routing, answered as 404 and 503.
var (
	errUnknownModel = errors.New("model not found")
	errNoCapacity   = errors.New("no capacity")
	// errBadSource: the request's download failed for its source.
	errBadSource = errors.New("download failed")
)

// router sees to it that a model has a worker: when no hive has a ready
// one, it starts one where the model is on disk. Which worker serves a
// request is the cluster's queue's to decide (jobs.Service): every queen
// places on the same records, so they balance as one.
type router struct {
	v    *view.View
	jobs *jobs.Service
	cfg  Config
	// leases holds each model's claim to start its worker, so that one
	// queen of the cluster starts it (store.LimitsBucket: its entries
	// expire, so a queen that dies holding one does not hold it for good).
	leases *store.Bucket

	mu       sync.Mutex
	spawning map[string]*spawn
	// took is how long a request of each model took, lately: what a
	// waiting request's estimate is made of.
	took map[string]time.Duration
}

// spawn is one worker start that every request for the model waits on.
type spawn struct {
	done chan struct{}
	hive string
	err  error
}

// Config tunes inference routing.
type Config struct {
	// Backend is the worker catalog entry used to start a worker on demand.
	Backend string
	// IdleTimeout stops workers started on demand after this long unused.
	IdleTimeout time.Duration
	// QueueDepth bounds the requests of one model waiting in the
	// cluster's queue (jobs.Service.InferQueueDepth keeps it); past it
	// callers get 429 with Retry-After.
	QueueDepth int
	// SpawnTimeout bounds how long a request waits for a worker to start.
	SpawnTimeout time.Duration
	// Aliases are model names clients may ask for, each mapped to the
	// model that serves it.
	Aliases map[string]string
}

func newRouter(v *view.View, j *jobs.Service, leases *store.Bucket, cfg Config) *router {
	return &router{v: v, jobs: j, cfg: cfg, leases: leases, spawning: map[string]*spawn{}, took: map[string]time.Duration{}}
}

// ready makes sure some hive has a ready worker for model, starting one
// if none has. source, when set, is downloaded as the model first if no
// hive holds it.
func (r *router) ready(ctx context.Context, model, source string, narrate func(string)) error {
	if r.readyHive(model) != "" {
		return nil
	}
	return r.startWorker(ctx, model, source, narrate)
}

// keepServed starts a worker for model again whenever none is ready while
// job waits for one: the workers that served the queue may stop or die
// under it.
func (r *router) keepServed(ctx context.Context, job, model string) {
	for r.v.Waits(job) && ctx.Err() == nil {
		if err := r.ready(ctx, model, "", func(string) {}); err != nil && ctx.Err() == nil {
			return // the job waits until its deadline, which ends it
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// readyHive is a hive with a ready worker for model, "" if none.
func (r *router) readyHive(model string) string {
	found := ""
	r.v.EachHive(func(h *api.Hive) {
		for _, w := range h.Workers {
			if found == "" && w.ModelID == model && w.State == api.WorkerReady {
				found = h.ID
			}
		}
	})
	return found
}

// observe notes how long a request of model took.
func (r *router) observe(model string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.took[model]; ok {
		d = (3*old + d) / 4
	}
	r.took[model] = d
}

// eta estimates the wait of a request at position pos in model's queue:
// the requests ahead, and itself, served by the ready workers' places at
// the pace requests lately took. 0 when there is no pace yet.
func (r *router) eta(model string, pos int) time.Duration {
	r.mu.Lock()
	took := r.took[model]
	r.mu.Unlock()
	places := 0
	r.v.EachHive(func(h *api.Hive) {
		for _, w := range h.Workers {
			if w.ModelID == model && w.State == api.WorkerReady {
				places += max(w.Parallel, 1)
			}
		}
	})
	if took == 0 || places == 0 {
		return 0
	}
	rounds := (pos + places - 1) / places
	return time.Duration(rounds) * took
}

// startWorker starts a worker for model where it is on disk, once per model
// however many requests wait, and returns when the worker is ready and the
// hive's heartbeat shows it.
func (r *router) startWorker(ctx context.Context, model, source string, narrate func(string)) error {
	r.mu.Lock()
	s, running := r.spawning[model]
	if !running {
		s = &spawn{done: make(chan struct{})}
		r.spawning[model] = s
		go r.runSpawn(model, source, s)
	}
	r.mu.Unlock()
	narrate(fmt.Sprintf("no ready worker serves %s; starting one", model))
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if s.err != nil {
		return s.err
	}
	narrate(fmt.Sprintf("worker for %s ready on hive %s", model, s.hive))
	return nil
}

func (r *router) runSpawn(model, source string, s *spawn) {
	defer func() {
		r.mu.Lock()
		delete(r.spawning, model)
		r.mu.Unlock()
		close(s.done)
	}()
	// One start per model for the cluster: a queen that sees another's
	// start under way, or loses the claim to one, waits for its worker.
	_, starting := r.startingOn(model)
	release, claimed := r.claimStart(model)
	if starting || !claimed {
		if claimed {
			release() // a start of an operator's is under way: no claim to hold
		}
		if r.awaitOther(model) == "" {
			s.err = fmt.Errorf("%w: the worker another start brought up for %s is not ready (its worker_spawn job says why)", errNoCapacity, model)
		}
		return
	}
	defer release()
	hive := r.holder(model)
	if hive == "" && source != "" {
		// A download may take long; it gets the job's own timeout.
		dl, err := r.runJob(context.Background(), api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: source, ModelID: model}})
		if err != nil {
			cause := errNoCapacity
			if strings.HasPrefix(dl.Error, api.BadSource) {
				cause = errBadSource
			}
			// Every request waiting for the model gets this: the source's
			// secrets (a signed URL's) stay out of it.
			s.err = fmt.Errorf("%w: download %s as %s: %v", cause, api.RedactSource(source), model, err)
			return
		}
		hive = r.await(time.Minute, func() string { return r.holderOn(model, dl.Hive) })
	}
	if hive == "" {
		s.err = fmt.Errorf("%w: no hive serves or holds model %s", errUnknownModel, model)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.SpawnTimeout)
	defer cancel()
	s.hive = hive
	if _, err := r.runJob(ctx, api.JobRequest{
		Operation: api.OpWorkerSpawn, Hive: hive, TimeoutS: r.cfg.SpawnTimeout.Seconds(),
		Payload: &api.WorkerSpawn{ModelID: model, Backend: r.cfg.Backend, IdleTimeoutS: r.cfg.IdleTimeout.Seconds()},
	}); err != nil {
		s.err = fmt.Errorf("%w: start a worker for %s on hive %s: %v", errNoCapacity, model, hive, err)
		return
	}
	// Wait for the heartbeat that shows the worker ready.
	if r.await(time.Until(deadlineOf(ctx)), func() string { return r.readyHive(model) }) == "" {
		s.err = fmt.Errorf("%w: worker for %s started but its hive has not reported it", errNoCapacity, model)
	}
}

// otherStartGrace is how long a start that is over may take to show its
// worker in a hive's heartbeat: the queen that made it waited for that
// heartbeat before giving its claim back.
const otherStartGrace = 3 * time.Second

// awaitOther waits for the worker another queen's start (or an operator's
// worker_spawn) brings up, and returns its hive: "" when none is ready
// once that start is over, or after SpawnTimeout. A start that failed
// fails the requests waiting for it on every queen at once.
func (r *router) awaitOther(model string) string {
	deadline := time.Now().Add(r.cfg.SpawnTimeout)
	var over, looked time.Time
	for {
		if h := r.readyHive(model); h != "" {
			return h
		}
		// Whether the start goes on costs a read of NATS and of the jobs
		// under way: once a second.
		if time.Since(looked) >= time.Second {
			looked = time.Now()
			switch {
			case r.bringingUp(model) || r.claimHeld(model):
				over = time.Time{}
			case over.IsZero():
				over = time.Now()
			}
		}
		if (!over.IsZero() && time.Since(over) > otherStartGrace) || time.Now().After(deadline) {
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bringingUp reports whether any queen's job is bringing a worker for
// model up: its download (a claim may outlive its lease during a long
// one) or its worker_spawn.
func (r *router) bringingUp(model string) bool {
	for _, j := range r.v.Underway() {
		if (j.Operation == api.OpWorkerSpawn || j.Operation == api.OpModelDownload) && j.Request.Model() == model {
			return true
		}
	}
	return false
}

// claimHeld reports whether a queen holds model's claim to start its
// worker; when NATS does not answer, it says so.
func (r *router) claimHeld(model string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _, err := r.leases.Get(ctx, "spawn."+model)
	return !errors.Is(err, store.ErrNoKey)
}

// claimStart takes model's claim to start a worker, reporting false when
// another queen holds it; release gives it back. Without NATS to answer,
// the queen goes ahead alone rather than fail the request.
func (r *router) claimStart(model string) (release func(), ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	key := "spawn." + model
	if _, err := r.leases.Create(ctx, key, []byte(time.Now().UTC().Format(time.RFC3339Nano))); errors.Is(err, store.ErrExists) {
		return nil, false
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = r.leases.Purge(ctx, key)
	}, true
}

// startingOn is the hive where a worker for model is being started, by
// any queen's worker_spawn job.
func (r *router) startingOn(model string) (string, bool) {
	for _, j := range r.v.Underway() {
		if j.Operation == api.OpWorkerSpawn && j.Request.Model() == model {
			return j.Hive, true
		}
	}
	return "", false
}

// runJob creates a job and waits until it ends; an end other than done is
// an error saying why.
func (r *router) runJob(ctx context.Context, req api.JobRequest) (api.Job, error) {
	j, _, err := r.jobs.Create(ctx, req, "", "")
	if err != nil {
		return j, err
	}
	for {
		rec, err := r.jobs.Get(ctx, j.JobID)
		switch {
		case err != nil:
			return rec, err
		case rec.State == api.StateDone:
			return rec, nil
		case api.Terminal(rec.State):
			return rec, fmt.Errorf("%s job %s %s: %s", req.Operation, j.JobID, rec.State, rec.Error)
		}
		select {
		case <-ctx.Done():
			return rec, fmt.Errorf("%s job %s did not end in time", req.Operation, j.JobID)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// await polls find until it returns a hive id or within passes.
func (r *router) await(within time.Duration, find func() string) string {
	deadline := time.Now().Add(within)
	for {
		if h := find(); h != "" || time.Now().After(deadline) {
			return h
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// holderOn is hive if its heartbeat lists model, "" otherwise.
func (r *router) holderOn(model, hive string) string {
	h, ok := r.v.Hive(hive)
	if !ok {
		return ""
	}
	for _, m := range h.Models {
		if m.ModelID == model {
			return hive
		}
	}
	return ""
}

// holder is the hive that holds model on disk with the most free GPU
// memory against the model's estimate; hives without GPUs qualify for
// models without an estimate.
func (r *router) holder(model string) string {
	best, bestFree := "", int64(-1)
	for _, h := range r.v.Hives() {
		for _, m := range h.Models {
			if m.ModelID != model {
				continue
			}
			var free uint64
			for _, g := range h.Inventory.GPUs {
				free += g.MemFreeBytes
			}
			if len(h.Inventory.GPUs) > 0 && m.VRAMEstimateBytes > free {
				continue
			}
			if int64(free) > bestFree {
				best, bestFree = h.ID, int64(free)
			}
		}
	}
	return best
}

// models lists what can be asked for: models served by ready workers, then
// models on disk that a worker could be started for.
func (r *router) models() []api.ModelEntry {
	seen := map[string]bool{}
	var out []api.ModelEntry
	add := func(id string, created time.Time) {
		if !seen[id] {
			seen[id] = true
			out = append(out, api.ModelEntry{ID: id, Object: "model", Created: created.Unix(), OwnedBy: "rbee"})
		}
	}
	hives := r.v.Hives()
	for _, h := range hives {
		for _, w := range h.Workers {
			if w.State == api.WorkerReady {
				add(w.ModelID, w.StartedAt)
			}
		}
	}
	for _, h := range hives {
		for _, m := range h.Models {
			add(m.ModelID, m.CreatedAt)
		}
	}
	// An alias is listed where its model is.
	for _, m := range out {
		for alias, target := range r.cfg.Aliases {
			if target == m.ID && !seen[alias] {
				seen[alias] = true
				out = append(out, api.ModelEntry{ID: alias, Object: "model", Created: m.Created, OwnedBy: "rbee"})
			}
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out
}
