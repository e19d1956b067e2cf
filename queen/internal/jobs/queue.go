package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
)

// Inference waits in one queue per model for the whole cluster: a request
// is placed only on a hive whose ready workers for its model have room
// (each takes at most its max_concurrent, api.Worker.Parallel, counted
// from the job records every queen sees), and otherwise waits as a queued
// record. Any queen places waiting requests when a worker frees, highest
// priority first, then in the order they arrived (view.WaitingFor).

// room reports whether h can start one more inference of model now: it
// has a ready worker for it, and neither its ready workers' max_concurrent
// nor the hive's own bound (api.Hive.InferSlots) is taken by the open
// inference jobs placed on it (load), counting those this queen is
// placing. The caller holds sentMu; it may hold the view's lock.
func (s *Service) room(h *api.Hive, model string, load view.Load) (serves, free bool) {
	capacity, unlimited := 0, false
	for _, w := range h.Workers {
		if w.ModelID != model || w.State != api.WorkerReady {
			continue
		}
		serves = true
		unlimited = unlimited || w.Parallel <= 0 // no limit of its own
		capacity += w.Parallel
	}
	switch {
	case !serves:
		return false, false
	case h.InferSlots > 0 && load.All[h.ID]+s.placingOn[h.ID] >= h.InferSlots:
		return true, false
	}
	return true, unlimited || load.Model[h.ID]+s.placing[h.ID+"\x00"+model] < capacity
}

// reserve picks a hive for req as place does and, for an inference, holds
// a place on its workers until release: until the job's record, placed
// there, is in the view's load.
func (s *Service) reserve(req api.JobRequest, except string) (api.Hive, func(), error) {
	s.sentMu.Lock()
	defer s.sentMu.Unlock()
	h, err := s.pickLocked(req, except)
	if err != nil {
		return h, nil, err
	}
	if s.placing == nil {
		s.placing, s.placingOn, s.placingJobs = map[string]int{}, map[string]int{}, map[string]int{}
	}
	held := []placingKey{{s.placingJobs, h.ID}}
	if model := req.Model(); req.Operation == api.OpInfer {
		held = []placingKey{{s.placing, h.ID + "\x00" + model}, {s.placingOn, h.ID}}
	}
	for _, p := range held {
		p.m[p.k]++
	}
	return h, func() {
		s.sentMu.Lock()
		defer s.sentMu.Unlock()
		for _, p := range held {
			if p.m[p.k]--; p.m[p.k] <= 0 {
				delete(p.m, p.k)
			}
		}
	}, nil
}

// placingKey is one count a reservation holds.
type placingKey struct {
	m map[string]int
	k string
}

// errBusy marks noRoom's answer when ready workers serve the model but
// have no room: a place will free.
var errBusy = errors.New("is busy")

// noRoom says why no hive can start an inference of model: no ready
// worker serves it, or every one is busy.
func noRoom(model string, serving bool) error {
	if serving {
		return fmt.Errorf("%w: every ready worker for model %s %w", ErrNoCapableHive, model, errBusy)
	}
	return fmt.Errorf("%w: no ready worker serves model %s", ErrNoCapableHive, model)
}

// wake asks the reaper to place waiting jobs now rather than at its next
// tick.
func (s *Service) wake() {
	select {
	case s.woken <- struct{}{}:
	default:
	}
}

// positionEvery is how often a waiting request's place is looked at.
const positionEvery = 50 * time.Millisecond

// TellPosition narrates an inference job's place in its model's queue, a
// "queued" event each time it changes, until the job no longer waits or
// ctx ends. eta estimates the wait at a position. Positions only go down,
// but for a request of a higher priority arriving ahead.
func (s *Service) TellPosition(ctx context.Context, id string, eta func(pos, waiting int) time.Duration) {
	t := time.NewTicker(positionEvery)
	defer t.Stop()
	last := 0
	for {
		pos, of, ok := s.v.Position(id)
		if ok && pos != last {
			j, _ := s.v.Job(id)
			place := api.QueuePlace{Position: pos, Waiting: of, ETAMs: eta(pos, of).Milliseconds()}
			stored, err := s.st.NarrateWaiting(ctx, api.Event{JobID: id, Attempt: j.Attempt, Action: api.ActionQueued, Data: place,
				Message: fmt.Sprintf("waits for a worker with room for %s: position %d of %d", j.Request.Model(), pos, of)})
			if err != nil && ctx.Err() == nil {
				s.log.Warn("tell queue position", "job_id", id, "err", err)
			}
			if !stored && err == nil {
				return // placed meanwhile
			}
			last = pos
		} else if !ok && !s.v.Waits(id) {
			if _, known := s.v.State(id); known {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
