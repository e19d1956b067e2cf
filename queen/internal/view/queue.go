package view

import (
	"context"
	"slices"
	"strings"

	"rbee.dev/shared/api"
)

// place is where a waiting job stands: its priority, and the jobs
// bucket's revision it began to wait at. The bucket orders every queen's
// writes, so that revision is the job's arrival in the cluster's queue,
// the same on every queen.
type place struct {
	since    uint64
	priority int
}

// queued is a waiting job's id and place.
type queued struct {
	id string
	place
}

// before reports whether waiting job q is served before o: a higher
// priority first, then first come, first served.
func (q queued) before(o queued) bool {
	if q.priority != o.priority {
		return q.priority > o.priority
	}
	if q.since != o.since {
		return q.since < o.since
	}
	return q.id < o.id
}

// Position is a waiting job's place in its queue, 1 for the next served,
// and how many wait there. ok is false when the job does not wait, or
// when the watch has not yet brought every job that arrived before it
// (one another queen took): a place told then could go up.
func (v *View) Position(id string) (pos, of int, ok bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, found := v.jobs[id]
	if !found || !e.waits() {
		return 0, 0, false
	}
	ids := v.waiting[e.kind.Value().needs].at
	me := queued{id, ids[id]}
	if v.watched < me.since {
		return 0, 0, false
	}
	pos = 1
	for other, at := range ids {
		if other != id && (queued{other, at}).before(me) {
			pos++
		}
	}
	return pos, len(ids), true
}

// Waits reports whether job id waits in a queue for want of a hive.
func (v *View) Waits(id string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.jobs[id]
	return ok && e.waits()
}

// Queued counts the jobs waiting with req's needs.
func (v *View) Queued(req api.JobRequest) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if q := v.waiting[Needs(req)]; q != nil {
		return len(q.at)
	}
	return 0
}

// Load counts, by hive, the open inference jobs placed on each: those
// of one model, and those of any.
type Load struct{ Model, All map[string]int }

// InferLoad is the inference load of the hives, for model and in all.
func (v *View) InferLoad(model string) Load {
	v.mu.RLock()
	defer v.mu.RUnlock()
	l := Load{Model: map[string]int{}, All: map[string]int{}}
	for k, n := range v.inferLoad {
		hive, m, _ := strings.Cut(k, "\x00")
		l.All[hive] += n
		if m == model {
			l.Model[hive] = n
		}
	}
	return l
}

// Freed receives after a job left a hive's load: a worker or a slot may
// have room for the next waiting job.
func (v *View) Freed() <-chan struct{} { return v.freed }

func loadKey(hive, model string) string { return hive + "\x00" + model }

// loads reports whether j holds a place on its hive: on its workers (an
// inference, inferLoad) or in its slots (any other job, jobLoad).
func loads(j api.Job) bool {
	return j.Hive != "" && !api.Terminal(j.State)
}

// load and unload keep inferLoad and jobLoad in step with a record coming
// and going. The caller holds mu.
func (v *View) load(j api.Job) {
	switch {
	case !loads(j):
	case j.Operation == api.OpInfer:
		v.inferLoad[loadKey(j.Hive, j.Request.Model())]++
	default:
		v.jobLoad[j.Hive]++
	}
}

func (v *View) unload(j api.Job) {
	if !loads(j) {
		return
	}
	m, k := v.jobLoad, j.Hive
	if j.Operation == api.OpInfer {
		m, k = v.inferLoad, loadKey(j.Hive, j.Request.Model())
	}
	if m[k]--; m[k] <= 0 {
		delete(m, k)
	}
}

// signalFreed tells the waiting jobs' placer that old, now changed into
// new (nil: gone), left its hive's load. The caller holds mu.
func (v *View) signalFreed(old api.Job, new *api.Job) {
	if loads(old) && (new == nil || !loads(*new) || new.Hive != old.Hive) {
		select {
		case v.freed <- struct{}{}:
		default:
		}
	}
}

// InferQueues lists each model's inference queue: the models with a
// request waiting or running, their workers' places, and the waiting
// requests in the order they will be served.
func (v *View) InferQueues(ctx context.Context) ([]api.InferQueue, error) {
	byModel := map[string]*api.InferQueue{}
	queue := func(model string) *api.InferQueue {
		q := byModel[model]
		if q == nil {
			q = &api.InferQueue{Model: model, Waiting: []api.QueuedJob{}}
			byModel[model] = q
		}
		return q
	}
	v.mu.RLock()
	for k, n := range v.inferLoad {
		_, model, _ := strings.Cut(k, "\x00")
		queue(model).Running += n
	}
	v.mu.RUnlock()
	for _, req := range v.WaitingNeeds() {
		if req.Operation != api.OpInfer {
			continue
		}
		q := queue(req.Model())
		for j, err := range v.WaitingFor(ctx, req) {
			if err != nil {
				return nil, err
			}
			q.Waiting = append(q.Waiting, api.QueuedJob{JobID: j.JobID, Owner: j.Owner, OwnerName: j.OwnerName, Priority: j.Priority, CreatedAt: j.CreatedAt})
		}
	}
	out := make([]api.InferQueue, 0, len(byModel))
	for model, q := range byModel {
		limited := true
		v.EachHive(func(h *api.Hive) {
			for _, w := range h.Workers {
				if w.ModelID == model && w.State == api.WorkerReady {
					q.Capacity += w.Parallel
					limited = limited && w.Parallel > 0
				}
			}
		})
		if !limited {
			q.Capacity = 0
		}
		for i := range q.Waiting {
			q.Waiting[i].Position = i + 1
		}
		out = append(out, *q)
	}
	slices.SortFunc(out, func(a, b api.InferQueue) int { return strings.Compare(a.Model, b.Model) })
	return out, nil
}
