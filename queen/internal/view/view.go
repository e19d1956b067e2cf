// Package view keeps a queen's in-memory picture of the cluster: the live
// hives and an index of job records, both fed by watching their buckets.
// Its indexes and counts never touch NATS, so placing work, positions and
// the reaper's passes stay cheap; only a record the view no longer holds
// whole is read from the bucket (records.go).
package view

import (
	"cmp"
	"context"
	"fmt"
	"iter"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

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
	// jobs holds an entry for every job record in the bucket; only some
	// hold the record itself (records.go).
	jobs map[string]*entry
	// recent are the places of the records kept whole beside those of the
	// jobs underway, oldest first from next on; see hold.
	recent []slot
	next   int
	stamp  uint64
	// get reads one record from the bucket: the records the view no longer
	// holds whole.
	get func(ctx context.Context, id string) (api.Job, uint64, error)
	// watched is the newest revision of the jobs bucket the watch has
	// delivered.
	watched uint64
	// underway holds the ids of open jobs that have a hive (or run on the
	// queen); waiting those queued for want of one, by what they need of
	// a hive (Needs). The reaper and queue positions then cost what is
	// open and can change, not everything retained.
	underway map[string]struct{}
	waiting  map[string]*waitQueue // by Needs
	nWaiting int
	// inferLoad counts the open inference jobs placed on each hive, by
	// hive and model (loadKey): the requests its workers hold, as every
	// queen sees them.
	inferLoad map[string]int
	// jobLoad counts the open jobs but inferences placed on each hive:
	// the slots they hold there, running or waiting on its work queue.
	jobLoad map[string]int
	// freed receives when a job leaves a hive's load.
	freed     chan struct{}
	hivesSync bool
	jobsSync  bool
	synced    chan struct{}
	joined    chan struct{}
	gpus      gpuHistory
}

// New makes an empty view that keeps whole the records of the jobs
// underway and of the last recent jobs written or read, and an entry of
// every other (records.go).
func New(log *slog.Logger, recent int) *View {
	return &View{
		log: log.With("component", "view"), hives: map[string]api.Hive{}, jobs: map[string]*entry{},
		recent:   make([]slot, 0, max(recent, 1)),
		underway: map[string]struct{}{}, waiting: map[string]*waitQueue{},
		inferLoad: map[string]int{}, jobLoad: map[string]int{}, freed: make(chan struct{}, 1),
		synced: make(chan struct{}), joined: make(chan struct{}, 1),
	}
}

// Joined receives after a hive that was not live sends a heartbeat.
func (v *View) Joined() <-chan struct{} { return v.joined }

// Source is where the view learns the cluster's state: a watch of the
// heartbeats and one of the job records (store.Store). Each calls apply
// with every entry, then synced, then every change, until ctx ends.
// GetJob reads one record, for those the view does not hold whole.
type Source interface {
	WatchHives(ctx context.Context, apply func(id string, h *api.Hive), synced func())
	WatchJobs(ctx context.Context, apply func(id string, j *api.Job, rev uint64), synced func())
	GetJob(ctx context.Context, id string) (api.Job, uint64, error)
}

// Run watches both buckets until ctx ends.
func (v *View) Run(ctx context.Context, src Source) error {
	v.mu.Lock()
	v.get = src.GetJob
	v.mu.Unlock()
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
	if e, ok := v.jobs[id]; ok && rev <= e.rev {
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
	if e, ok := v.jobs[j.JobID]; ok && rev <= e.rev {
		return
	}
	v.setJob(j.JobID, &j, rev)
}

// setJob stores a record, or removes it when j is nil, and keeps the
// indexes in step. The caller holds mu.
func (v *View) setJob(id string, j *api.Job, rev uint64) {
	_, wasUnderway := v.underway[id]
	delete(v.underway, id)
	// since is the revision the job began to wait at: its place in the
	// queue, kept while it waits.
	since := rev
	old := v.jobs[id]
	if old != nil && wasUnderway {
		// A job underway is held whole (hold), so its load is known.
		v.unload(*old.job)
		v.signalFreed(*old.job, j)
	}
	if old != nil && old.waits() {
		k := old.kind.Value().needs
		q := v.waiting[k]
		since = q.remove(id).since
		if len(q.at) == 0 {
			delete(v.waiting, k)
		}
		v.nWaiting--
	}
	if j == nil {
		delete(v.jobs, id)
		return
	}
	e := old
	if e == nil {
		// An id the watch brings is cut from the message's subject, which
		// the view's keys would keep whole for as long as the job.
		id = strings.Clone(id)
		e = &entry{}
		v.jobs[id] = e
	}
	e.set(j, rev)
	switch {
	case waits(*j):
		k := e.kind.Value().needs
		q := v.waiting[k]
		if q == nil {
			// Any waiting request stands for its queue: they all need
			// the same of a hive.
			q = newWaitQueue(j.Request)
			v.waiting[k] = q
		}
		q.add(id, place{since, j.Priority})
		v.nWaiting++
	case !api.Terminal(j.State):
		v.underway[id] = struct{}{}
	}
	v.hold(id, e)
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
	if e, ok := v.jobs[except]; ok && e.waits() {
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
	for _, q := range v.waiting {
		out = append(out, q.req)
	}
	return out
}

// WaitingFor yields the jobs waiting with req's needs in the order they
// are served (before), reading each record from the bucket when the view
// does not hold it whole; a caller that stops early reads no more. A read
// that fails ends it with the error.
func (v *View) WaitingFor(ctx context.Context, req api.JobRequest) iter.Seq2[api.Job, error] {
	needs := Needs(req)
	return func(yield func(api.Job, error) bool) {
		var after *queued
		for {
			batch := v.nextWaiting(needs, after)
			if len(batch) == 0 {
				return
			}
			for _, q := range batch {
				j, ok, err := v.whole(ctx, q.id)
				if err != nil {
					yield(api.Job{}, fmt.Errorf("read waiting job %s: %w", q.id, err))
					return
				}
				// Read from the bucket, it may have been placed meanwhile.
				if ok && waits(j) && !yield(j, nil) {
					return
				}
			}
			after = &batch[len(batch)-1]
		}
	}
}

// waitingBatch is how many waiting jobs WaitingFor takes from its queue
// under one hold of the lock: a placer that stops at the first job that
// cannot go costs the head of a long queue, not all of it.
const waitingBatch = 64

// nextWaiting is the next waitingBatch jobs waiting with needs after
// after (nil: from the head), in the order they are served.
func (v *View) nextWaiting(needs string, after *queued) []queued {
	v.mu.RLock()
	defer v.mu.RUnlock()
	q := v.waiting[needs]
	if q == nil {
		return nil
	}
	out := make([]queued, 0, min(waitingBatch, len(q.at)))
	take := func(x queued) bool {
		if after == nil || after.before(x) {
			out = append(out, x)
		}
		return len(out) < waitingBatch
	}
	if after == nil {
		q.order.Ascend(take)
	} else {
		q.order.AscendGreaterOrEqual(*after, take)
	}
	return out
}

// WaitedPast returns the waiting jobs whose deadline is before now, and
// the soonest deadline of the others (zero when none waits), so that the
// reaper can be there when it passes rather than on its next tick. A
// record it could not read is left for the next call.
func (v *View) WaitedPast(ctx context.Context, now time.Time) (past []api.Job, next time.Time) {
	var ids []string
	cut := stamp(now)
	v.mu.RLock()
	soonest := int64(math.MaxInt64)
	for _, q := range v.waiting {
		for id := range q.at {
			switch d := v.jobs[id].due; {
			case cut > d:
				ids = append(ids, id)
			case d < soonest:
				soonest = d
			}
		}
	}
	v.mu.RUnlock()
	if soonest != math.MaxInt64 {
		next = time.Unix(0, soonest)
	}
	for _, id := range ids {
		j, ok, err := v.whole(ctx, id)
		if err != nil {
			v.log.Warn("read waiting job", "job_id", id, "err", err)
			continue
		}
		if ok {
			past = append(past, j)
		}
	}
	return past, next
}

// JobAt returns one job record as last seen and its bucket revision, if
// the view holds it whole; ok is false otherwise, and the caller reads
// the bucket.
func (v *View) JobAt(id string) (api.Job, uint64, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.jobs[id]
	if !ok || e.job == nil {
		return api.Job{}, 0, false
	}
	return *e.job, e.rev, true
}

// Hive returns one live hive.
func (v *View) Hive(id string) (api.Hive, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	h, ok := v.hives[id]
	return h, ok
}

// Job returns one job record as last seen, read from the bucket when the
// view does not hold it whole; ok is false for a job the view does not
// know, or whose record it could not read (logged).
func (v *View) Job(id string) (api.Job, bool) {
	if j, _, ok := v.JobAt(id); ok {
		return j, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	j, ok, err := v.whole(ctx, id)
	if err != nil {
		v.log.Warn("read job", "job_id", id, "err", err)
	}
	return j, ok && err == nil
}

// State returns a job's state as last seen, without reading the bucket.
func (v *View) State(id string) (string, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	e, ok := v.jobs[id]
	if !ok {
		return "", false
	}
	return e.kind.Value().state, true
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
	v.EachHiveLoaded(func(h *api.Hive, _ int) bool { fn(h); return true })
}

// EachHiveLoaded is EachHive that also tells the hive's JobLoad, until fn
// returns false.
func (v *View) EachHiveLoaded(fn func(h *api.Hive, jobs int) bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var h api.Hive
	for _, id := range v.hiveIDs {
		h = v.hives[id]
		if !fn(&h, v.jobLoad[id]) {
			return
		}
	}
}

// Placed counts the open jobs placed on hive, inferences too.
func (v *View) Placed(hive string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := v.jobLoad[hive]
	for k, m := range v.inferLoad {
		if h, _, _ := strings.Cut(k, "\x00"); h == hive {
			n += m
		}
	}
	return n
}

// JobLoad counts the open jobs but inferences placed on hive.
func (v *View) JobLoad(hive string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.jobLoad[hive]
}

// Filter selects jobs in a listing; empty fields match everything.
type Filter struct {
	State, Operation, Hive string
	// Owner, when set, keeps only the jobs that key created.
	Owner string
	Limit int
}

// matches reports whether a job with these fields is in f's listing.
func (f Filter) matches(state, operation, hive, owner string) bool {
	return (f.State == "" || state == f.State) && (f.Operation == "" || operation == f.Operation) &&
		(f.Hive == "" || hive == f.Hive) && (f.Owner == "" || owner == f.Owner)
}

// Jobs lists records newest first. Job ids sort by creation time. The
// records the view does not hold whole are read from the bucket, a few at
// a time; one changed meanwhile so that it no longer matches, or deleted,
// is left out.
func (v *View) Jobs(ctx context.Context, f Filter) ([]api.Job, error) {
	v.mu.RLock()
	ids := make([]string, 0, min(len(v.jobs), max(f.Limit, 0)))
	for id, e := range v.jobs {
		if k := e.kind.Value(); f.matches(k.state, k.operation, k.hive, k.owner) {
			ids = append(ids, id)
		}
	}
	v.mu.RUnlock()
	slices.SortFunc(ids, func(a, b string) int { return strings.Compare(b, a) })
	if f.Limit > 0 && len(ids) > f.Limit {
		ids = ids[:f.Limit]
	}
	recs := make([]api.Job, len(ids))
	found := make([]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(readsAtOnce)
	for i, id := range ids {
		g.Go(func() error {
			j, ok, err := v.whole(gctx, id)
			recs[i], found[i] = j, ok && f.matches(j.State, j.Operation, j.Hive, j.Owner)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := recs[:0]
	for i, j := range recs {
		if found[i] {
			out = append(out, j)
		}
	}
	return out, nil
}

// Underway returns every open job that has a hive or runs on the queen:
// the open jobs but those WaitingFor yields. The view holds them all
// whole.
func (v *View) Underway() []api.Job {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]api.Job, 0, len(v.underway))
	for id := range v.underway {
		out = append(out, *v.jobs[id].job)
	}
	return out
}

// Expired returns the jobs past retention: ended and created before
// cutoff, or so long past their deadline that nothing will end them.
func (v *View) Expired(cutoff time.Time) []string {
	cut := stamp(cutoff)
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []string
	for id, e := range v.jobs {
		if e.created < cut && (api.Terminal(e.kind.Value().state) || e.due < cut) {
			out = append(out, id)
		}
	}
	return out
}

// OldestFinished returns up to n ended jobs, the earliest finished first.
func (v *View) OldestFinished(n int) []string {
	type ended struct {
		id string
		at int64
	}
	v.mu.RLock()
	all := make([]ended, 0, len(v.jobs)/2)
	for id, e := range v.jobs {
		if api.Terminal(e.kind.Value().state) {
			all = append(all, ended{id, e.due})
		}
	}
	v.mu.RUnlock()
	slices.SortStableFunc(all, func(a, b ended) int { return cmp.Compare(a.at, b.at) })
	out := make([]string, 0, min(n, len(all)))
	for _, e := range all[:min(n, len(all))] {
		out = append(out, e.id)
	}
	return out
}

// CountByState counts jobs per state.
func (v *View) CountByState() map[string]int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string]int{}
	for _, e := range v.jobs {
		out[e.kind.Value().state]++
	}
	return out
}
