package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/queentest"
	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// newService is a job service whose view holds hives. Nothing runs the
// jobs: the tests look at what the queen writes.
func newService(t *testing.T, hives ...api.Hive) (*jobs.Service, *store.Store) {
	t.Helper()
	p := queentest.New(t, hives...)
	return p.Jobs, p.Store
}

func TestPlacement(t *testing.T) {
	no := false
	model := []api.Model{{ModelID: "qwen"}}
	worker := []api.Worker{{WorkerID: "w", ModelID: "qwen", State: api.WorkerReady}}
	infer := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "qwen", Path: "/v1/chat/completions", Body: api.RawBody(`{}`)}}
	tests := []struct {
		name    string
		policy  string
		hives   []api.Hive
		req     api.JobRequest
		want    string // the hive; "" for a job left queued
		wantErr error
	}{
		{"spread: the most free slots", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 1}, {ID: "b", Slots: 4, SlotsFree: 3}, {ID: "c", Slots: 4, SlotsFree: 2}},
			api.JobRequest{Operation: api.OpHiveCheck}, "b", nil},
		{"binpack: the fewest free slots, but one", jobs.Binpack,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 0}, {ID: "b", Slots: 4, SlotsFree: 3}, {ID: "c", Slots: 4, SlotsFree: 1}},
			api.JobRequest{Operation: api.OpHiveCheck}, "c", nil},
		{"binpack: a full hive only when all are", jobs.Binpack,
			[]api.Hive{{ID: "a", Slots: 1, SlotsFree: 0}},
			api.JobRequest{Operation: api.OpHiveCheck}, "a", nil},
		{"pinned hive, whatever its load", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4}, {ID: "b", Slots: 4, SlotsFree: 0}},
			api.JobRequest{Operation: api.OpHiveCheck, Hive: "b"}, "b", nil},
		{"run only where allowed", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4}, {ID: "b", Slots: 4, SlotsFree: 1, AllowRun: true}},
			api.JobRequest{Operation: api.OpRun, Payload: &api.Run{Command: []string{"true"}}}, "b", nil},
		{"labels must all match", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4, Labels: map[string]string{"gpu": "a100"}}, {ID: "b", Slots: 4, SlotsFree: 1, Labels: map[string]string{"gpu": "h200", "zone": "x"}}},
			api.JobRequest{Operation: api.OpHiveCheck, Labels: map[string]string{"gpu": "h200"}}, "b", nil},
		{"a hive holding the model first", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4}, {ID: "b", Slots: 4, SlotsFree: 1, Models: model}},
			api.JobRequest{Operation: api.OpWorkerSpawn, Payload: &api.WorkerSpawn{ModelID: "qwen", Backend: "reference"}}, "b", nil},
		{"inference: the fewest generations in hand", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4, InferSlots: 4, InferRunning: 3, Models: model, Workers: worker}, {ID: "b", Slots: 4, SlotsFree: 0, InferSlots: 4, InferRunning: 1, Models: model, Workers: worker}},
			infer, "b", nil},
		{"inference: only where a worker serves the model", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4, Models: model}, {ID: "b", Slots: 4, SlotsFree: 0, Models: model, Workers: worker}},
			infer, "b", nil},
		{"inference: no ready worker, queued", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4, Models: model, Workers: []api.Worker{{WorkerID: "w", ModelID: "qwen", State: api.WorkerStarting}}}},
			infer, "", nil},
		{"no hive: queued", jobs.Spread, nil,
			api.JobRequest{Operation: api.OpHiveCheck}, "", nil},
		{"no matching hive: queued", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4}},
			api.JobRequest{Operation: api.OpRun, Payload: &api.Run{Command: []string{"true"}}}, "", nil},
		{"no hive, and no queueing asked", jobs.Spread, nil,
			api.JobRequest{Operation: api.OpHiveCheck, Queue: &no}, "", jobs.ErrNoCapableHive},
		{"pinned hive offline, no queueing asked", jobs.Spread,
			[]api.Hive{{ID: "a", Slots: 4, SlotsFree: 4}},
			api.JobRequest{Operation: api.OpHiveCheck, Hive: "gone", Queue: &no}, "", jobs.ErrNoCapableHive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, _ := newService(t, tt.hives...)
			svc.Policy = tt.policy
			if err := tt.req.Validate(); err != nil {
				t.Fatalf("the test's request is not valid: %v", err)
			}
			j, created, err := svc.Create(context.Background(), tt.req, "", "")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Create = %+v, %v; want %v", j, err, tt.wantErr)
				}
				return
			}
			if err != nil || !created {
				t.Fatalf("Create = %v, %v", created, err)
			}
			if j.Hive != tt.want {
				t.Errorf("placed on %q, want %q", j.Hive, tt.want)
			}
			wantState := api.StateDispatched
			if tt.want == "" {
				wantState = api.StateQueued
			}
			if j.State != wantState {
				t.Errorf("state %s, want %s", j.State, wantState)
			}
		})
	}
}

// Create stores the record, the job's first event and, for a placed job,
// its dispatch, before it returns.
func TestCreateWritesRecordEventAndDispatch(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 1, SlotsFree: 1})
	svc, st := p.Jobs, p.Store
	ctx := context.Background()
	events := 3
	req := api.JobRequest{Operation: api.OpHiveCheck, Payload: &api.HiveCheck{Events: &events}}
	j, _, err := svc.Create(ctx, req, "key1", "")
	if err != nil {
		t.Fatal(err)
	}
	rec, _, err := st.GetJob(ctx, j.JobID)
	if err != nil || rec.State != api.StateDispatched || rec.Hive != "h1" || rec.Owner != "key1" || rec.DispatchSeq == 0 || rec.Attempt != 1 {
		t.Errorf("record %+v, %v: want dispatched to h1, owned by key1, with its dispatch's sequence", rec, err)
	}
	if last, err := st.LastStreamSeq(ctx, j.JobID); err != nil || last == 0 {
		t.Errorf("no narration stored for the job: %d, %v", last, err)
	}
	subject, d := dispatchAt(t, p.NC, rec.DispatchSeq)
	if subject != "dispatch.hive.h1" || d.JobID != j.JobID || d.Attempt != 1 || d.Request.Payload.(*api.HiveCheck).Events == nil || *d.Request.Payload.(*api.HiveCheck).Events != 3 || !d.DeadlineAt.Equal(rec.DeadlineAt) {
		t.Errorf("dispatch on %s: %+v", subject, d)
	}
}

func TestIdempotencyKey(t *testing.T) {
	svc, _ := newService(t, api.Hive{ID: "h1", Slots: 1, SlotsFree: 1})
	ctx := context.Background()
	req := api.JobRequest{Operation: api.OpHiveCheck}
	first, created, err := svc.Create(ctx, req, "alice", "k1")
	if err != nil || !created {
		t.Fatalf("first: %v, %v", created, err)
	}
	tests := []struct {
		name        string
		req         api.JobRequest
		principal   string
		key         string
		wantSame    bool
		wantCreated bool
		wantErr     error
	}{
		{"a repeat answers with the first job", req, "alice", "k1", true, false, nil},
		{"another request under the key is refused", api.JobRequest{Operation: api.OpHiveStatus}, "alice", "k1", false, false, jobs.ErrIdempotencyMismatch},
		{"another principal's key is its own", req, "bob", "k1", false, true, nil},
		{"another key is another job", req, "alice", "k2", false, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, created, err := svc.Create(ctx, tt.req, tt.principal, tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if (j.JobID == first.JobID) != tt.wantSame || created != tt.wantCreated {
				t.Errorf("job %s (first %s), created %v; want same %v, created %v", j.JobID, first.JobID, created, tt.wantSame, tt.wantCreated)
			}
		})
	}
}

// A job no hive has taken is cancelled by the queen itself; a job that
// ended cannot be cancelled again.
func TestCancel(t *testing.T) {
	svc, _ := newService(t)
	ctx := context.Background()
	j, _, err := svc.Create(ctx, api.JobRequest{Operation: api.OpHiveCheck}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Cancel(ctx, j.JobID); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	got, err := svc.Get(ctx, j.JobID)
	if err != nil || got.State != api.StateCancelled {
		t.Errorf("after Cancel: %s, %v; want cancelled", got.State, err)
	}
	if _, err := svc.Cancel(ctx, j.JobID); !errors.Is(err, jobs.ErrTerminal) {
		t.Errorf("Cancel of an ended job = %v, want ErrTerminal", err)
	}
	if _, err := svc.Cancel(ctx, "0123456789abcdef"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Cancel of an unknown job = %v, want ErrNotFound", err)
	}
	if _, err := svc.Get(ctx, "0123456789abcdef"); !errors.Is(err, jobs.ErrNotFound) {
		t.Errorf("Get of an unknown job = %v, want ErrNotFound", err)
	}
}

// The queen's own transitions are in its view as soon as they are
// written, at the revision the write returned, without waiting for the
// watch to bring them back: placement and dispatch at Create, the cancel
// request at Cancel, the end that Get applies.
func TestOwnWritesReachTheViewAtOnce(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 1, SlotsFree: 1})
	ctx := context.Background()
	inView := func(step, id, want string) {
		t.Helper()
		rec, rev, err := p.Store.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got, gotRev, ok := p.View.JobAt(id)
		// The watch may have caught up by now; it may never be behind.
		if !ok || got.State != want || gotRev < rev {
			t.Errorf("after %s the view has %s at revision %d (%v); the bucket %s at %d, want %s", step, got.State, gotRev, ok, rec.State, rev, want)
		}
	}
	j, _, err := p.Jobs.Create(ctx, api.JobRequest{Operation: api.OpHiveCheck}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	inView("Create", j.JobID, api.StateDispatched)
	if _, err := p.Jobs.Cancel(ctx, j.JobID); err != nil {
		t.Fatal(err)
	}
	// No hive answers the cancel request, so the queen ended the job;
	// its record is brought up to the end by Get.
	inView("Cancel", j.JobID, api.StateCancelling)
	if got, err := p.Jobs.Get(ctx, j.JobID); err != nil || got.State != api.StateCancelled {
		t.Fatalf("Get: %s, %v; want cancelled", got.State, err)
	}
	inView("Get", j.JobID, api.StateCancelled)
}

// A generation's Create returns once its dispatch is on the work queue;
// the record follows it there in the background, and a cancel right after
// Create still finds the dispatch and takes it out of the queue, so the
// hive never picks the job up.
func TestInferDispatchRecordedAfterCreate(t *testing.T) {
	worker := []api.Worker{{WorkerID: "w", ModelID: "qwen", State: api.WorkerReady}}
	h := api.Hive{ID: "h1", Slots: 4, SlotsFree: 4, InferSlots: 4, Models: []api.Model{{ModelID: "qwen"}}, Workers: worker}
	p := queentest.New(t, h)
	ctx := context.Background()
	infer := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "qwen", Path: "/v1/chat/completions", Body: api.RawBody(`{}`)}}
	js, err := jetstream.New(p.NC)
	if err != nil {
		t.Fatal(err)
	}
	dispatch, err := js.Stream(ctx, bus.DispatchStream)
	if err != nil {
		t.Fatal(err)
	}

	j, _, err := p.Jobs.Create(ctx, infer, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if j.Hive != "h1" || j.State != api.StateDispatched || j.DispatchSeq == 0 {
		t.Fatalf("Create = %+v; want dispatched to h1 with its dispatch's sequence", j)
	}
	if _, err := dispatch.GetMsg(ctx, j.DispatchSeq); err != nil {
		t.Fatalf("the dispatch is not on the work queue when Create returns: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "the record follows the dispatch", func() bool {
		rec, _, err := p.Store.GetJob(ctx, j.JobID)
		return err == nil && rec.State == api.StateDispatched && rec.DispatchSeq == j.DispatchSeq
	})

	for range 20 {
		j, _, err := p.Jobs.Create(ctx, infer, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Jobs.Cancel(ctx, j.JobID); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		if _, err := dispatch.GetMsg(ctx, j.DispatchSeq); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("the dispatch of a job cancelled right after Create is still queued: %v", err)
		}
		got, err := p.Jobs.Get(ctx, j.JobID)
		if err != nil || got.State != api.StateCancelled || got.DispatchSeq != j.DispatchSeq {
			t.Fatalf("after Cancel: %+v, %v; want cancelled, its dispatch recorded", got, err)
		}
	}
}

// dispatchAt is message seq of the work queue, as a hive would read it,
// and its subject.
func dispatchAt(t *testing.T, nc *nats.Conn, seq uint64) (string, api.Dispatch) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := js.Stream(ctx, bus.DispatchStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	var d api.Dispatch
	if err := json.Unmarshal(m.Data, &d); err != nil {
		t.Fatal(err)
	}
	return m.Subject, d
}

// A job whose record or first event cannot be stored fails with an error,
// and what was stored of it ends: no record waits forever for a story, no
// story for a record.
func TestCreateHalfStoredEnds(t *testing.T) {
	for _, c := range []struct{ refusing, name string }{
		{"KV_" + bus.JobsBucket, "record refused"},
		{bus.NarrStream, "first event refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := queentest.New(t, api.Hive{ID: "h1", Slots: 1, SlotsFree: 1})
			ctx := context.Background()
			js, err := jetstream.New(p.NC)
			if err != nil {
				t.Fatal(err)
			}
			// A sealed stream refuses every write, for good.
			s, err := js.Stream(ctx, c.refusing)
			if err != nil {
				t.Fatal(err)
			}
			cfg := s.CachedInfo().Config
			cfg.Sealed = true
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			events := 1
			if _, _, err := p.Jobs.Create(ctx, api.JobRequest{Operation: api.OpHiveCheck, Payload: &api.HiveCheck{Events: &events}}, "key1", ""); err == nil {
				t.Fatal("created a job with a sealed stream")
			}
			// What was stored ended before Create answered.
			if c.refusing == bus.NarrStream {
				kv, err := js.Stream(ctx, "KV_"+bus.JobsBucket)
				if err != nil {
					t.Fatal(err)
				}
				m, err := kv.GetLastMsgForSubject(ctx, "$KV."+bus.JobsBucket+".>")
				if err != nil {
					t.Fatal(err)
				}
				rec, _, err := p.Store.GetJob(ctx, strings.TrimPrefix(m.Subject, "$KV."+bus.JobsBucket+"."))
				if err != nil || rec.State != api.StateFailed {
					t.Fatalf("record %+v, %v: want failed", rec, err)
				}
				return
			}
			narr, err := js.Stream(ctx, bus.NarrStream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := narr.Info(ctx)
			if err != nil || info.State.Msgs != 2 {
				t.Fatalf("narration holds %d messages (%v), want job_created and an end", info.State.Msgs, err)
			}
			first, err := narr.GetMsg(ctx, info.State.FirstSeq)
			if err != nil {
				t.Fatal(err)
			}
			job, _, _, _ := bus.ParseNarr(first.Subject)
			end, _, err := p.Store.EndOf(ctx, job)
			if err != nil || end == nil || end.State != api.StateFailed {
				t.Fatalf("end of %s: %+v, %v", job, end, err)
			}
		})
	}
}

// A job id says when it was made; an id not made by NewID says nothing.
func TestIDTime(t *testing.T) {
	before := time.Now().Truncate(time.Millisecond)
	at, ok := jobs.IDTime(jobs.NewID())
	if !ok || at.Before(before) || time.Since(at) > time.Second {
		t.Fatalf("IDTime of a new id: %s, %v (made after %s)", at, ok, before)
	}
	for _, id := range []string{"", "x", "zzzzzzzzzzzz0000", "01a2"} {
		if _, ok := jobs.IDTime(id); ok {
			t.Errorf("IDTime(%q) says it knows", id)
		}
	}
}
