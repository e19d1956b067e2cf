package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// Reasons a job's context ends; the end event is chosen from them.
var (
	errCancelled    = errors.New("cancelled by request")
	errDeadline     = errors.New("deadline exceeded")
	errHiveStopping = errors.New("hive stopping")
	// errNotStarted stops work begun alongside its start (an inference)
	// when the start was not stored.
	errNotStarted = errors.New("job not started")
)

// budgetError ends a job whose narration passed its byte budget.
type budgetError struct{ limit int64 }

func (e *budgetError) Error() string { return api.BudgetExceeded(e.limit) }

// job is one running job on this hive.
type job struct {
	d   api.Dispatch
	p   *narrator
	a   *Agent
	ctx context.Context
}

// pull is the hive's one reader of its work queue. What a message holds
// is known only once it is here, so it asks for one only while both a job
// slot and an inference slot are free, and gives back the one the message
// does not take. No job waits in a hive-side buffer with its
// acknowledgement timer running, and generations never take the slots
// that spawns, downloads and status checks need.
func (a *Agent) pull(ctx context.Context, cons jetstream.Consumer, gate *pullGate, jobs *sync.WaitGroup) {
	for ctx.Err() == nil {
		if !take(ctx, a.jobSlots) {
			return
		}
		if !take(ctx, a.inferSlots) {
			<-a.jobSlots
			return
		}
		fctx, cancel := gate.pull(ctx)
		msg, err := bus.NextDispatch(fctx, cons)
		cancel()
		if err != nil {
			<-a.jobSlots
			<-a.inferSlots
			if !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
				a.log.Warn("pull job", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			} else if wake := gate.rest(); wake != nil {
				select {
				case <-ctx.Done():
				case <-wake:
				}
			}
			continue
		}
		gate.got()
		infer := isInfer(msg)
		held := a.jobSlots
		if infer {
			held = a.inferSlots
			<-a.jobSlots
		} else {
			<-a.inferSlots
		}
		jobs.Add(1)
		go func() {
			defer jobs.Done()
			defer func() { <-held }()
			a.handle(msg, infer)
		}()
	}
}

// isInfer reports whether a dispatch is an inference job, from its header
// alone; a queen that does not send the header has its jobs take job slots.
func isInfer(msg jetstream.Msg) bool {
	return bus.DispatchOperation(msg) == api.OpInfer
}

// take puts a token into slots, waiting while it is full.
func take(ctx context.Context, slots chan struct{}) bool {
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// handle runs one dispatched job from pickup to the acknowledgement.
// infer says which of the hive's capacities the job takes.
func (a *Agent) handle(msg jetstream.Msg, infer bool) {
	var d api.Dispatch
	if err := json.Unmarshal(msg.Data(), &d); err != nil || !bus.ValidToken(d.JobID) {
		a.log.Error("drop malformed dispatch", "err", err)
		_ = msg.Term()
		return
	}
	log := a.log.With("job_id", d.JobID)
	op := d.Request.Operation
	a.m.jobsRunning.WithLabelValues(op).Inc()
	defer a.m.jobsRunning.WithLabelValues(op).Dec()

	// A redelivered dispatch means this hive, or the process it was before a
	// restart, took the job and did not finish it. Its events so far are
	// stored; numbering goes on after them, so the stream never repeats a
	// sequence.
	next := d.NextSeq
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 1 {
		a.mu.Lock()
		_, here := a.running[d.JobID]
		a.mu.Unlock()
		if here {
			// A stalled process woke up: its first handler still owns the job.
			return
		}
		lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, err := bus.LastSeq(lctx, a.nc, d.JobID, a.cfg.ID)
		lcancel()
		if err != nil {
			log.Warn("read narration of a redelivered job; it will be redelivered", "err", err)
			_ = msg.NakWithDelay(time.Second)
			return
		}
		if last >= next {
			next = last + 1
			if !api.Operations[op].Retryable {
				p := newNarrator(a.js, d.JobID, a.cfg.ID, d.Attempt, next, a.cfg.MaxEvents)
				a.end(p, op, api.Event{State: api.StateFailed, Error: "interrupted: the hive lost this job mid-run and it is not safe to run twice"}, log)
				_ = msg.Ack()
				return
			}
		}
	}

	// Register before checking for an end, so that a cancel arriving now
	// either finds the job here or has already stored its end.
	ctx, cancel := context.WithCancelCause(context.Background())
	ctx, stopDeadline := context.WithDeadlineCause(ctx, d.DeadlineAt, errDeadline)
	defer stopDeadline()
	a.mu.Lock()
	a.running[d.JobID] = cancel
	if infer {
		a.inferRunning++
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.running, d.JobID)
		if infer {
			a.inferRunning--
		}
		a.mu.Unlock()
		cancel(nil)
	}()

	p := newNarrator(a.js, d.JobID, a.cfg.ID, d.Attempt, next, a.cfg.MaxEvents)
	if d.MaxNarrationBytes > 0 {
		// The work stops where its narration stops being stored: a command
		// printing forever is killed, not left running unheard.
		p.SetBudget(d.MaxNarrationBytes, func() { cancel(&budgetError{limit: d.MaxNarrationBytes}) })
	}
	startEvent := api.Event{Actor: "hive", Action: "started", Message: fmt.Sprintf("%s started on hive %s", d.Request.Operation, a.cfg.ID)}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	var started func() error
	if infer {
		// A generation's first token waits for the worker, not for the
		// start's round trip: the request goes to the worker while the
		// start is on its way. The publisher holds every event the work
		// emits until the start is stored, and stores none when it was
		// not; the work is then stopped, and no worker output is ever
		// narrated for a job that did not start.
		wait := p.Begin(sctx, startEvent)
		done := make(chan struct{})
		var startErr error
		go func() {
			defer close(done)
			startErr = wait()
			scancel()
			if startErr != nil {
				cancel(errNotStarted)
			}
		}()
		started = func() error { <-done; return startErr }
	} else {
		err := p.Start(sctx, startEvent)
		scancel()
		started = func() error { return err }
		if a.notStarted(msg, err, log) {
			return
		}
	}

	keepAlive := make(chan struct{})
	go func() {
		t := time.NewTicker(a.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-keepAlive:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()

	j := &job{d: d, p: p, a: a, ctx: ctx}
	err := a.run(j)
	close(keepAlive)
	if a.notStarted(msg, started(), log) {
		return
	}
	if api.Operations[op].ChangesHive {
		a.beatSoon()
	}
	if errors.Is(err, errYielded) {
		// No end: the job goes on on another hive, as a later attempt.
		_ = msg.Ack()
		return
	}
	a.end(p, op, outcome(ctx, err, a.cfg.ID), log)
	_ = msg.Ack()
}

// notStarted settles the dispatch of a job whose start was not stored,
// and reports whether it was not: a job ended before it could start
// (cancelled, or ended by a queen) is acknowledged, one whose start
// failed is redelivered.
func (a *Agent) notStarted(msg jetstream.Msg, err error, log interface{ Warn(string, ...any) }) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, bus.ErrAlreadyEnded):
		_ = msg.Ack()
	default:
		log.Warn("publish start; the job will be redelivered", "err", err)
		_ = msg.NakWithDelay(time.Second)
	}
	return true
}

// handlers runs each operation of the table (api.Operations) that runs on
// a hive, each with the payload type the table names.
var handlers = map[string]handler{
	api.OpHiveCheck:         takes((*job).check),
	api.OpHiveStatus:        plain((*job).status),
	api.OpRun:               takes((*job).runCommand),
	api.OpInfer:             takes((*job).infer),
	api.OpModelList:         plain((*job).modelList),
	api.OpModelGet:          takes((*job).modelGet),
	api.OpModelDelete:       takes((*job).modelDelete),
	api.OpModelDownload:     takes((*job).modelDownload),
	api.OpWorkerCatalogList: plain((*job).workerCatalogList),
	api.OpWorkerSpawn:       takes((*job).workerSpawn),
	api.OpWorkerList:        plain((*job).workerList),
	api.OpWorkerGet:         takes((*job).workerGet),
	api.OpWorkerStop:        takes((*job).workerStop),
}

// handler runs one operation; payload is the type of payload it takes,
// nil for an operation without fields.
type handler struct {
	run     func(*job, api.Payload) error
	payload reflect.Type
}

// takes makes the handler of an operation whose payload is a *T.
func takes[T any, P interface {
	*T
	api.Payload
}](f func(*job, P) error) handler {
	return handler{
		payload: reflect.TypeFor[P](),
		run: func(j *job, p api.Payload) error {
			typed, ok := p.(P)
			if !ok || typed == nil {
				// Decoding gives every dispatch of the operation its
				// payload; this only guards one made without.
				typed = new(T)
			}
			return f(j, typed)
		},
	}
}

// plain makes the handler of an operation without fields.
func plain(f func(*job) error) handler {
	return handler{run: func(j *job, _ api.Payload) error { return f(j) }}
}

func (a *Agent) run(j *job) error {
	if a.cfg.Simulate > 0 {
		select {
		case <-time.After(a.cfg.Simulate):
			return nil
		case <-j.ctx.Done():
			return context.Cause(j.ctx)
		}
	}
	if h, ok := handlers[j.d.Request.Operation]; ok {
		return h.run(j, j.d.Request.Payload)
	}
	return fmt.Errorf("operation %q is not supported by hive %s (version %s)", j.d.Request.Operation, a.cfg.ID, Version)
}

// exitError carries a command's exit code to the end event.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit code %d", e.code) }

// outcome turns how the work ended into the job's end event.
func outcome(ctx context.Context, err error, hive string) api.Event {
	cause := context.Cause(ctx)
	var ee *exitError
	var be *budgetError
	switch {
	case errors.As(cause, &be):
		return api.Event{State: api.StateFailed, Error: be.Error(), Message: "job stopped: " + be.Error()}
	case errors.Is(cause, errCancelled):
		return api.Event{State: api.StateCancelled, Error: "cancelled by request", Message: "job cancelled"}
	case errors.Is(cause, errDeadline):
		return api.Event{State: api.StateFailed, Error: "deadline exceeded", Message: "job ran past its deadline"}
	case errors.Is(cause, errHiveStopping):
		return api.Event{State: api.StateFailed, Error: fmt.Sprintf("hive %s stopped during the job", hive)}
	case errors.As(err, &ee):
		code := ee.code
		ev := api.Event{State: api.StateFailed, Error: ee.Error(), ExitCode: &code, Message: ee.Error()}
		if code == 0 {
			ev.State, ev.Error = api.StateDone, ""
		}
		return ev
	case err != nil:
		return api.Event{State: api.StateFailed, Error: err.Error(), Message: err.Error()}
	}
	return api.Event{State: api.StateDone, Message: "job done"}
}

func (a *Agent) end(p *narrator, op string, e api.Event, log interface{ Warn(string, ...any) }) {
	e.Actor = "hive"
	a.m.observeEnd(op, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.End(ctx, e); err != nil && !errors.Is(err, bus.ErrAlreadyEnded) {
		log.Warn("publish end", "err", err)
	}
}

// onCancel answers a queen's cancel request for a job of this hive.
func (a *Agent) onCancel(req bus.CancelRequest) bus.CancelReply {
	a.mu.Lock()
	cancel, ok := a.running[req.JobID]
	a.mu.Unlock()
	if ok {
		cancel(errCancelled)
	}
	return bus.CancelReply{Running: ok}
}

// stopAll ends every running job with cause.
func (a *Agent) stopAll(cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, cancel := range a.running {
		cancel(cause)
	}
}
