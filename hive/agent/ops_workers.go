package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"rbee.dev/hive/internal/workers"
	"rbee.dev/shared/api"
)

// newWorkers makes the hive's worker supervisor, with the catalog from the
// hive's config file, logging every worker lifecycle event. Workers a
// previous run of this hive left behind are adopted or cleaned up here.
func newWorkers(a *Agent) (*workers.Supervisor, error) {
	cfg, log, m := a.cfg, a.log, a.m
	backends, err := workers.LoadCatalog(cfg.ConfigFile)
	if err != nil {
		return nil, err
	}
	return workers.New(workers.Config{
		DataDir: cfg.DataDir, Hive: cfg.ID, Backends: backends, Log: log,
		OnEvent: func(w api.Worker, ev string) {
			switch ev {
			case workers.EventReady, workers.EventAdopted:
				m.knowWorker(w.ModelID)
			case workers.EventRestarted:
				m.workerRestarts.WithLabelValues(w.ModelID).Inc()
			}
			a.beatSoon()
			level := slog.LevelInfo
			switch ev {
			case workers.EventCrashed, workers.EventRestartFailed, workers.EventFailed, workers.EventDropped:
				level = slog.LevelWarn
			}
			log.Log(context.Background(), level, "worker "+ev,
				"worker_id", w.WorkerID, "model_id", w.ModelID, "backend", w.Backend, "state", w.State,
				"pid", w.PID, "url", w.URL, "restarts", w.Restarts, "reason", w.Error)
		},
	})
}

// Workers lists the workers this hive supervises.
func (a *Agent) Workers() []api.Worker {
	return a.workers.List()
}

// workerCatalogList answers worker_catalog_list with the backends this hive
// can start.
func (j *job) workerCatalogList() error {
	bs := j.a.workers.Catalog()
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.Name
	}
	return j.p.Data(api.Event{
		Actor: "workers", Action: "worker_catalog_list", Data: bs,
		Message: fmt.Sprintf("%d worker backends on hive %s: %s", len(bs), j.a.cfg.ID, strings.Join(names, ", ")),
	})
}

// workerSpawn starts a worker for a model of the hive's catalog, narrating
// its startup output, and answers with its record once it is ready. The
// job's deadline is the spawn timeout.
func (j *job) workerSpawn(req *api.WorkerSpawn) error {
	path, err := j.a.models.Path(req.ModelID)
	if err != nil {
		return j.modelError(req.ModelID, err)
	}
	on := ""
	if len(req.GPUs) > 0 {
		on = fmt.Sprintf(" on GPUs %v", req.GPUs)
	}
	_ = j.p.Emit(api.Event{Actor: "workers", Action: "spawning",
		Message: fmt.Sprintf("starting a %s worker for model %s%s", req.Backend, req.ModelID, on)})
	w, err := j.a.workers.Spawn(j.ctx, workers.SpawnRequest{
		ModelID: req.ModelID, ModelPath: path, Backend: req.Backend, GPUs: req.GPUs, CtxSize: req.CtxSize,
		MaxConcurrent: req.MaxConcurrent,
	}, func(line string) {
		_ = j.p.Emit(api.Event{Actor: "worker", Action: "log", Message: line})
	})
	if err != nil {
		return j.workerError("", err)
	}
	if req.IdleTimeoutS > 0 {
		j.a.setIdleTimeout(w.WorkerID, time.Duration(req.IdleTimeoutS*float64(time.Second)))
	}
	return j.p.Data(api.Event{
		Actor: "workers", Action: "worker_spawn", Data: w,
		Message: fmt.Sprintf("worker %s ready: %s serving %s at %s", w.WorkerID, w.Backend, w.ModelID, w.URL),
	})
}

// workerList answers worker_list with every worker of the hive.
func (j *job) workerList() error {
	ws := j.a.workers.List()
	return j.p.Data(api.Event{
		Actor: "workers", Action: "worker_list", Data: ws,
		Message: fmt.Sprintf("%d workers on hive %s", len(ws), j.a.cfg.ID),
	})
}

// workerGet answers worker_get with one worker's record.
func (j *job) workerGet(req *api.WorkerRef) error {
	w, err := j.a.workers.Get(req.WorkerID)
	if err != nil {
		return j.workerError(req.WorkerID, err)
	}
	return j.p.Data(api.Event{
		Actor: "workers", Action: "worker_get", Data: w,
		Message: fmt.Sprintf("worker %s: %s %s, %s at %s, %d restarts", w.WorkerID, w.Backend, w.ModelID, w.State, w.URL, w.Restarts),
	})
}

// workerStop stops a worker and answers with its last record.
func (j *job) workerStop(req *api.WorkerRef) error {
	id := req.WorkerID
	w, err := j.a.workers.Get(id)
	if err != nil {
		return j.workerError(id, err)
	}
	_ = j.p.Emit(api.Event{Actor: "workers", Action: "stopping", Message: fmt.Sprintf("stopping worker %s (pid %d)", id, w.PID)})
	if err := j.a.workers.Stop(j.ctx, id); err != nil {
		return j.workerError(id, err)
	}
	w.State = api.WorkerStopped
	return j.p.Data(api.Event{
		Actor: "workers", Action: "worker_stop", Data: w,
		Message: fmt.Sprintf("worker %s stopped", id),
	})
}

// workerError names the hive in supervisor errors, since the job's reader
// may not know which hive answered.
func (j *job) workerError(id string, err error) error {
	if errors.Is(err, workers.ErrNotFound) {
		return fmt.Errorf("worker %s not found on hive %s", id, j.a.cfg.ID)
	}
	return fmt.Errorf("hive %s: %w", j.a.cfg.ID, err)
}
