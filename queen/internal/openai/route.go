package openai

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
)

// Errors of routing, answered as 404 and 503.
var (
	errUnknownModel = errors.New("model not found")
	errNoCapacity   = errors.New("no capacity")
)

// router places inference: on the hive with a ready worker for the model
// and the fewest requests in flight from this queen; failing that, it
// starts a worker on a hive that holds the model.
type router struct {
	v    *view.View
	jobs *jobs.Service
	cfg  Config

	mu       sync.Mutex
	inflight map[string]int // per hive
	queued   map[string]int // per model
	spawning map[string]*spawn
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
	// QueueDepth bounds the requests of one model waiting or running on
	// this queen; past it callers get 503 with Retry-After.
	QueueDepth int
	// SpawnTimeout bounds how long a request waits for a worker to start.
	SpawnTimeout time.Duration
	// Aliases are model names clients may ask for, each mapped to the
	// model that serves it.
	Aliases map[string]string
}

func newRouter(v *view.View, j *jobs.Service, cfg Config) *router {
	return &router{v: v, jobs: j, cfg: cfg, inflight: map[string]int{}, queued: map[string]int{}, spawning: map[string]*spawn{}}
}

// admit counts a request against its model's queue bound.
func (r *router) admit(model string) (func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queued[model] >= r.cfg.QueueDepth {
		return nil, fmt.Errorf("%w: %d requests for %s are already waiting or running", errNoCapacity, r.queued[model], model)
	}
	r.queued[model]++
	return func() {
		r.mu.Lock()
		r.queued[model]--
		r.mu.Unlock()
	}, nil
}

// place returns the hive to run on, counting the request as in flight
// there until release is called. source, when set, is downloaded as the
// model first if no hive holds it.
func (r *router) place(ctx context.Context, model, source string, narrate func(string)) (hive string, release func(), err error) {
	for {
		if h := r.readyHive(model); h != "" {
			r.mu.Lock()
			r.inflight[h]++
			r.mu.Unlock()
			return h, func() {
				r.mu.Lock()
				r.inflight[h]--
				r.mu.Unlock()
			}, nil
		}
		if err := r.startWorker(ctx, model, source, narrate); err != nil {
			return "", nil, err
		}
	}
}

// readyHive is the hive with a ready worker for model and the fewest
// requests in flight.
func (r *router) readyHive(model string) string {
	var cands []string
	for _, h := range r.v.Hives() {
		for _, w := range h.Workers {
			if w.ModelID == model && w.State == api.WorkerReady {
				cands = append(cands, h.ID)
				break
			}
		}
	}
	if len(cands) == 0 {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	sort.SliceStable(cands, func(i, k int) bool { return r.inflight[cands[i]] < r.inflight[cands[k]] })
	return cands[0]
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
	hive := r.holder(model)
	if hive == "" && source != "" {
		// A download may take long; it gets the job's own timeout.
		dl, err := r.runJob(context.Background(), api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: source, ModelID: model}})
		if err != nil {
			s.err = fmt.Errorf("%w: download %s as %s: %v", errNoCapacity, source, model, err)
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
