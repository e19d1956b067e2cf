// Package view keeps a queen's in-memory picture of the cluster: the live
// hives and an index of job records, both fed by watching their buckets.
// Reads never touch NATS, so listing jobs and placing work stay cheap.
package view

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// View is the watched state. Its zero value is not usable; call New.
type View struct {
	log *slog.Logger

	mu    sync.RWMutex
	hives map[string]api.Hive
	// hiveIDs are the live hives' ids in order, kept as hives come and go
	// so that reading them sorted costs no sort.
	hiveIDs []string
	jobs    map[string]api.Job
	revs    map[string]uint64 // each job record's bucket revision
	// watched is the newest revision of the jobs bucket the watch has
	// delivered.
	watched uint64
	// underway holds the ids of open jobs that have a hive (or run on the
	// queen); waiting those queued for want of one, by what they need of
	// a hive (Needs). The reaper and queue positions then cost what is
	// open and can change, not everything retained.
	underway map[string]struct{}
	waiting  map[string]map[string]place // by Needs, then job id
	nWaiting int
	// inferLoad counts the open inference jobs placed on each hive, by
	// hive and model (loadKey): the requests its workers hold, as every
	// queen sees them.
	inferLoad map[string]int
	// freed receives when an inference job leaves a hive's load.
	freed     chan struct{}
	hivesSync bool
	jobsSync  bool
	synced    chan struct{}
	joined    chan struct{}
	gpus      gpuHistory
}

// New makes an empty view.
func New(log *slog.Logger) *View {
	return &View{
		log: log.With("component", "view"), hives: map[string]api.Hive{}, jobs: map[string]api.Job{}, revs: map[string]uint64{},
		underway: map[string]struct{}{}, waiting: map[string]map[string]place{},
		inferLoad: map[string]int{}, freed: make(chan struct{}, 1),
		synced: make(chan struct{}), joined: make(chan struct{}, 1),
	}
}

// Joined receives after a hive that was not live sends a heartbeat.
func (v *View) Joined() <-chan struct{} { return v.joined }

// Source is where the view learns the cluster's state: a watch of the
// heartbeats and one of the job records (store.Store). Each calls apply
// with every entry, then synced, then every change, until ctx ends.
type Source interface {
	WatchHives(ctx context.Context, apply func(id string, h *api.Hive), synced func())
	WatchJobs(ctx context.Context, apply func(id string, j *api.Job, rev uint64), synced func())
}

// Run watches both buckets until ctx ends.
func (v *View) Run(ctx context.Context, src Source) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); src.WatchHives(ctx, v.applyHive, func() { v.markSynced(true, false) }) }()
	go func() { defer wg.Done(); src.WatchJobs(ctx, v.applyJob, func() { v.markSynced(false, true) }) }()
	wg.Wait()
	return nil
}

// Synced is closed once both buckets' existing entries are loaded.
func (v *View) Synced() <-chan struct{} { return v.synced }

func (v *View) markSynced(hives, jobs bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	was := v.hivesSync && v.jobsSync
	v.hivesSync = v.hivesSync || hives
	v.jobsSync = v.jobsSync || jobs
	if !was && v.hivesSync && v.jobsSync {
		close(v.synced)
	}
}

func (v *View) applyHive(id string, hb *api.Hive) {
	if hb == nil {
		v.mu.Lock()
		_, had := v.hives[id]
		delete(v.hives, id)
		if i, ok := slices.BinarySearch(v.hiveIDs, id); ok {
			v.hiveIDs = slices.Delete(v.hiveIDs, i, i+1)
		}
		v.mu.Unlock()
		// The reaper's next pass ends the hive's jobs; the view only
		// says that the heartbeat is gone.
		if had {
			v.log.Warn("hive lost", "hive_id", id)
		}
		return
	}
	h := *hb
	// The key is the hive's: NATS lets a hive write its own key only,
	// while the body says whatever the hive likes.
	h.ID = id
	v.gpus.record(h)
	v.mu.Lock()
	_, had := v.hives[id]
	v.hives[id] = h
	if !had {
		i, _ := slices.BinarySearch(v.hiveIDs, id)
		v.hiveIDs = slices.Insert(v.hiveIDs, i, id)
	}
	v.mu.Unlock()
	if !had {
		select {
		case v.joined <- struct{}{}:
		default:
		}
	}
}

// applyJob applies a record (nil: deleted) the watch delivered at
// revision rev, unless the view holds the record at that revision or a
// newer one already: one this queen wrote and put in the view itself
// (Wrote).
func (v *View) applyJob(id string, j *api.Job, rev uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.watched = max(v.watched, rev)
	if have, ok := v.revs[id]; ok && rev <= have {
		return
	}
	v.setJob(id, j, rev)
}

// Wrote puts a record this queen wrote at revision rev in the view at
// once, rather than when the watch brings the write back: the queen's own
// transitions (placement, dispatch, cancel, an end) are seen by the next
// reader on this queen. A record the watch has already passed, or one the
// view holds at its revision or a newer one, stays as it is: the watch
// delivers the bucket's revisions in order, so once it has reached rev
// the view holds this record as of rev or later, which may be a delete.
func (v *View) Wrote(j api.Job, rev uint64) {
	if rev == 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if rev <= v.watched {
		return
	}
	if have, ok := v.revs[j.JobID]; ok && rev <= have {
		return
	}
	v.setJob(j.JobID, &j, rev)
}

// setJob stores a record, or removes it when j is nil, and keeps the
// indexes in step. The caller holds mu.
func (v *View) setJob(id string, j *api.Job, rev uint64) {
	delete(v.underway, id)
	// since is the revision the job began to wait at: its place in the
	// queue, kept while it waits.
	since := rev
	if old, ok := v.jobs[id]; ok {
		v.unload(old)
		v.signalFreed(old, j)
	}
	if old, ok := v.jobs[id]; ok && waits(old) {
		k := Needs(old.Request)
		since = v.waiting[k][id].since
		delete(v.waiting[k], id)
		if len(v.waiting[k]) == 0 {
			delete(v.waiting, k)
		}
		v.nWaiting--
	}
	if j == nil {
		delete(v.jobs, id)
		delete(v.revs, id)
		return
	}
	v.jobs[id], v.revs[id] = *j, rev
	switch {
	case waits(*j):
		k := Needs(j.Request)
		if v.waiting[k] == nil {
			v.waiting[k] = map[string]place{}
		}
		v.waiting[k][id] = place{since, j.Priority}
		v.nWaiting++
	case !api.Terminal(j.State):
		v.underway[id] = struct{}{}
	}
	v.load(*j)
}

// waits reports whether a job is queued for want of a hive.
func waits(j api.Job) bool { return j.State == api.StateQueued && j.Hive == "" }

// Needs is what decides whether a hive can take a request at all: a pinned
// hive, the run operation, the labels. Requests with the same needs fit
// the same hives, and wait in one queue.
//
// Inference is the exception: a model's requests wait in one queue,
// whatever hive or labels they ask for, so that none is served out of
// turn by asking for an emptier queue; the placer skips those that cannot
// go yet.
func Needs(req api.JobRequest) string {
	if req.Operation == api.OpInfer {
		return "\x00infer=" + req.Model()
	}
	var b strings.Builder
	b.WriteString(req.Hive)
	if req.Operation == api.OpRun {
		b.WriteString("\x00run")
	}
	keys := make([]string, 0, len(req.Labels))
	for k := range req.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString("\x00" + k + "=" + req.Labels[k])
	}
	return b.String()
}

// Waiting counts the jobs queued for want of a hive, leaving out except.
func (v *View) Waiting(except string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if j, ok := v.jobs[except]; ok && waits(j) {
		return v.nWaiting - 1
	}
	return v.nWaiting
}

// WaitingNeeds lists what the waiting jobs need of a hive, one entry per
// kind of need, with one request of each.
func (v *View) WaitingNeeds() []api.JobRequest {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]api.JobRequest, 0, len(v.waiting))
	for _, ids := range v.waiting {
		for id := range ids {
			out = append(out, v.jobs[id].Request)
			break
		}
	}
	return out
}

// WaitingFor returns the jobs waiting with req's needs in the order they
// are served (before).
func (v *View) WaitingFor(req api.JobRequest) []api.Job {
	v.mu.RLock()
	ids := v.waiting[Needs(req)]
	out := make([]queued, 0, len(ids))
	for id, at := range ids {
		out = append(out, queued{id, at})
	}
	v.mu.RUnlock()
	// Sorted without the lock, which a long queue would hold up.
	sort.Slice(out, func(i, k int) bool { return out[i].before(out[k]) })
	jobs := make([]api.Job, 0, len(out))
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, q := range out {
		if j, ok := v.jobs[q.id]; ok {
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// WaitedPast returns the waiting jobs whose deadline is before now, and
// the soonest deadline of the others (zero when none waits), so that the
// reaper can be there when it passes rather than on its next tick.
func (v *View) WaitedPast(now time.Time) (past []api.Job, next time.Time) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, ids := range v.waiting {
		for id := range ids {
			switch d := v.jobs[id].DeadlineAt; {
			case now.After(d):
				past = append(past, v.jobs[id])
			case next.IsZero() || d.Before(next):
				next = d
			}
		}
	}
	return past, next
}

// JobAt returns one job record as last seen and its bucket revision.
func (v *View) JobAt(id string) (api.Job, uint64, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	j, ok := v.jobs[id]
	return j, v.revs[id], ok
}

// Hive returns one live hive.
func (v *View) Hive(id string) (api.Hive, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	h, ok := v.hives[id]
	return h, ok
}

// Job returns one job record as last seen.
func (v *View) Job(id string) (api.Job, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	j, ok := v.jobs[id]
	return j, ok
}

// Hives returns the live hives sorted by id.
func (v *View) Hives() []api.Hive {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]api.Hive, 0, len(v.hiveIDs))
	for _, id := range v.hiveIDs {
		out = append(out, v.hives[id])
	}
	return out
}

// EachHive calls fn with every live hive, in id order, without copying
// them: fn runs under the view's read lock, so it must be quick, must not
// keep h, and must not call back into the view.
func (v *View) EachHive(fn func(h *api.Hive)) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var h api.Hive
	for _, id := range v.hiveIDs {
		h = v.hives[id]
		fn(&h)
	}
}

// Filter selects jobs in a listing; empty fields match everything.
type Filter struct {
	State, Operation, Hive string
	// Owner, when set, keeps only the jobs that key created.
	Owner string
	Limit int
}

// Jobs lists records newest first. Job ids sort by creation time.
func (v *View) Jobs(f Filter) []api.Job {
	v.mu.RLock()
	out := make([]api.Job, 0, min(len(v.jobs), f.Limit))
	for _, j := range v.jobs {
		if (f.State == "" || j.State == f.State) && (f.Operation == "" || j.Operation == f.Operation) && (f.Hive == "" || j.Hive == f.Hive) && (f.Owner == "" || j.Owner == f.Owner) {
			out = append(out, j)
		}
	}
	v.mu.RUnlock()
	sort.Slice(out, func(i, k int) bool { return out[i].JobID > out[k].JobID })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

// Underway returns every open job that has a hive or runs on the queen:
// the open jobs but those WaitingFor returns.
func (v *View) Underway() []api.Job {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]api.Job, 0, len(v.underway))
	for id := range v.underway {
		out = append(out, v.jobs[id])
	}
	return out
}

// Expired returns the jobs past retention: ended and created before
// cutoff, or so long past their deadline that nothing will end them.
func (v *View) Expired(cutoff time.Time) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for id, j := range v.jobs {
		if j.CreatedAt.Before(cutoff) && (api.Terminal(j.State) || j.DeadlineAt.Before(cutoff)) {
			out = append(out, id)
		}
	}
	return out
}

// OldestFinished returns up to n ended jobs, the earliest finished first.
func (v *View) OldestFinished(n int) []string {
	v.mu.RLock()
	ended := make([]api.Job, 0, len(v.jobs)/2)
	for _, j := range v.jobs {
		if api.Terminal(j.State) {
			ended = append(ended, j)
		}
	}
	v.mu.RUnlock()
	at := func(j api.Job) time.Time {
		if j.FinishedAt != nil {
			return *j.FinishedAt
		}
		return j.CreatedAt
	}
	sort.Slice(ended, func(i, k int) bool { return at(ended[i]).Before(at(ended[k])) })
	out := make([]string, 0, min(n, len(ended)))
	for _, j := range ended[:min(n, len(ended))] {
		out = append(out, j.JobID)
	}
	return out
}

// CountByState counts jobs per state.
func (v *View) CountByState() map[string]int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string]int{}
	for _, j := range v.jobs {
		out[j.State]++
	}
	return out
}
