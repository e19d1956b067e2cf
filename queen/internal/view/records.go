package view

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
	"unique"

	"github.com/google/btree"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
)

// A queen that held every record whole held every request too, prompts
// and commands included, for the whole retention: hundreds of megabytes
// for a long queue. So the view keeps an entry of every job, with what
// its indexes, listings and the reaper's clock read, and the record itself
// only for the jobs underway (the reaper reads them every second) and the
// last recent ones written or read. The others are read from the bucket
// when asked for: a waiting job when the placer reaches it, a listing's
// page, one job.

// DefaultRecent is how many records the queen's view keeps whole beside
// those of the jobs underway.
const DefaultRecent = 1024

const (
	// readTimeout bounds a read of one record for a caller without a
	// context of its own.
	readTimeout = 5 * time.Second
	// readsAtOnce is how many records a listing reads from the bucket at
	// once.
	readsAtOnce = 16
)

// entry is what the view keeps of every job.
type entry struct {
	// job is the record itself, nil when the view no longer holds it.
	job *api.Job
	rev uint64
	// held is the stamp of the entry's newest place in recent.
	held uint64
	// created and due in Unix nanoseconds (stamp); due is the deadline
	// while the job is open, and when it ended after (its creation when
	// the record does not say).
	created, due int64
	kind         unique.Handle[kind]
}

// kind is what listings filter on and the indexes sort by, which jobs
// share: interned, each costs a job a pointer.
type kind struct {
	state, operation, hive, owner string
	// needs is the queue the job waits in (Needs) while it waits.
	needs string
}

// set makes e say what j says at revision rev, and hold j.
func (e *entry) set(j *api.Job, rev uint64) {
	e.job, e.rev = j, rev
	e.created, e.due = stamp(j.CreatedAt), stamp(j.DeadlineAt)
	switch {
	case j.FinishedAt != nil && api.Terminal(j.State):
		e.due = stamp(*j.FinishedAt)
	case api.Terminal(j.State):
		e.due = e.created
	}
	k := kind{state: j.State, operation: j.Operation, hive: j.Hive, owner: j.Owner}
	if waits(*j) {
		k.needs = Needs(j.Request)
	}
	e.kind = unique.Make(k)
}

// waits is waits for an entry.
func (e *entry) waits() bool {
	k := e.kind.Value()
	return k.state == api.StateQueued && k.hive == ""
}

// stamp is t in Unix nanoseconds, clamped to what an int64 holds, so that
// a zero time stays before every other.
func stamp(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// waitQueue is the jobs waiting with one kind of needs: each one's place,
// the same in the order they are served, and one request that stands for
// them all.
type waitQueue struct {
	req   api.JobRequest
	at    map[string]place
	order *btree.BTreeG[queued]
}

func newWaitQueue(req api.JobRequest) *waitQueue {
	return &waitQueue{req: req, at: map[string]place{}, order: btree.NewG(32, queued.before)}
}

func (q *waitQueue) add(id string, p place) {
	q.at[id] = p
	q.order.ReplaceOrInsert(queued{id, p})
}

// remove takes id out and returns the place it had.
func (q *waitQueue) remove(id string) place {
	p := q.at[id]
	delete(q.at, id)
	q.order.Delete(queued{id, p})
	return p
}

// slot is a place in recent: the job whose record it keeps, and the stamp
// it was given then.
type slot struct {
	id    string
	stamp uint64
}

// hold keeps e's record whole among the recent ones. The place it takes
// is the oldest; the record that held it is let go, unless it was held
// again since (it has a newer place) or its job is underway. So besides
// the jobs underway, at most cap(recent) records are held whole. The
// caller holds mu.
func (v *View) hold(id string, e *entry) {
	v.stamp++
	e.held = v.stamp
	if len(v.recent) < cap(v.recent) {
		v.recent = append(v.recent, slot{id, v.stamp})
		return
	}
	old := v.recent[v.next]
	v.recent[v.next] = slot{id, v.stamp}
	v.next = (v.next + 1) % len(v.recent)
	if oe, ok := v.jobs[old.id]; ok && oe.held == old.stamp {
		if _, busy := v.underway[old.id]; !busy {
			oe.job = nil
		}
	}
}

// whole returns job id's record: the view's, or the bucket's when the view
// no longer holds it, which it then holds again if it is the revision the
// view knows. ok is false for a job the view does not know, or one deleted
// meanwhile.
func (v *View) whole(ctx context.Context, id string) (api.Job, bool, error) {
	v.mu.RLock()
	e, ok := v.jobs[id]
	var j *api.Job
	if ok {
		j = e.job
	}
	get := v.get
	v.mu.RUnlock()
	switch {
	case !ok:
		return api.Job{}, false, nil
	case j != nil:
		return *j, true, nil
	case get == nil:
		return api.Job{}, false, fmt.Errorf("read job %s: the view has no bucket to read", id)
	}
	rec, rev, err := get(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return api.Job{}, false, nil
	}
	if err != nil {
		return api.Job{}, false, err
	}
	v.mu.Lock()
	if e, ok := v.jobs[id]; ok && e.job == nil && e.rev == rev {
		e.job = &rec
		v.hold(id, e)
	}
	v.mu.Unlock()
	return rec, true, nil
}
