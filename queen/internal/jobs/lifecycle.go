package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// applierShards is how many jobs' records are updated at once. Events of one
// job always go to the same shard, so its start is applied before its end.
const applierShards = 16

// RunApplier turns start and end events into record updates until ctx ends.
// Its durable consumer is shared by every queen, so each event is applied
// once while any queen runs, and events stored while none ran are applied
// when one starts.
func (s *Service) RunApplier(ctx context.Context) error {
	var cons jetstream.Consumer
	for {
		var err error
		cons, err = s.st.ApplierConsumer(ctx)
		if err == nil {
			break
		}
		s.log.Warn("create applier consumer", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	var wg sync.WaitGroup
	shards := make([]chan jetstream.Msg, applierShards)
	for i := range shards {
		shards[i] = make(chan jetstream.Msg, 256)
		wg.Add(1)
		go func(ch chan jetstream.Msg) {
			defer wg.Done()
			for m := range ch {
				s.apply(ctx, m)
			}
		}(shards[i])
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		job, _, _, _ := bus.ParseNarr(m.Subject())
		h := fnv.New32a()
		_, _ = h.Write([]byte(job))
		shards[h.Sum32()%applierShards] <- m
	}, jetstream.PullMaxMessages(1024), jetstream.PullExpiry(store.PullExpiry), jetstream.PullHeartbeat(store.PullHeartbeat))
	if err != nil {
		return fmt.Errorf("consume applier: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	for _, ch := range shards {
		close(ch)
	}
	wg.Wait()
	return nil
}

// startOrEnd is what the applier reads of a start or end event.
type startOrEnd struct {
	api.EndInfo
	JobID string `json:"job_id"`
}

func (s *Service) apply(ctx context.Context, m jetstream.Msg) {
	job, writer, kind, ok := bus.ParseNarr(m.Subject())
	var e startOrEnd
	switch {
	case !ok || json.Unmarshal(m.Data(), &e) != nil || e.JobID != job:
		s.reject(ctx, m, kind, metrics.RejectInvalid)
		return
	case e.Seq == 0:
		s.reject(ctx, m, kind, metrics.RejectSequence)
		return
	case kind == bus.KindEnd && !api.Terminal(e.State):
		s.reject(ctx, m, kind, metrics.RejectNotTerminal)
		return
	}
	if kind == bus.KindEnd {
		// The subject, not the body, says which attempt an end ends.
		e.Attempt = bus.EndAttempt(m.Subject())
	}
	e.Attempt, e.Writer = max(e.Attempt, 1), writer
	// A frame with headers is judged by them, as the relay judges it; its
	// body must say the same.
	if _, ok := m.Headers()[bus.HeaderSeq]; ok {
		meta, bad := bus.ParseMeta(m.Subject(), m.Headers())
		switch {
		case bad == bus.BadSeq:
			s.reject(ctx, m, kind, metrics.RejectSequence)
			return
		case bad != "" || meta.Seq != e.Seq || meta.Attempt != e.Attempt:
			s.reject(ctx, m, kind, metrics.RejectInvalid)
			return
		}
	}
	// Start from the view's copy: it is current unless another write is
	// still on its way to the watch, and then the update retries.
	known, rev, _ := s.v.JobAt(job)
	known.JobID = job
	foreign := false
	rec, err := s.update(ctx, known, rev, func(j *api.Job) bool {
		// Judged on the record as the update reads it: a declined change
		// on a stale copy is asked again on a fresh one.
		// Earlier attempts are declined below as stale.
		foreign = e.Attempt >= j.Attempt && !store.Writes(*j, writer, e.Attempt, 0)
		if foreign {
			return false
		}
		if kind == bus.KindEnd {
			return store.ApplyEnd(j, e.EndInfo)
		}
		if (j.State != api.StateQueued && j.State != api.StateDispatched) || e.Attempt < j.Attempt {
			return false
		}
		t := e.Time
		j.State, j.StartedAt = api.StateRunning, &t
		return true
	})
	if err == nil && kind == bus.KindEnd && !foreign {
		err = s.countUsage(ctx, rec, writer, e.EndInfo)
	}
	switch {
	case err == nil && foreign:
		s.reject(ctx, m, kind, metrics.RejectWriter)
	case err == nil:
		// Each start and end event reaches one queen's applier once, so
		// counting here counts every job once across the cluster, even
		// when another path applied the end to the record first.
		if kind == bus.KindEnd {
			s.m.ObserveEnd(rec.Operation, e.State, rec.CreatedAt, e.Time)
		} else {
			s.m.ObserveStart(rec.Operation, rec.CreatedAt, e.Time)
		}
		_ = m.Ack()
	case errors.Is(err, store.ErrNotFound):
		_ = m.Ack()
	default:
		s.log.Warn("apply narration to record", "job_id", job, "err", err)
		_ = m.NakWithDelay(time.Second)
	}
}

// reject drops a start or end that its writer may not write or that is not
// a valid event. A rejected end is deleted from the stream too: it holds its
// attempt's one end slot, which the hive of the attempt or the queen need.
func (s *Service) reject(ctx context.Context, m jetstream.Msg, kind, reason string) {
	s.m.NarrationRejected.WithLabelValues(reason).Inc()
	if md, err := m.Metadata(); err == nil && kind == bus.KindEnd {
		if err := s.st.DeleteEvent(ctx, md.Sequence.Stream); err != nil {
			s.log.Warn("delete rejected end", "subject", m.Subject(), "err", err)
		}
	}
	_ = m.Term()
}

// RunReaper ends, once a second, every job that can no longer end by
// itself: its hive is gone, its deadline passed long ago, or a cancel was
// never confirmed. Several queens may reap at once; the one-end rule makes
// that harmless. A waiting job whose deadline falls between two passes is
// ended when it passes, not up to a second later.
func (s *Service) RunReaper(ctx context.Context) error {
	select {
	case <-s.v.Synced():
	case <-ctx.Done():
		return nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var due <-chan time.Time
	for {
		var next time.Time
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			next = s.reap(ctx)
		case <-due:
			next = s.endWaitedPast(ctx, time.Now())
		case <-s.v.Freed():
			// A worker's place freed: the next waiting request goes now.
			// The deadline timer stays as it was.
			s.placeWaiting(ctx)
			continue
		case <-s.woken:
			s.placeWaiting(ctx)
			continue
		}
		due = nil
		if wait := time.Until(next); !next.IsZero() && wait < time.Second {
			// WaitedPast counts a deadline as passed once now is after it.
			due = time.After(wait + time.Millisecond)
		}
	}
}

// endWaitedPast fails the waiting jobs whose deadline passed before now
// and returns the soonest deadline of those still waiting.
func (s *Service) endWaitedPast(ctx context.Context, now time.Time) time.Time {
	past, next := s.v.WaitedPast(ctx, now)
	for _, j := range past {
		s.endFor(ctx, j, api.Event{State: api.StateFailed, Error: "deadline exceeded", Message: "no hive could take the job before its deadline"})
	}
	return next
}

// reap is one pass; it returns the soonest deadline of the jobs still
// waiting for a hive (zero when none waits).
func (s *Service) reap(ctx context.Context) time.Time {
	now := time.Now()
	s.expire(ctx, now)
	s.relieve(ctx, now)
	next := s.endWaitedPast(ctx, now)
	for _, j := range s.v.Underway() {
		var e api.Event
		switch {
		case j.Hive != "" && !s.hiveLive(j.Hive) && now.Sub(j.CreatedAt) > time.Second:
			if s.replace(ctx, j, fmt.Sprintf("hive %s lost", j.Hive)) {
				continue
			}
			e = api.Event{State: api.StateFailed, Error: fmt.Sprintf("hive %s lost", j.Hive), Message: fmt.Sprintf("hive %s stopped sending heartbeats", j.Hive)}
		case j.Hive != "" && j.State == api.StateRunning && s.yielded(j):
			if s.replace(ctx, j, fmt.Sprintf("the worker on hive %s broke", j.Hive)) {
				continue
			}
			e = api.Event{State: api.StateFailed, Error: "worker lost", Message: fmt.Sprintf("the worker of the generation on hive %s broke and no other worker could continue it", j.Hive)}
		case now.After(j.DeadlineAt) && j.State == api.StateDispatched && s.neverBegun(ctx, j):
			// Still on its hive's work queue: taken out, it ends now, not
			// after the grace a running job's hive has to end it.
			if j.DispatchSeq > 0 {
				_ = s.st.RemoveDispatch(ctx, j.DispatchSeq)
			}
			e = api.Event{State: api.StateFailed, Error: "deadline exceeded", Message: fmt.Sprintf("the job waited for a slot of hive %s past its deadline", j.Hive)}
		case now.After(j.DeadlineAt.Add(s.Grace)):
			e = api.Event{State: api.StateFailed, Error: "deadline exceeded", Message: "the job ran past its deadline and its hive did not end it"}
		case j.State == api.StateQueued && j.Hive != "" && j.DispatchSeq == 0 && now.Sub(placedAt(j)) > lostDispatchAfter:
			if now.Sub(placedAt(j)) < redispatchWithin {
				s.redispatch(ctx, j) // a failure is tried again next pass
				continue
			}
			e = api.Event{State: api.StateFailed, Error: "dispatch lost", Message: fmt.Sprintf("the queen that placed the job on hive %s stopped before handing it over", j.Hive)}
		case j.State == api.StateCancelling && j.CancelRequestedAt != nil && now.After(j.CancelRequestedAt.Add(s.Grace)) && s.cancelStale(ctx, j):
			e = api.Event{State: api.StateCancelled, Error: "cancelled by request", Message: "job cancelled"}
		default:
			continue
		}
		s.endFor(ctx, j, e)
	}
	s.placeWaiting(ctx)
	s.reconcile(ctx)
	return next
}

// placeWaiting hands waiting jobs to hives that can now take them, oldest
// first. Jobs that need the same kind of hive share one answer, so a long
// queue that no live hive can serve costs nothing per tick.
func (s *Service) placeWaiting(ctx context.Context) {
	for _, req := range s.v.WaitingNeeds() {
		infer := req.Operation == api.OpInfer
		if _, err := s.pick(req); err != nil && !infer {
			continue
		}
		p := &placer{s: s, ctx: ctx, infer: infer}
		for j, err := range s.v.WaitingFor(ctx, req) {
			if err != nil {
				// Tried again on the next pass.
				s.log.Warn("place waiting jobs", "err", err)
				break
			}
			if !p.place(j) {
				break
			}
		}
		p.wait()
	}
}

// placeParallel is how many waiting jobs of one kind, inference aside, the
// reaper places at once. A placement is several NATS round trips (the
// record's update, the placing event, the dispatch, the record's update
// again): one at a time, a long queue drains at the pace of those round
// trips, not of the hives or the queen's CPU. Placing several at once may
// start a job a few places behind another before it, never one a hive
// cannot take.
const placeParallel = 16

// placer places the waiting jobs of one kind, in the order given, and
// stops at the first that cannot go.
type placer struct {
	s     *Service
	ctx   context.Context
	infer bool
	sem   chan struct{}
	wg    sync.WaitGroup
	stop  atomic.Bool
}

// place places j, an inference at once, any other job in the background
// beside up to placeParallel-1 others. It reports false when no job behind
// j should be tried this pass.
func (p *placer) place(j api.Job) bool {
	if p.ctx.Err() != nil || p.stop.Load() {
		return false
	}
	// The hive is chosen here, one job after another, so that a pass
	// stops at the first job no hive has room for, having read no more.
	h, release, err := p.s.reserve(j.Request, "")
	if err != nil {
		// A model's queue holds requests pinned to a hive or asking for
		// labels too: one that cannot go yet does not hold up those
		// behind it that can.
		return p.infer && constrained(j.Request)
	}
	if p.infer {
		placed, lost := p.s.placeQueued(p.ctx, j, h, release)
		return !lost && p.ctx.Err() == nil && (placed || constrained(j.Request))
	}
	if p.sem == nil {
		p.sem = make(chan struct{}, placeParallel)
	}
	select {
	case p.sem <- struct{}{}:
	case <-p.ctx.Done():
		release()
		return false
	}
	if p.stop.Load() {
		<-p.sem
		release()
		return false
	}
	p.wg.Add(1)
	go func() {
		defer func() { <-p.sem; p.wg.Done() }()
		// One another queen placed first means this queen's view is
		// behind.
		if placed, lost := p.s.placeQueued(p.ctx, j, h, release); lost || !placed {
			p.stop.Store(true)
		}
	}()
	return true
}

// wait returns once every placement begun has ended.
func (p *placer) wait() { p.wg.Wait() }

// constrained reports whether req asks for particular hives.
func constrained(req api.JobRequest) bool { return req.Hive != "" || len(req.Labels) > 0 }

// expire deletes the records of jobs past retention, so that they leave
// every queen's listing together with their first narration, which the
// stream's MaxAge removes at the same age. The bucket's TTL removes what a
// stopped cluster did not get to, but an expired key tells no watcher.
func (s *Service) expire(ctx context.Context, now time.Time) {
	if s.Retention <= 0 {
		return
	}
	for _, id := range s.v.Expired(now.Add(-s.Retention)) {
		if err := s.st.PurgeJob(ctx, id); err != nil {
			s.log.Warn("expire job", "job_id", id, "err", err)
		}
	}
}

// The narration stream refuses new events once full (it never drops other
// jobs' narration on its own): a running job would fail and a refused end
// would leave a job open for good. So when it is fuller than narrationHigh,
// the oldest finished jobs leave early, narration and record, until it is
// under narrationLow: under disk pressure the promise to running jobs
// outranks the retention of finished ones.
const (
	narrationHigh = 0.8
	narrationLow  = 0.6
	// reliefEvery is how often the stream's fill is checked.
	reliefEvery = time.Second
)

// relieve makes room in a nearly full narration stream; see narrationHigh.
func (s *Service) relieve(ctx context.Context, now time.Time) {
	if now.Sub(s.relievedAt) < reliefEvery {
		return
	}
	s.relievedAt = now
	bytes, maxBytes, err := s.st.NarrationFill(ctx)
	if err != nil || maxBytes <= 0 {
		return
	}
	limit := float64(maxBytes)
	if float64(bytes) < narrationHigh*limit {
		return
	}
	before, dropped := bytes, 0
	for _, id := range s.v.OldestFinished(256) {
		if err := s.st.PurgeNarration(ctx, id); err != nil {
			s.log.Warn("drop narration of a finished job", "job_id", id, "err", err)
			break
		}
		_ = s.st.PurgeJob(ctx, id)
		dropped++
		if dropped%8 == 0 {
			if bytes, _, err = s.st.NarrationFill(ctx); err != nil || float64(bytes) < narrationLow*limit {
				break
			}
		}
	}
	if bytes, maxBytes, err = s.st.NarrationFill(ctx); err == nil {
		s.log.Warn("narration stream nearly full: dropped the oldest finished jobs before their retention; raise --narration-max-bytes",
			"jobs", dropped, "bytes_before", before, "bytes_now", bytes, "max_bytes", maxBytes)
	}
}

// placeQueued hands a waiting job to hive h, which reserve chose; release
// ends the reservation. Queens race for the job by compare-and-set; one
// wins and dispatches. It reports whether it placed the job, and lost
// when another queen placed it first, so this queen's view is behind.
func (s *Service) placeQueued(ctx context.Context, j api.Job, h api.Hive, release func()) (placed, lost bool) {
	defer release()
	to := h.ID
	won := false
	// Start from the view's copy, as the applier does: a stale one costs
	// a retry, a current one saves reading the record.
	known, rev, ok := s.v.JobAt(j.JobID)
	if !ok {
		known, rev = api.Job{JobID: j.JobID}, 0
	}
	rec, err := s.update(ctx, known, rev, func(r *api.Job) bool {
		// Judged afresh on each try: after a lost race the retry reads
		// the winner's record and must not still count as won.
		won = r.State == api.StateQueued && r.Hive == ""
		if won {
			now := time.Now().UTC()
			r.Hive, r.PlacedAt = to, &now
		}
		return won
	})
	if err != nil || !won {
		return false, err == nil
	}
	if n := len(rec.PastHives); n > 0 && rec.PastHives[n-1].Until == 0 {
		// A generation moved into the queue by a queen that stopped
		// before it narrated the move: the move comes first.
		_, err = s.finishMove(ctx, rec)
	}
	var seq uint64
	if err == nil {
		seq, _, err = s.st.NarrateNext(ctx, bus.KindEvent, api.Event{JobID: j.JobID, Attempt: rec.Attempt, Action: "placed", Hive: to,
			Message: fmt.Sprintf("placed on hive %s after waiting %s", to, time.Since(j.CreatedAt).Round(time.Millisecond))}, "")
	}
	if err == nil {
		err = s.dispatch(ctx, &rec, 0, seq+1)
	}
	if err != nil {
		s.log.Warn("place queued job", "job_id", j.JobID, "err", err)
	}
	return true, false
}

// A record placed on a hive but still queued without a dispatch sequence
// lostDispatchAfter after its placement lost its dispatch: the queen that
// stored it stopped before handing it over, or could not. Within
// redispatchWithin of its placement it is dispatched again; the message id
// makes that a no-op if the first dispatch did reach the work queue, and
// the window stays inside the
// stream's two-minute duplicates window, past which a second message could
// run the job twice. Older, it fails: the hive skips a dispatch whose job
// already ended.
const (
	lostDispatchAfter = 5 * time.Second
	redispatchWithin  = time.Minute
)

// placedAt is when j was placed on its hive; a record written before
// PlacedAt existed was placed when it was created.
func placedAt(j api.Job) time.Time {
	if j.PlacedAt != nil {
		return *j.PlacedAt
	}
	return j.CreatedAt
}

// redispatch hands a job whose dispatch was lost to its hive again.
func (s *Service) redispatch(ctx context.Context, j api.Job) {
	var last uint64
	var err error
	if n := len(j.PastHives); n > 0 && j.PastHives[n-1].Until == 0 {
		last, err = s.finishMove(ctx, j)
	} else {
		last, err = s.st.LastSeq(ctx, j.JobID, j.Hive)
	}
	if err == nil {
		err = s.dispatch(ctx, &j, 0, last+1)
	}
	if err != nil {
		s.log.Warn("re-dispatch job", "job_id", j.JobID, "hive_id", j.Hive, "err", err)
		return
	}
	s.log.Warn("dispatch was lost; job dispatched again", "job_id", j.JobID, "hive_id", j.Hive)
}

// finishMove does what the queen that moved j (replace) stopped before
// doing: narrate the move, unless it is stored, and record where the
// earlier attempt's story ends, just before it. It returns the move
// event's job sequence, which the new hive numbers after.
func (s *Service) finishMove(ctx context.Context, j api.Job) (uint64, error) {
	past := j.PastHives[len(j.PastHives)-1].Hive
	action := "replaced"
	if j.Operation == api.OpInfer {
		action = "moved"
	}
	seq, at, err := s.st.NarrateMove(ctx, api.Event{JobID: j.JobID, Attempt: j.Attempt, Action: action, Hive: j.Hive, Level: api.LevelWarn,
		Message: fmt.Sprintf("job re-placed on hive %s after hive %s (attempt %d of %d)", j.Hive, past, j.Attempt, maxAttempts)}, past)
	if err != nil {
		return 0, err
	}
	s.pastUntil(ctx, j, at-1)
	return seq, nil
}

// maxAttempts bounds how often a job is re-placed after losing its hive.
const maxAttempts = 3

// replace moves a job whose hive was lost (or, for a generation, whose
// hive handed it back) to another hive, when running it again is safe
// (the operation is retryable, or the generation can continue from what
// its client has; the user did not pin a hive) and another hive can take
// it; a generation that the model's other workers have no room for yet
// goes back into its model's queue. The attempt number rises; the relay uses it to drop whatever the
// old hive still writes for the old attempt, and the new attempt's
// dispatch carries what the client has (dispatch).
func (s *Service) replace(ctx context.Context, j api.Job, why string) bool {
	if j.Request.Hive != "" || j.State == api.StateCancelling || j.Attempt >= maxAttempts {
		return false
	}
	if ok, err := s.movable(ctx, j); err != nil {
		return true // tried again on the next pass
	} else if !ok {
		return false
	}
	infer := j.Operation == api.OpInfer
	to, err := s.place(j.Request, j.Hive)
	// With no hive to take it now, it waits in the queue as a new job
	// would: for a worker's place, or for any hive.
	mayWait := j.Request.Queue == nil || *j.Request.Queue
	if err != nil && !(mayWait && errors.Is(err, ErrNoCapableHive) && (!infer || errors.Is(err, errBusy))) {
		return false
	}
	// What the lost hive stores before the event that moves the job stays
	// the old attempt's story, and the event is numbered after it; what it
	// stores later is not (store.Writes). Until that event's place is
	// known, the record leaves the bound open (0); should the event not be
	// written, the bound is where the story stood now.
	until, err := s.st.LastStreamSeq(ctx, j.JobID)
	if err != nil {
		return true // tried again on the next pass
	}
	won := false
	rec, err := s.update(ctx, api.Job{JobID: j.JobID}, 0, func(r *api.Job) bool {
		won = false // a retry after a lost race judges the winner's record
		if r.Attempt != j.Attempt || r.Hive != j.Hive || api.Terminal(r.State) || r.State == api.StateCancelling {
			return false
		}
		r.PastHives = append(slices.Clip(r.PastHives), api.PastHive{Hive: r.Hive})
		// Queued on its new hive until the dispatch is recorded: should
		// this queen stop before that, the reaper dispatches it again.
		r.Attempt, r.Hive, r.State, r.StartedAt, r.DispatchSeq = j.Attempt+1, to, api.StateQueued, nil, 0
		now := time.Now().UTC()
		r.PlacedAt = &now
		won = true
		return true
	})
	if err != nil || !won {
		return won
	}
	if j.DispatchSeq > 0 {
		_ = s.st.RemoveDispatch(ctx, j.DispatchSeq)
	}
	action, msg := "replaced", fmt.Sprintf("%s; job re-placed on hive %s (attempt %d of %d)", why, to, rec.Attempt, maxAttempts)
	if to == "" {
		msg = fmt.Sprintf("%s; job waits in the queue for another hive (attempt %d of %d)", why, rec.Attempt, maxAttempts)
	}
	if infer {
		action = "moved"
		msg = fmt.Sprintf("%s; the generation moves to hive %s and continues from what its client has (attempt %d of %d)", why, to, rec.Attempt, maxAttempts)
		if to == "" {
			msg = fmt.Sprintf("%s; the generation waits in the queue for another worker of %s, then continues from what its client has (attempt %d of %d)", why, j.Request.Model(), rec.Attempt, maxAttempts)
		}
	}
	// Another queen finishing this move (finishMove) stores its one event.
	seq, moved, err := s.st.NarrateMove(ctx, api.Event{JobID: j.JobID, Attempt: rec.Attempt, Action: action, Hive: to, Level: api.LevelWarn, Message: msg}, j.Hive)
	if err == nil {
		until = moved - 1
	}
	s.pastUntil(ctx, rec, until)
	if to == "" {
		s.wake()
		return true
	}
	if err == nil {
		err = s.dispatch(ctx, &rec, 0, seq+1)
	}
	if err != nil {
		s.log.Warn("re-place job", "job_id", j.JobID, "err", err)
	}
	return true
}

// pastUntil records where the story of the attempt before rec's ends
// (api.PastHive), unless another queen did; the job may have moved on
// again since.
func (s *Service) pastUntil(ctx context.Context, rec api.Job, until uint64) {
	p := rec.Attempt - 2
	hive := rec.PastHives[p].Hive
	_, err := s.update(ctx, api.Job{JobID: rec.JobID}, 0, func(r *api.Job) bool {
		if p >= len(r.PastHives) || r.PastHives[p].Hive != hive || r.PastHives[p].Until != 0 {
			return false
		}
		r.PastHives = slices.Clone(r.PastHives)
		r.PastHives[p].Until = until
		return true
	})
	if err != nil {
		s.log.Warn("record where the job's earlier attempt ends", "job_id", rec.JobID, "err", err)
	}
}

// dropGoneConsumers removes the work-queue consumers of hives gone for
// ConsumerKeptFor (gone notes when each was first seen gone), but not
// while jobs are placed on them: the reaper moves or ends those first.
func (s *Service) dropGoneConsumers(ctx context.Context, gone map[string]time.Time, now time.Time) {
	hives, err := s.st.DispatchConsumerHives(ctx)
	if err != nil {
		s.log.Warn("list dispatch consumers", "err", err)
		return
	}
	seen := map[string]bool{}
	for _, id := range hives {
		if s.hiveLive(id) || s.v.Placed(id) > 0 {
			continue
		}
		seen[id] = true
		since, ok := gone[id]
		if !ok {
			gone[id] = now
			continue
		}
		if now.Sub(since) >= s.ConsumerKeptFor {
			if err := s.st.DeleteDispatchConsumer(ctx, id); err != nil {
				s.log.Warn("delete dispatch consumer", "hive_id", id, "err", err)
				continue
			}
			delete(gone, id)
		}
	}
	for id := range gone {
		if !seen[id] {
			delete(gone, id) // back, or removed by another queen
		}
	}
}

// movable reports whether a job may run again elsewhere: its operation is
// retryable, or it is a generation that can continue from what its client
// has (api.ContinueRefusal), or one that may not but whose client has the
// whole answer (api.Continuation.Whole), so that only the end of its
// stream is missing.
func (s *Service) movable(ctx context.Context, j api.Job) (bool, error) {
	if api.Operations[j.Operation].Retryable {
		return true, nil
	}
	in, ok := j.Request.Payload.(*api.Infer)
	if !ok || j.Operation != api.OpInfer {
		// Not even one its hive seems never to have begun: the hive may
		// still take its dispatch, whose start only an end of its
		// attempt refuses, and run it beside the next attempt.
		return false, nil
	}
	if api.ContinueRefusal(in) == nil {
		return true, nil
	}
	if s.Delivered == nil {
		return false, nil
	}
	c, err := s.Delivered(ctx, j.JobID, j.Attempt+1)
	return c.Whole(in), err
}

// neverBegun reports whether j's hive has not begun it: a hive stores a
// job's start before the work, and writes nothing of the job before that.
// A job the hive takes from its queue after this finds its end and skips
// it.
func (s *Service) neverBegun(ctx context.Context, j api.Job) bool {
	if j.StartedAt != nil {
		return false
	}
	wrote, err := s.st.Wrote(ctx, j.JobID, j.Hive)
	return err == nil && !wrote
}

// yielded reports whether j's hive handed the job's attempt back: its
// worker broke mid-stream and no other worker there could continue it.
func (s *Service) yielded(j api.Job) bool {
	h, ok := s.v.Hive(j.Hive)
	if !ok {
		return false
	}
	for _, y := range h.Yielded {
		if y.JobID == j.JobID && y.Attempt == j.Attempt {
			return true
		}
	}
	return false
}

// reconcile stops work that a hive still runs for jobs that ended or moved
// while it was away: a hive back from a partition drops its orphans. A job
// of the hive that ended after its last heartbeat is no orphan: the beat
// listed it still running, and the next one will not. The heartbeat's time
// is the hive's clock, the end's may be the queen's: past staleBeat after
// the end, on this queen's clock, the listing counts whatever the clocks say.
func (s *Service) reconcile(ctx context.Context) {
	now := time.Now()
	for _, h := range s.v.Hives() {
		for _, id := range h.Running {
			j, ok := s.v.Job(id)
			if !ok || (!api.Terminal(j.State) && j.Hive == h.ID) {
				continue
			}
			if j.Hive == h.ID && j.FinishedAt != nil && j.FinishedAt.After(h.HeartbeatAt) && now.Sub(*j.FinishedAt) < staleBeat {
				continue
			}
			s.log.Info("stopping orphaned work", "hive_id", h.ID, "job_id", id)
			s.askHiveToCancel(ctx, api.Job{JobID: id, Hive: h.ID})
		}
	}
}

// staleBeat bounds how long a heartbeat may list a job that ended: a busy
// hive beats every third of the hives bucket's TTL, 15 s by default.
const staleBeat = 15 * time.Second

// cancelStale reports whether a cancelling job's hive no longer runs it.
func (s *Service) cancelStale(ctx context.Context, j api.Job) bool {
	return j.Hive == "" || !s.askHiveToCancel(ctx, j)
}

func (s *Service) hiveLive(id string) bool {
	_, ok := s.v.Hive(id)
	return ok
}

// endFor ends a job on the queen's authority and tidies what the job left.
func (s *Service) endFor(ctx context.Context, j api.Job, e api.Event) {
	e.JobID, e.Attempt, e.Hive = j.JobID, j.Attempt, j.Hive
	err := s.st.End(ctx, e)
	if errors.Is(err, store.ErrAlreadyEnded) {
		err = nil
	}
	if err != nil {
		s.log.Warn("end job", "job_id", j.JobID, "err", err)
		return
	}
	if j.DispatchSeq > 0 {
		_ = s.st.RemoveDispatch(ctx, j.DispatchSeq)
	}
	if j.Hive != "" && s.hiveLive(j.Hive) {
		s.askHiveToCancel(ctx, j)
	}
	if end, _, err := s.st.EndOf(ctx, j.JobID); err == nil && end != nil {
		_, _ = s.update(ctx, api.Job{JobID: j.JobID}, 0, func(r *api.Job) bool { return store.ApplyEnd(r, *end) })
	}
}

// RunDispatchConsumers makes each live hive's work-queue consumer when the
// hive joins, and again when its slots or ack wait change, and removes
// the consumers of hives gone for ConsumerKeptFor, until ctx ends.
func (s *Service) RunDispatchConsumers(ctx context.Context) error {
	select {
	case <-s.v.Synced():
	case <-ctx.Done():
		return nil
	}
	made := map[string]jetstream.ConsumerConfig{}
	gone := map[string]time.Time{} // hives with a consumer, since first seen gone
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	var dropped time.Time
	for {
		if time.Since(dropped) >= min(time.Minute, s.ConsumerKeptFor/2) {
			dropped = time.Now()
			s.dropGoneConsumers(ctx, gone, dropped)
		}
		live := map[string]bool{}
		for _, h := range s.v.Hives() {
			live[h.ID] = true
			cfg := store.DispatchConsumerConfig(h)
			if had, ok := made[h.ID]; ok && had.AckWait == cfg.AckWait && had.MaxAckPending == cfg.MaxAckPending {
				continue
			}
			if err := s.st.DispatchConsumer(ctx, h); err != nil {
				s.log.Warn("make dispatch consumer", "hive_id", h.ID, "err", err)
				continue
			}
			made[h.ID] = cfg
		}
		// A hive that comes back gets its consumer made again, in case
		// it was removed meanwhile.
		for id := range made {
			if !live[id] {
				delete(made, id)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.v.Joined():
		case <-t.C:
		}
	}
}
