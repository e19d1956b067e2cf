package workers

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"rbee.dev/shared/api"
)

// worker is one supervised worker. One goroutine (loop) owns its process
// from start to stop; the other methods only read its record or ask it to
// stop.
type worker struct {
	s         *Supervisor
	id        string
	backend   api.Backend
	modelPath string
	logPath   string
	logs      *tailer

	// ctx ends when the worker is asked to stop, or when the supervisor
	// ends without stopping it (then s.ctx has ended too).
	ctx  context.Context
	stop context.CancelFunc
	// started carries the result of a spawn's first start.
	started chan error
	// done is closed when loop returns.
	done chan struct{}

	// Guarded by s.mu.
	rec   api.Worker
	pgid  int
	start uint64
	argv  []string
}

func (s *Supervisor) newWorker(id string, b api.Backend, modelPath string, sink func(string)) *worker {
	ctx, cancel := context.WithCancel(s.ctx)
	logPath := filepath.Join(s.dir, id+".log")
	return &worker{
		s: s, id: id, backend: b, modelPath: modelPath, logPath: logPath,
		logs: newTailer(logPath, sink),
		ctx:  ctx, stop: cancel,
		started: make(chan error, 1),
		done:    make(chan struct{}),
	}
}

func (w *worker) requestStop() { w.stop() }

// loop runs the worker: start it (unless in is an adopted process), wait
// until it is ready, watch it, restart it with backoff when it crashes, and
// stop it when asked. A spawn's first failure is reported on started and
// ends the worker; later failures are retried.
func (w *worker) loop(in *instance) {
	defer close(w.done)
	s := w.s
	spawning := in == nil
	failures := 0
	for {
		if in == nil {
			var err error
			in, err = w.startInstance()
			if err == nil {
				err = w.awaitReady(in)
			}
			if err != nil {
				if w.ctx.Err() != nil {
					w.finish(in)
					return
				}
				s.terminate(in, w.groupID())
				if spawning {
					w.logs.close()
					err = fmt.Errorf("%w%s", err, lastLines(w.logs.lines()))
					w.remove(api.WorkerFailed, err.Error())
					w.started <- err
					return
				}
				failures++
				s.event(w.update(func(r *api.Worker) { r.Error = err.Error() }), EventRestartFailed)
				w.repickPort()
				in = nil
				if !w.pause(failures) {
					w.finish(nil)
					return
				}
				continue
			}
			rec := w.update(func(r *api.Worker) { r.State = api.WorkerReady })
			if spawning {
				spawning = false
				s.event(rec, EventReady)
				w.started <- nil
			} else {
				s.event(rec, EventRestarted)
			}
		}

		readyAt := time.Now()
		crash := w.watch(in)
		if crash == nil {
			w.finish(in)
			return
		}
		s.terminate(in, w.groupID())
		in = nil
		if time.Since(readyAt) >= s.cfg.StableAfter {
			failures = 0
		}
		failures++
		s.event(w.update(func(r *api.Worker) {
			r.State, r.Restarts, r.Error = api.WorkerRestarting, r.Restarts+1, crash.Error()
		}), EventCrashed)
		if !w.pause(failures) {
			w.finish(nil)
			return
		}
	}
}

// startInstance starts the worker's process on its current port.
func (w *worker) startInstance() (*instance, error) {
	w.s.mu.Lock()
	v := vars{model: w.modelPath, modelID: w.rec.ModelID, host: w.rec.Host, port: w.rec.Port, ctx: w.rec.CtxSize, gpus: w.rec.GPUs}
	gpus := slices.Clone(w.rec.GPUs)
	w.s.mu.Unlock()
	argv := expand(w.backend.Command, v)
	in, err := w.s.startProcess(argv, workerEnv(gpus), w.logPath)
	if err != nil {
		return nil, err
	}
	start, _ := procInfo(in.pid)
	w.s.mu.Lock()
	w.rec.PID, w.pgid, w.start, w.argv = in.pid, in.pid, start, argv
	w.s.mu.Unlock()
	w.s.persist()
	return in, nil
}

// awaitReady polls the health endpoint until it answers 200 (503 means
// still loading), the process exits, the start timeout passes or the
// worker is stopped.
func (w *worker) awaitReady(in *instance) error {
	s := w.s
	url := w.healthURL()
	timeout := time.NewTimer(s.cfg.StartTimeout)
	defer timeout.Stop()
	delay := 50 * time.Millisecond
	for {
		if s.probe(w.ctx, url, 2*time.Second) == 200 {
			return nil
		}
		select {
		case <-w.ctx.Done():
			return w.ctx.Err()
		case <-in.exited:
			return fmt.Errorf("worker %s (%s) exited while starting: %s", w.id, w.backend.Name, describeExit(in.err))
		case <-timeout.C:
			return fmt.Errorf("worker %s (%s) not ready after %s", w.id, w.backend.Name, s.cfg.StartTimeout)
		case <-time.After(delay):
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

// watch follows a ready worker until it is stopped (nil) or crashes: its
// process exits, or its health check fails UnhealthyAfter times in a row.
func (w *worker) watch(in *instance) error {
	s := w.s
	url := w.healthURL()
	t := time.NewTicker(s.cfg.HealthInterval)
	defer t.Stop()
	bad := 0
	for {
		select {
		case <-w.ctx.Done():
			return nil
		case <-in.exited:
			return fmt.Errorf("worker process %d %s", in.pid, describeExit(in.err))
		case <-t.C:
			if s.probe(w.ctx, url, min(s.cfg.HealthInterval, 5*time.Second)) == 200 {
				bad = 0
				continue
			}
			if w.ctx.Err() != nil {
				return nil
			}
			if bad++; bad >= s.cfg.UnhealthyAfter {
				return fmt.Errorf("worker %s did not answer %d health checks in a row", w.id, bad)
			}
		}
	}
}

// pause waits before the next restart: RestartBackoff doubled per failure
// in a row, up to MaxRestartBackoff. Past MaxRestartFailures it marks the
// worker failed and waits for it to be stopped. It returns false when the
// worker is to end.
func (w *worker) pause(failures int) bool {
	s := w.s
	if failures > s.cfg.MaxRestartFailures {
		s.event(w.update(func(r *api.Worker) {
			r.State = api.WorkerFailed
			r.Error = fmt.Sprintf("gave up after %d failures in a row; last: %s", failures, r.Error)
		}), EventFailed)
		<-w.ctx.Done()
		return false
	}
	d := s.cfg.RestartBackoff
	for i := 1; i < failures && d < s.cfg.MaxRestartBackoff; i++ {
		d *= 2
	}
	t := time.NewTimer(min(d, s.cfg.MaxRestartBackoff))
	defer t.Stop()
	select {
	case <-w.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// finish ends the worker once it was asked to stop. When the supervisor was
// abandoned instead (its context ended without Run stopping the workers,
// which only tests do to stand in for a crashed hive), the process and its
// record are left as they are, for the next supervisor to find.
func (w *worker) finish(in *instance) {
	if w.s.ctx.Err() != nil {
		return
	}
	w.s.terminate(in, w.groupID())
	w.logs.close()
	w.s.event(w.remove(api.WorkerStopped, ""), EventStopped)
}

// remove takes the worker out of the list and the state file, and deletes
// its log (the last lines stay in memory for the caller).
func (w *worker) remove(state, reason string) api.Worker {
	s := w.s
	s.mu.Lock()
	delete(s.workers, w.id)
	w.rec.State = state
	if reason != "" {
		w.rec.Error = reason
	}
	rec := w.snapshotLocked()
	s.mu.Unlock()
	s.persist()
	_ = os.Remove(w.logPath)
	return rec
}

// update changes the record, saves the state file and returns the new record.
func (w *worker) update(f func(*api.Worker)) api.Worker {
	w.s.mu.Lock()
	f(&w.rec)
	rec := w.snapshotLocked()
	w.s.mu.Unlock()
	w.s.persist()
	return rec
}

// repickPort moves the worker to a fresh port after a failed start: the
// old one may have been taken by another process meanwhile.
func (w *worker) repickPort() {
	p, err := freePort(w.s.cfg.Host)
	if err != nil {
		return
	}
	w.s.mu.Lock()
	w.rec.Port = p
	w.rec.URL = "http://" + net.JoinHostPort(w.rec.Host, strconv.Itoa(p))
	w.s.mu.Unlock()
}

func (w *worker) healthURL() string {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.rec.URL + w.backend.HealthPath
}

func (w *worker) groupID() int {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.pgid
}

func (w *worker) snapshot() api.Worker {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.snapshotLocked()
}

func (w *worker) snapshotLocked() api.Worker {
	r := w.rec
	r.GPUs = slices.Clone(r.GPUs)
	return r
}
