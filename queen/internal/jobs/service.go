// Package jobs is the queen's job lifecycle: creating and placing jobs,
// cancelling them, turning narration into record updates, and ending jobs
// whose hive was lost or whose deadline passed. Every step is safe when
// several queens run it at once.
package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// Service runs the job lifecycle on one queen.
type Service struct {
	st *store.Store
	v  *view.View
	m  *metrics.Queen
	// relievedAt is when the reaper last checked the narration stream's
	// fill; only the reaper's goroutine reads and writes it.
	relievedAt time.Time
	log        *slog.Logger
	// Grace is how long past its deadline a job may stay open before the
	// queen ends it; the hive normally ends it first.
	Grace time.Duration
	// Policy is Spread or Binpack.
	Policy string
	// Retention is how long a job is kept after it was created; its
	// narration (the stream's MaxAge) ages out with it.
	Retention time.Duration
	// MaxNarrationBytes is each job's narration budget, sent to the hive
	// with the job; 0 is none.
	MaxNarrationBytes int64
	// InferQueueDepth bounds the inference requests of one model waiting
	// in the cluster's queue, however they came; past it Create is
	// ErrQueueFull. 0 is no bound.
	InferQueueDepth int

	// placing counts, by hive and model, the inferences this queen has
	// chosen a hive for whose records are not in the view's load yet;
	// placingOn the same by hive, and placingJobs the other jobs by hive:
	// a burst of jobs must not all go to the hive that looked emptiest.
	sentMu                          sync.Mutex
	placing, placingOn, placingJobs map[string]int
	// picks counts placements, and hivesSeen the hives at the last one:
	// where the turn of alike hives begins (pickLocked).
	picks, hivesSeen int
	// pending holds, by job, the dispatch records Create still writes in
	// the background (recordDispatchLater); each channel is closed once
	// its write is done.
	pendingMu sync.Mutex
	pending   map[string]chan struct{}
	// waitingSoon counts, by queue (view.Needs), the requests this queen
	// is storing as waiting whose records are not in the view yet:
	// requests that come together all read the view before any of them
	// is in it, and InferQueueDepth must count them all.
	waitingMu   sync.Mutex
	waitingSoon map[string]int
	// ConsumerKeptFor is how long a hive's work-queue consumer outlives
	// the hive: a hive back within it finds its queue as it left it. Each
	// consumer costs the NATS server memory and goroutines, and every hive
	// id ever seen (a simulated hive's, say) would keep one for good.
	ConsumerKeptFor time.Duration
	// woken asks the reaper to place waiting jobs now.
	woken chan struct{}
	// Delivered reads what the clients of a generation were sent before
	// its attempt (relay.Hub.Delivered); a moved generation continues
	// from it.
	Delivered func(ctx context.Context, job string, attempt int) (*api.Continuation, error)
	// Expect, when set, is told of each job before its first event is
	// stored (relay.Hub.Expect): whoever created it most likely follows it.
	Expect func(job string)
}

// New makes a service.
func New(st *store.Store, v *view.View, m *metrics.Queen, log *slog.Logger) *Service {
	return &Service{st: st, v: v, m: m, log: log.With("component", "jobs"), Grace: 5 * time.Second, Policy: Spread,
		ConsumerKeptFor: 10 * time.Minute, woken: make(chan struct{}, 1)}
}

// NewID makes a job id that sorts by creation time: 12 hex digits of
// milliseconds, then 16 random ones.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%012x%s", time.Now().UnixMilli(), hex.EncodeToString(b[:]))
}

// IDTime is when the job with id was created, from its first 12 hex
// digits (NewID); false for an id not made so.
func IDTime(id string) (time.Time, bool) {
	if len(id) < 12 {
		return time.Time{}, false
	}
	ms, err := strconv.ParseUint(id[:12], 16, 64)
	if err != nil || ms > math.MaxInt64 {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(ms)), true
}

// Create validates nothing (the caller did), places the job, stores its
// record and first event, and hands it to its hive. The job's narration is
// readable before Create returns. With an idempotency key, a repeat of the
// same request by the same principal returns the first job and
// created=false; the same key with another request is ErrIdempotencyMismatch.
// principal, the creating key's id, becomes the job's owner; its name is
// taken from the request's principal in ctx when that is the same key.
func (s *Service) Create(ctx context.Context, req api.JobRequest, principal, idemKey string) (api.Job, bool, error) {
	var idem string
	var claim store.IdempotencyClaim
	if idemKey != "" {
		// The key is scoped to who sent it, so one principal can neither
		// find nor block another's jobs by guessing its keys.
		sum := sha256.Sum256([]byte(principal + "\x00" + idemKey))
		idem = hex.EncodeToString(sum[:])
		body, err := json.Marshal(req)
		if err != nil {
			return api.Job{}, false, err
		}
		bs := sha256.Sum256(body)
		claim.Request = hex.EncodeToString(bs[:])
		if j, ok, err := s.byIdempotencyKey(ctx, idem, claim.Request, 0); ok || err != nil {
			return j, false, err
		}
	}
	spec := api.Operations[req.Operation]
	hive, waiting := "", ""
	release := func() {}
	defer func() { release() }()
	ahead := 0 // waiting jobs ahead in the job's own queue
	if !spec.OnQueen {
		ahead = s.v.Queued(req)
	}
	if req.Operation == api.OpInfer && s.InferQueueDepth > 0 && ahead >= s.InferQueueDepth {
		return api.Job{}, false, queueFull(ahead, req.Model())
	}
	// A model's requests are served first come, first served: a place on
	// a worker goes to those waiting. Other jobs too, but for those that
	// find room enough for them and all that wait: the record of a job
	// that ended reaches the view a moment after its end, so a hive can
	// look full for that moment, and were every job then to queue behind
	// the few waiting, each would cost the placer's round trips, slowing
	// the ends that would free the hive.
	behind := ahead > 0 && (req.Operation == api.OpInfer || s.roomFor(req, ahead) <= ahead)
	switch {
	case behind && req.Queue != nil && !*req.Queue:
		// Asking not to wait does not put a request ahead of those who do.
		return api.Job{}, false, fmt.Errorf("%w: %s", ErrNoCapableHive, waitsAhead(req, ahead))
	case behind:
		waiting = waitsAhead(req, ahead)
		defer s.wake()
	case !spec.OnQueen:
		h, rel, err := s.reserve(req, "")
		switch {
		case err == nil:
			hive, release = h.ID, rel
		case errors.Is(err, ErrNoCapableHive) && (req.Queue == nil || *req.Queue):
			// It may fit later: a hive may join or come back.
			waiting = strings.TrimPrefix(err.Error(), ErrNoCapableHive.Error()+": ")
		default:
			return api.Job{}, false, err
		}
	}
	if waiting != "" && req.Operation == api.OpInfer && s.InferQueueDepth > 0 {
		done, err := s.holdQueuePlace(req)
		if err != nil {
			return api.Job{}, false, err
		}
		defer done() // once the view counts the job, or it failed
	}
	now := time.Now().UTC()
	j := api.Job{
		JobID: NewID(), Operation: req.Operation, Hive: hive, State: api.StateQueued,
		CreatedAt: now, DeadlineAt: now.Add(req.Timeout()), Attempt: 1, Request: req, Owner: principal,
	}
	if hive != "" {
		j.PlacedAt = &now
	}
	if p := auth.FromContext(ctx); p.KeyID == principal {
		j.OwnerName, j.Priority = p.Name, p.Limits.Priority
	}
	data, err := s.st.EncodeJob(j)
	if err != nil {
		return api.Job{}, false, err
	}
	if idem != "" {
		claim.JobID = j.JobID
		if err := s.st.ClaimIdempotencyKey(ctx, idem, claim); errors.Is(err, store.ErrExists) {
			// A concurrent retry claimed the key first: answer with its
			// job once that job's record exists.
			j, ok, err := s.byIdempotencyKey(ctx, idem, claim.Request, idemWait)
			if err == nil && !ok {
				err = ErrIdempotencyPending
			}
			return j, false, err
		} else if err != nil {
			return api.Job{}, false, err
		}
	}
	if s.Expect != nil {
		s.Expect(j.JobID) // before its first event can be stored
	}
	msg := fmt.Sprintf("job created: %s on queen", j.Operation)
	switch {
	case hive != "":
		msg = fmt.Sprintf("job created: %s placed on hive %s", j.Operation, hive)
	case waiting != "":
		msg = fmt.Sprintf("job created: %s waits in the queue at position %d: %s", j.Operation, ahead+1, waiting)
	}
	// The record and the story's first event go to different streams and
	// neither waits for the other: two round trips at once. This queen's
	// view takes the job only after both.
	var rev uint64
	created := make(chan error, 1)
	go func() {
		created <- retry(ctx, func(ctx context.Context, retried bool) error {
			var err error
			rev, err = s.st.CreateEncoded(ctx, j.JobID, data)
			if retried && errors.Is(err, store.ErrExists) {
				return nil // the first try stored it; its revision is unknown
			}
			return err
		})
	}()
	told := retry(ctx, func(ctx context.Context, retried bool) error {
		if retried {
			if last, err := s.st.LastStreamSeq(ctx, j.JobID); err != nil || last > 0 {
				return err // stored by the first try, or still unavailable
			}
		}
		return s.st.Narrate(ctx, bus.KindEvent, api.Event{JobID: j.JobID, Seq: 1, Action: "job_created", Message: msg, Attempt: 1, Hive: hive})
	})
	err = <-created
	if err == nil {
		s.m.JobsCreated.WithLabelValues(j.Operation).Inc()
	}
	if err := cmp.Or(err, told); err != nil {
		// Either may be stored all the same (a timeout): what is ends,
		// failed, and nothing runs a job its client was told failed.
		s.abandon(j.JobID, err)
		return api.Job{}, false, err
	}
	// Into the view once its story has begun: from there the reaper may
	// place a waiting job and narrate after the first event.
	s.v.Wrote(j, rev)
	release()
	release = func() {}
	if spec.OnQueen {
		go s.runOnQueen(j)
		return j, true, nil
	}
	if hive == "" {
		return j, true, nil
	}
	if j.Operation == api.OpInfer {
		// A generation's first token waits for nothing but its hand-over:
		// the record's move to dispatched follows off the request's path.
		var dseq uint64
		if err := retry(ctx, func(ctx context.Context, _ bool) error {
			var err error
			dseq, err = s.publishDispatch(ctx, &j, 2)
			return err
		}); err != nil {
			s.abandon(j.JobID, err)
			return api.Job{}, false, err
		}
		rec := j
		rec.State, rec.DispatchSeq = api.StateDispatched, dseq
		s.recordDispatchLater(j, rev, dseq)
		return rec, true, nil
	}
	if err := retry(ctx, func(ctx context.Context, retried bool) error {
		if retried {
			rev = 0
		}
		return s.dispatch(ctx, &j, rev, 2)
	}); err != nil {
		s.abandon(j.JobID, err)
		return api.Job{}, false, err
	}
	return j, true, nil
}

// recordDispatchLater records, in the background, that the job created at
// revision rev was handed to its hive as dispatch message dseq; a record
// that cannot be written ends the job as a failed creation would. Until
// it is written the record stays queued on its hive with no dispatch
// sequence, which every reader takes as a dispatch under way: the applier
// moves it to running all the same, the reaper re-dispatches only after
// lostDispatchAfter, and Cancel waits for it (dispatchSettled) so that it
// can take the message out of the work queue.
func (s *Service) recordDispatchLater(j api.Job, rev, dseq uint64) {
	done := make(chan struct{})
	s.pendingMu.Lock()
	if s.pending == nil {
		s.pending = map[string]chan struct{}{}
	}
	s.pending[j.JobID] = done
	s.pendingMu.Unlock()
	go func() {
		defer func() {
			s.pendingMu.Lock()
			delete(s.pending, j.JobID)
			s.pendingMu.Unlock()
			close(done)
		}()
		// Not the request's context: the client may be gone already, and
		// the job is under way whatever it does.
		ctx, cancel := context.WithTimeout(context.Background(), retryFor+5*time.Second)
		defer cancel()
		err := retry(ctx, func(ctx context.Context, retried bool) error {
			if retried {
				rev = 0
			}
			return s.dispatched(ctx, &j, rev, dseq)
		})
		if err != nil {
			s.log.Warn("record dispatch; the job is abandoned", "job_id", j.JobID, "err", err)
			s.abandon(j.JobID, err)
		}
	}()
}

// dispatchSettled waits until this queen's record of job id's dispatch,
// if one is still being written (recordDispatchLater), is written.
func (s *Service) dispatchSettled(ctx context.Context, id string) {
	s.pendingMu.Lock()
	done := s.pending[id]
	s.pendingMu.Unlock()
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// idemWait is how long a retry that lost the race for its key waits for
// the winner's record.
const idemWait = 5 * time.Second

// byIdempotencyKey finds the job a key created, waiting up to wait for its
// record. It reports false when the key is unused, or its job's record is
// not there (yet, or any more).
func (s *Service) byIdempotencyKey(ctx context.Context, idem, request string, wait time.Duration) (api.Job, bool, error) {
	c, ok, err := s.st.IdempotencyKey(ctx, idem)
	if err != nil || !ok {
		return api.Job{}, false, err
	}
	if c.Request != request {
		return api.Job{}, false, ErrIdempotencyMismatch
	}
	deadline := time.Now().Add(wait)
	for {
		j, _, err := s.st.GetJob(ctx, c.JobID)
		if err == nil {
			return j, true, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return api.Job{}, false, err
		}
		if time.Now().After(deadline) {
			return api.Job{}, false, nil
		}
		select {
		case <-ctx.Done():
			return api.Job{}, false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dispatch puts the job on its hive's work queue and records it; the
// message id makes a retried publish a no-op. rev is the revision of *j
// when the caller knows it, 0 otherwise.
func (s *Service) dispatch(ctx context.Context, j *api.Job, rev, nextSeq uint64) error {
	dseq, err := s.publishDispatch(ctx, j, nextSeq)
	if err != nil {
		return err
	}
	return s.dispatched(ctx, j, rev, dseq)
}

// publishDispatch puts the job on its hive's work queue and returns the
// message's stream sequence; the message id makes a retried publish a
// no-op.
func (s *Service) publishDispatch(ctx context.Context, j *api.Job, nextSeq uint64) (uint64, error) {
	d := api.Dispatch{JobID: j.JobID, Attempt: j.Attempt, NextSeq: nextSeq, DeadlineAt: j.DeadlineAt, Request: j.Request,
		MaxNarrationBytes: s.MaxNarrationBytes}
	if j.Operation == api.OpInfer && j.Attempt > 1 && s.Delivered != nil {
		// A generation that moved continues from what its client has.
		c, err := s.Delivered(ctx, j.JobID, j.Attempt)
		if err != nil {
			return 0, fmt.Errorf("read what the client has: %w", err)
		}
		d.Continue = c
	}
	data, err := api.Marshal(d)
	if err != nil {
		return 0, err
	}
	return s.st.PublishDispatch(ctx, bus.DispatchMsg{Hive: j.Hive, Job: j.JobID, Attempt: j.Attempt, Operation: j.Request.Operation}, data)
}

// dispatched records in the job's record, known at revision rev (0:
// unknown), that its dispatch is message dseq of the work queue.
func (s *Service) dispatched(ctx context.Context, j *api.Job, rev, dseq uint64) error {
	var err error
	*j, err = s.update(ctx, *j, rev, func(r *api.Job) bool {
		r.DispatchSeq = dseq
		if r.State == api.StateQueued {
			r.State = api.StateDispatched
		}
		return true
	})
	return err
}

// update is store.UpdateJobAt that puts the record it wrote (or read, when
// change declined) in the view at once: the queen reads its own
// transitions from memory, not back from the watch.
func (s *Service) update(ctx context.Context, known api.Job, rev uint64, change func(*api.Job) bool) (api.Job, error) {
	j, rev, err := s.st.UpdateJobAt(ctx, known, rev, change)
	if err == nil {
		s.v.Wrote(j, rev)
	}
	return j, err
}

// abandon ends a job whose creation failed half-way, so that nothing is
// left waiting for it.
func (s *Service) abandon(id string, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.st.End(ctx, api.Event{JobID: id, Attempt: 1, State: api.StateFailed, Error: fmt.Sprintf("job could not be created: %v", cause)})
	_, _ = s.update(ctx, api.Job{JobID: id}, 0, func(j *api.Job) bool {
		now := time.Now().UTC()
		return store.ApplyEnd(j, api.EndInfo{State: api.StateFailed, Time: now, Error: cause.Error(), Writer: bus.QueenWriter})
	})
}

// place picks a hive: the pinned one if live, else, among the live hives
// but except that can run the operation, the one the placement policy
// prefers.
func (s *Service) place(req api.JobRequest, except string) (string, error) {
	h, release, err := s.reserve(req, except)
	if err != nil {
		return "", err
	}
	release()
	return h.ID, nil
}

// pick is the hive place would choose, as its last heartbeat and this
// queen's placements since describe it; nothing is counted.
func (s *Service) pick(req api.JobRequest) (api.Hive, error) {
	s.sentMu.Lock()
	defer s.sentMu.Unlock()
	return s.pickLocked(req, "")
}

// pickLocked is pick with sentMu held: the pinned hive if live, else one
// pass over the hives in place, with no copy of the cluster per job.
func (s *Service) pickLocked(req api.JobRequest, except string) (api.Hive, error) {
	model := req.Model()
	var load view.Load
	if req.Operation != api.OpInfer {
		model = ""
	} else {
		load = s.v.InferLoad(model)
	}
	if req.Hive != "" {
		h, ok := s.v.Hive(req.Hive)
		if !ok {
			return api.Hive{}, fmt.Errorf("%w: hive %s is not online", ErrNoCapableHive, req.Hive)
		}
		// A pinned hive without a worker for the model, or a slot, says
		// so itself.
		if model != "" {
			if serves, free := s.room(&h, model, load); serves && !free {
				return api.Hive{}, noRoom(model, true)
			}
		} else if _, ok := s.loaded(&h, s.v.JobLoad(h.ID)); !ok {
			return api.Hive{}, noSlot(h.ID)
		}
		return h, nil
	}
	var best api.Hive
	found, live, serving, full := false, false, false, false
	// Hives the policy ranks alike take turns: the first of them from
	// a place that moves on with each pick.
	start, i, bestRank := s.picks%max(s.hivesSeen, 1), -1, 0
	s.v.EachHiveLoaded(func(h *api.Hive, jobs int) bool {
		live = true
		i++
		if h.ID == except || !fits(h, req) {
			return true
		}
		var c api.Hive
		if model != "" {
			serves, free := s.room(h, model, load)
			serving = serving || serves
			if !free {
				return true
			}
			c = *h
			// The heartbeat's count, or the view's with what this queen
			// is placing, whichever is newer news: the larger.
			c.InferRunning = max(h.InferRunning, load.All[h.ID]+s.placingOn[h.ID])
		} else if free, ok := s.loaded(h, jobs); ok {
			c = *h
			c.SlotsFree = free
		} else {
			full = true
			return true
		}
		rank := i - start
		if rank < 0 {
			rank += 1 << 30
		}
		if !found || s.better(c, best, req) || !s.better(best, c, req) && rank < bestRank {
			best, found, bestRank = c, true, rank
		}
		return true
	})
	s.hivesSeen = i + 1
	switch {
	case found:
		s.picks++
		return best, nil
	case model != "" && live:
		return api.Hive{}, noRoom(model, serving)
	case full:
		return api.Hive{}, noSlot("")
	}
	return api.Hive{}, noHive(live)
}

// waitsAhead says how many wait ahead of a request in its queue.
func waitsAhead(req api.JobRequest, ahead int) string {
	if req.Operation == api.OpInfer {
		return fmt.Sprintf("%d requests for model %s wait ahead", ahead, req.Model())
	}
	return fmt.Sprintf("%d jobs that need the same of a hive wait ahead", ahead)
}

// roomFor counts, up to more than upTo, the jobs but inferences that the
// hives that can take req have room for now (loaded).
func (s *Service) roomFor(req api.JobRequest, upTo int) int {
	s.sentMu.Lock()
	defer s.sentMu.Unlock()
	n := 0
	s.v.EachHiveLoaded(func(h *api.Hive, jobs int) bool {
		if (req.Hive == "" || h.ID == req.Hive) && fits(h, req) {
			n += max(jobRoom(h)-jobs-s.placingJobs[h.ID], 0)
		}
		return n <= upTo
	})
	return n
}

// waitOnHive is how many jobs, beyond one for each of its slots, a hive
// may hold waiting on its work queue, per slot: enough that a slot that
// frees starts the next job at once, without waiting for a queen, and few
// enough that a backlog stays in the cluster's queue, for every hive that
// joins, rather than going whole to the first that comes.
const waitOnHive = 1

// loaded counts on h the jobs placed there (jobs, the view's count, and
// those this queen is placing there now) and reports whether it may take
// one more (ok): its slots, and waitOnHive more per slot, are not all
// taken. free is its free slots: what its heartbeat said or what those
// jobs leave, whichever is fewer. The caller holds sentMu.
func (s *Service) loaded(h *api.Hive, jobs int) (free int, ok bool) {
	open := jobs + s.placingJobs[h.ID]
	return max(min(h.SlotsFree, h.Slots-open), 0), open < jobRoom(h)
}

// jobRoom is how many jobs but inferences h may hold: its slots, and
// waitOnHive more per slot.
func jobRoom(h *api.Hive) int { return max(h.Slots, 1) * (1 + waitOnHive) }

// noSlot says that the hives that could take a job, or the one it names,
// have no room for it.
func noSlot(hive string) error {
	if hive != "" {
		return fmt.Errorf("%w: hive %s %w: its slots and its queue are full", ErrNoCapableHive, hive, errBusy)
	}
	return fmt.Errorf("%w: every hive that can take the job %w: their slots and queues are full", ErrNoCapableHive, errBusy)
}

func queueFull(n int, model string) error {
	return fmt.Errorf("%w: %d requests for model %s already wait in the cluster's queue", ErrQueueFull, n, model)
}

// holdQueuePlace counts req among its queue's waiting requests until done
// is called, or is ErrQueueFull when the queue, with the requests this
// queen is storing now, has InferQueueDepth already.
func (s *Service) holdQueuePlace(req api.JobRequest) (done func(), err error) {
	k := view.Needs(req)
	s.waitingMu.Lock()
	defer s.waitingMu.Unlock()
	if n := s.v.Queued(req) + s.waitingSoon[k]; n >= s.InferQueueDepth {
		return nil, queueFull(n, req.Model())
	}
	if s.waitingSoon == nil {
		s.waitingSoon = map[string]int{}
	}
	s.waitingSoon[k]++
	return func() {
		s.waitingMu.Lock()
		defer s.waitingMu.Unlock()
		if s.waitingSoon[k]--; s.waitingSoon[k] <= 0 {
			delete(s.waitingSoon, k)
		}
	}, nil
}

// fits reports whether h can take req at all: the run operation where
// allowed, every label the request asks for.
func fits(h *api.Hive, req api.JobRequest) bool {
	return (req.Operation != api.OpRun || h.AllowRun) && labelsMatch(h.Labels, req.Labels)
}

// noHive says why no hive fits.
func noHive(anyLive bool) error {
	why := "no hive is online"
	if anyLive {
		why = "no online hive matches the request's labels and operation"
	}
	return fmt.Errorf("%w: %s", ErrNoCapableHive, why)
}

// Placement policies.
const (
	// Spread puts work where the most slots are free.
	Spread = "spread"
	// Binpack fills the busiest hive that still has a free slot first,
	// keeping other machines idle (and their GPUs free for big models).
	Binpack = "binpack"
)

// better reports whether hive a should be chosen over b: hives that hold
// the job's model first, then hives with a free slot, then by policy.
func (s *Service) better(a, b api.Hive, req api.JobRequest) bool {
	if model := req.Model(); model != "" {
		ha, hb := holds(a, model), holds(b, model)
		if ha != hb {
			return ha
		}
	}
	if req.Operation == api.OpInfer && (a.InferSlots > 0 || b.InferSlots > 0) {
		// Inference takes no job slot on a hive that counts it apart:
		// the hive with the fewest generations in hand goes first.
		return a.InferRunning < b.InferRunning
	}
	if (a.SlotsFree > 0) != (b.SlotsFree > 0) {
		return a.SlotsFree > 0
	}
	if s.Policy == Binpack {
		return a.SlotsFree < b.SlotsFree
	}
	return a.SlotsFree > b.SlotsFree
}

func holds(h api.Hive, model string) bool {
	for _, m := range h.Models {
		if m.ModelID == model {
			return true
		}
	}
	return false
}

func labelsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Get reads a record. If the record lags behind an end event that is
// already stored (the applier has not run yet), the end is applied first,
// so a client that saw the end over SSE never reads an older state.
func (s *Service) Get(ctx context.Context, id string) (api.Job, error) {
	j, _, err := s.st.GetJob(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return j, ErrNotFound
	}
	if err != nil || api.Terminal(j.State) {
		return j, err
	}
	end, _, err := s.st.EndOf(ctx, id)
	if err != nil || end == nil {
		return j, err
	}
	return s.update(ctx, api.Job{JobID: id}, 0, func(r *api.Job) bool { return store.ApplyEnd(r, *end) })
}

// Cancel stops a job. A job its hive is running is stopped by the hive,
// which kills the work and narrates the end; any other job is ended here.
func (s *Service) Cancel(ctx context.Context, id string) (api.Job, error) {
	// A job created a moment ago may still have its dispatch recorded;
	// the cancel reads its dispatch sequence from the record.
	s.dispatchSettled(ctx, id)
	var prior string
	j, err := s.update(ctx, api.Job{JobID: id}, 0, func(r *api.Job) bool {
		prior = r.State
		if api.Terminal(r.State) {
			return false
		}
		now := time.Now().UTC()
		r.State, r.CancelRequestedAt = api.StateCancelling, &now
		return true
	})
	if errors.Is(err, store.ErrNotFound) {
		return j, ErrNotFound
	}
	if err != nil {
		return j, err
	}
	if api.Terminal(prior) {
		return j, ErrTerminal
	}
	if j.Hive != "" && s.askHiveToCancel(ctx, j) {
		return j, nil
	}
	if j.DispatchSeq > 0 {
		// Taking the message out of the queue spares the hive a pickup; if
		// the hive has it already, it finds the end and skips it.
		_ = s.st.RemoveDispatch(ctx, j.DispatchSeq)
	}
	err = s.st.End(ctx, api.Event{JobID: id, Attempt: j.Attempt, Hive: j.Hive, State: api.StateCancelled, Error: "cancelled by request", Message: "job cancelled before it ran"})
	if err != nil && !errors.Is(err, store.ErrAlreadyEnded) {
		return j, err
	}
	return j, nil
}

// askHiveToCancel reports whether the hive has the job running and will end
// it itself.
func (s *Service) askHiveToCancel(ctx context.Context, j api.Job) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	reply, err := s.st.RequestCancel(ctx, j.Hive, bus.CancelRequest{JobID: j.JobID})
	return err == nil && reply.Running
}

// runOnQueen answers operations the queen handles itself.
func (s *Service) runOnQueen(j api.Job) {
	ctx, cancel := context.WithTimeout(context.Background(), j.DeadlineAt.Sub(time.Now()))
	defer cancel()
	end := api.Event{JobID: j.JobID, Seq: 4, Attempt: 1, State: api.StateDone, Message: "job done"}
	_ = s.st.Narrate(ctx, bus.KindStart, api.Event{JobID: j.JobID, Seq: 2, Action: "started", Message: "status on queen"})
	if err := s.st.Narrate(ctx, bus.KindData, api.Event{JobID: j.JobID, Seq: 3, Action: "status", Message: "cluster status", Data: s.Status()}); err != nil {
		end.State, end.Error = api.StateFailed, err.Error()
	}
	if err := s.st.End(ctx, end); err != nil && !errors.Is(err, store.ErrAlreadyEnded) {
		s.log.Warn("end queen job", "job_id", j.JobID, "err", err)
	}
}

// Status summarises the cluster.
func (s *Service) Status() api.Status {
	st := api.Status{JobsByState: s.v.CountByState(), Hives: []api.HiveSummary{}}
	for _, h := range s.v.Hives() {
		st.Hives = append(st.Hives, api.HiveSummary{ID: h.ID, Slots: h.Slots, SlotsFree: h.SlotsFree, GPUs: len(h.Inventory.GPUs), AllowRun: h.AllowRun})
		st.GPUs += len(h.Inventory.GPUs)
		st.Slots += h.Slots
		st.SlotsFree += h.SlotsFree
	}
	return st
}
