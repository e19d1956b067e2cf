package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/queentest"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// A worker takes at most its max_concurrent requests; the rest wait in
// the model's queue, the highest priority first, then in arrival order,
// and the next one is placed as soon as a place frees.
func TestInferenceQueue(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4,
		Workers: []api.Worker{{WorkerID: "w1", ModelID: "qwen", State: api.WorkerReady, Parallel: 1}}})
	svc, v := p.Jobs, p.View
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = svc.RunReaper(ctx) }()
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "qwen", Path: "/v1/chat/completions", Body: api.RawBody(`{}`)}}
	create := func(priority int) api.Job {
		t.Helper()
		c := auth.NewContext(ctx, auth.Principal{KeyID: "k", Name: "k", Limits: api.KeyLimits{Priority: priority}})
		j, _, err := svc.Create(c, req, "k", "")
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	a := create(0)
	if a.Hive != "h1" {
		t.Fatalf("first request placed on %q, want h1", a.Hive)
	}
	b, c := create(0), create(0)
	urgent := create(5)
	for _, j := range []api.Job{b, c, urgent} {
		if j.Hive != "" || j.State != api.StateQueued {
			t.Fatalf("request %s: hive %q, state %s; want it waiting", j.JobID, j.Hive, j.State)
		}
	}
	if urgent.Priority != 5 {
		t.Fatalf("priority %d, want the key's 5", urgent.Priority)
	}
	positions := func() []int {
		var out []int
		for _, j := range []api.Job{urgent, b, c} {
			pos, _, ok := v.Position(j.JobID)
			if !ok {
				return nil
			}
			out = append(out, pos)
		}
		return out
	}
	testkit.WaitFor(t, 5*time.Second, "positions urgent 1, b 2, c 3", func() bool {
		got := positions()
		return len(got) == 3 && got[0] == 1 && got[1] == 2 && got[2] == 3
	})

	// The first request ends: its place goes to the urgent one at once.
	if _, err := svc.Cancel(ctx, a.JobID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Get(ctx, a.JobID); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the urgent request placed", func() bool {
		j, _ := v.Job(urgent.JobID)
		return j.Hive == "h1"
	})
	for _, j := range []api.Job{b, c} {
		if got, _ := v.Job(j.JobID); got.Hive != "" {
			t.Fatalf("request %s placed on %s while the worker is full", j.JobID, got.Hive)
		}
	}
	if pos, of, ok := v.Position(b.JobID); !ok || pos != 1 || of != 2 {
		t.Fatalf("b at %d of %d (%v), want 1 of 2", pos, of, ok)
	}
	// A new request joins the queue behind those waiting, room or not.
	if d := create(0); d.Hive != "" {
		t.Fatalf("a late request went on %s ahead of those waiting", d.Hive)
	}
}

// A hive's own bound on the inferences it holds counts too: past it,
// requests wait in the cluster's queue even for a worker without a limit.
func TestInferenceQueueHiveBound(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4, InferSlots: 1,
		Workers: []api.Worker{{WorkerID: "w1", ModelID: "qwen", State: api.WorkerReady}}})
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "qwen", Path: "/v1/chat/completions", Body: api.RawBody(`{}`)}}
	for i, want := range []string{"h1", ""} {
		j, _, err := p.Jobs.Create(context.Background(), req, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if j.Hive != want {
			t.Fatalf("request %d placed on %q, want %q", i, j.Hive, want)
		}
	}
}

// Two queens place the same waiting jobs at once when a worker appears:
// each job is placed, narrated as placed and dispatched once, whichever
// queen wins it.
func TestTwoQueensPlaceEachWaitingJobOnce(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A second queen's view and job service on the same store; its view
	// holds one record whole, so it reads the others from the bucket.
	v2 := view.New(p.Log, 1)
	go func() { _ = v2.Run(ctx, p.Store) }()
	<-v2.Synced()
	other := jobs.New(p.Store, v2, p.Metrics, p.Log)
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "qwen", Path: "/v1/chat/completions", Body: api.RawBody(`{}`)}}
	const n = 40
	var ids []string
	for range n {
		j, _, err := p.Jobs.Create(ctx, req, "", "")
		if err != nil || j.Hive != "" {
			t.Fatalf("Create: %+v, %v; want it waiting for a worker", j, err)
		}
		ids = append(ids, j.JobID)
	}
	go func() { _ = p.Jobs.RunReaper(ctx) }()
	go func() { _ = other.RunReaper(ctx) }()
	p.PutHive(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4, HeartbeatAt: time.Now(),
		Workers: []api.Worker{{WorkerID: "w1", ModelID: "qwen", State: api.WorkerReady}}})
	testkit.WaitFor(t, 10*time.Second, "every job placed", func() bool {
		for _, id := range ids {
			if j, _ := v2.Job(id); j.Hive == "" || j.DispatchSeq == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(200 * time.Millisecond) // a second queen's late narration would land by now
	narr := p.Store.NarrationReader()
	for _, id := range ids {
		placed := 0
		cons, err := narr.Follow(ctx, bus.NarrJob(id), 1, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var e api.Event
			if json.Unmarshal(m.Data(), &e) == nil && e.Action == "placed" {
				placed++
			}
		}
		if placed != 1 {
			t.Fatalf("job %s narrated as placed %d times", id, placed)
		}
	}
}

// A request cannot jump a model's queue by asking not to wait, by pinning
// a hive or by asking for labels: with others waiting, it waits behind
// them or is refused.
func TestNoJumpingTheQueue(t *testing.T) {
	for _, variant := range []string{"queue false", "pinned hive", "labels"} {
		t.Run(variant, func(t *testing.T) {
			p := queentest.New(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4, Labels: map[string]string{"gpu": "a100"},
				Workers: []api.Worker{{WorkerID: "w1", ModelID: "qwen", State: api.WorkerReady, Parallel: 1}}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "qwen", Path: "/v1/chat/completions", Body: api.RawBody(`{}`)}}
			vip := auth.NewContext(ctx, auth.Principal{KeyID: "vip", Name: "vip", Limits: api.KeyLimits{Priority: 100}})
			a, _, _ := p.Jobs.Create(vip, req, "vip", "")
			b, _, _ := p.Jobs.Create(vip, req, "vip", "")
			if a.Hive != "h1" || b.Hive != "" {
				t.Fatalf("a on %q, b on %q; want a running, b waiting", a.Hive, b.Hive)
			}
			// a ends; before any queen hands its place to b, a low
			// priority request tries to take it.
			if err := p.Store.End(ctx, api.Event{JobID: a.JobID, Attempt: 1, State: api.StateDone}); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Jobs.Get(ctx, a.JobID); err != nil {
				t.Fatal(err)
			}
			jump := req
			switch variant {
			case "queue false":
				no := false
				jump.Queue = &no
			case "pinned hive":
				jump.Hive = "h1"
			case "labels":
				jump.Labels = map[string]string{"gpu": "a100"}
			}
			j, _, err := p.Jobs.Create(auth.NewContext(ctx, auth.Principal{KeyID: "low", Name: "low"}), jump, "low", "")
			switch {
			case variant == "queue false" && !errors.Is(err, jobs.ErrNoCapableHive):
				t.Fatalf("a request asking not to wait, with one waiting: %+v, %v; want it refused", j, err)
			case variant != "queue false" && (err != nil || j.Hive != ""):
				t.Fatalf("%s: %+v, %v; want it waiting behind b", variant, j, err)
			}
			// The reaper hands the place to b, and the waiting constrained
			// request goes after it.
			go func() { _ = p.Jobs.RunReaper(ctx) }()
			testkit.WaitFor(t, 5*time.Second, "b placed", func() bool { got, _ := p.View.Job(b.JobID); return got.Hive == "h1" })
			if variant != "queue false" {
				if got, _ := p.View.Job(j.JobID); got.Hive != "" {
					t.Fatalf("the %s request was placed beside b on a worker of one place", variant)
				}
			}
		})
	}
}

// The bound on a model's waiting requests holds however they come: an
// infer job posted to /v1/jobs past it is refused as the OpenAI API's are.
func TestInferQueueDepth(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4,
		Workers: []api.Worker{{WorkerID: "w1", ModelID: "qwen", State: api.WorkerReady, Parallel: 1}}})
	p.Jobs.InferQueueDepth = 2
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "qwen", Path: "/v1/chat/completions", Body: api.RawBody(`{}`)}}
	for i := range 3 { // one runs, two wait
		if _, _, err := p.Jobs.Create(context.Background(), req, "", ""); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if _, _, err := p.Jobs.Create(context.Background(), req, "", ""); !errors.Is(err, jobs.ErrQueueFull) {
		t.Fatalf("a request past the bound: %v, want ErrQueueFull", err)
	}
}

// Jobs that wait for a label no hive carries are all placed, each once, on
// its first attempt, when a hive carrying it, with room for them all,
// joins: the reaper places several at a time (placeParallel) and stops at
// none of them.
func TestWaitingJobsPlacedWhenAHiveJoins(t *testing.T) {
	p := queentest.New(t)
	svc, v := p.Jobs, p.View
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := api.JobRequest{Operation: api.OpHiveCheck, Labels: map[string]string{"pool": "later"}}
	const n = 300
	ids := make([]string, 0, n)
	for range n {
		j, _, err := svc.Create(ctx, req, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if j.State != api.StateQueued || j.Hive != "" {
			t.Fatalf("job %s: state %s on %q; want it waiting", j.JobID, j.State, j.Hive)
		}
		ids = append(ids, j.JobID)
	}
	go func() { _ = svc.RunReaper(ctx) }()
	p.PutHive(t, api.Hive{ID: "h1", Slots: n / 2, SlotsFree: n / 2, Labels: map[string]string{"pool": "later"}, HeartbeatAt: time.Now()})
	testkit.WaitFor(t, 30*time.Second, "every waiting job placed", func() bool {
		for _, id := range ids {
			if j, ok := v.Job(id); !ok || j.State != api.StateDispatched {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		j, _ := v.Job(id)
		if j.Hive != "h1" || j.Attempt != 1 || j.DispatchSeq == 0 {
			t.Errorf("job %s: hive %q, attempt %d, dispatch %d", id, j.Hive, j.Attempt, j.DispatchSeq)
		}
	}
	// One dispatch a job: nothing pulls them, so all are still queued.
	js, err := jetstream.New(p.NC)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, bus.DispatchStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("the work queue holds %d dispatches for %d jobs", info.State.Msgs, n)
	}
}

// A queen that places a job on a hive and stops before handing it over
// leaves a record queued on that hive with no dispatch; the reaper hands it
// over again, timed from the placement: a job that waited long in the
// queue, or that moved from a lost hive, is not failed for its age. A moved
// job's hand-over finishes the move too: its event is narrated if the
// moving queen did not get to it, and the earlier attempt's story ends just
// before it.
func TestLostDispatchTimedFromPlacement(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now().UTC()
	created, placed := now.Add(-2*time.Minute), now.Add(-6*time.Second)
	events := 1
	req := api.JobRequest{Operation: api.OpHiveCheck, Payload: &api.HiveCheck{Events: &events}}
	lost := []struct {
		name        string
		job         api.Job
		narrated    bool   // the move's event is stored
		wantNextSeq uint64 // of the new dispatch
	}{
		{"waited two minutes, then placed", api.Job{Attempt: 1}, false, 1},
		{"moved from lost h0, the move not narrated", api.Job{Attempt: 2, PastHives: []api.PastHive{{Hive: "h0"}}}, false, 7},
		{"moved from lost h0, the move narrated", api.Job{Attempt: 2, PastHives: []api.PastHive{{Hive: "h0"}}}, true, 7},
		// Placed by the reaper: the move (6), then the placing event (7).
		{"moved from lost h0 into the queue, the move not narrated", api.Job{Attempt: 2, PastHives: []api.PastHive{{Hive: "h0"}}}, false, 8},
	}
	js, err := jetstream.New(p.NC)
	if err != nil {
		t.Fatal(err)
	}
	for i := range lost {
		j := &lost[i].job
		j.JobID, j.Operation, j.Hive, j.State, j.Request = jobs.NewID(), req.Operation, "h1", api.StateQueued, req
		j.CreatedAt, j.PlacedAt, j.DeadlineAt = created, &placed, now.Add(10*time.Minute)
		if lost[i].wantNextSeq == 8 {
			j.Hive, j.PlacedAt = "", nil
		}
		if _, err := p.Store.CreateJob(ctx, *j); err != nil {
			t.Fatal(err)
		}
		if j.Attempt == 1 {
			continue
		}
		// What the lost hive wrote of the moved job: job sequences 2 to 5.
		h0 := bus.NewPublisher(js, j.JobID, "h0", 1, 2)
		encode := func(seq uint64) ([]byte, error) {
			return json.Marshal(api.Event{JobID: j.JobID, Seq: seq, Attempt: 1, Message: "before the move"})
		}
		if err := h0.Start(ctx, encode); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := h0.Publish(bus.KindEvent, encode); err != nil {
				t.Fatal(err)
			}
		}
		if err := h0.Finish(); err != nil {
			t.Fatal(err)
		}
		if lost[i].narrated {
			if _, _, err := p.Store.NarrateNext(ctx, bus.KindEvent, api.Event{JobID: j.JobID, Attempt: 2, Action: "replaced", Hive: "h1"}, "h0"); err != nil {
				t.Fatal(err)
			}
		}
	}
	narr, err := js.Stream(ctx, bus.NarrStream)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.Jobs.RunReaper(ctx) }()
	for _, l := range lost {
		var rec api.Job
		testkit.WaitFor(t, 5*time.Second, l.name+": dispatched again", func() bool {
			rec, _, err = p.Store.GetJob(ctx, l.job.JobID)
			if err == nil && api.Terminal(rec.State) {
				t.Fatalf("%s: ended %s: %s", l.name, rec.State, rec.Error)
			}
			return err == nil && rec.State == api.StateDispatched && rec.DispatchSeq > 0 && rec.Hive == "h1"
		})
		_, d := dispatchAt(t, p.NC, rec.DispatchSeq)
		// The new hive numbers its events after every one before them.
		if d.Attempt != l.job.Attempt || d.NextSeq != l.wantNextSeq {
			t.Errorf("%s: dispatched as attempt %d from sequence %d, want attempt %d from %d", l.name, d.Attempt, d.NextSeq, l.job.Attempt, l.wantNextSeq)
		}
		if l.job.Attempt == 1 {
			continue
		}
		// One move event, sequence 6, and the past attempt's story ends
		// just before it.
		until := rec.PastHives[0].Until
		m, err := narr.GetMsg(ctx, until+1)
		var e api.Event
		if err == nil {
			_ = json.Unmarshal(m.Data, &e)
			_, e.Actor, _, _ = bus.ParseNarr(m.Subject) // the writer, from the subject
		}
		if e.Actor != bus.QueenWriter || e.Action != "replaced" || e.Seq != 6 || e.Attempt != 2 {
			t.Errorf("%s: h0's story ends at stream sequence %d, and after it: %+v (%v); want the move, sequence 6", l.name, until, e, err)
		}
		if seq, _, _, err := p.Store.QueenEventOf(ctx, l.job.JobID, 2); err != nil || seq != l.wantNextSeq-1 {
			t.Errorf("%s: the queen's newest event is %d (%v), want %d: no second move", l.name, seq, err, l.wantNextSeq-1)
		}
	}
}

// A hive that joins a backlog takes what its slots run and as many again
// to wait on its work queue; the rest stay in the cluster's queue, where a
// hive that joins later finds its share, and go out as jobs end.
func TestBacklogStaysInTheQueue(t *testing.T) {
	p := queentest.New(t)
	svc, v := p.Jobs, p.View
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := map[string]string{"pool": "later"}
	const n = 30
	ids := make([]string, 0, n)
	for range n {
		j, _, err := svc.Create(ctx, api.JobRequest{Operation: api.OpHiveCheck, Labels: pool}, "", "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.JobID)
	}
	go func() { _ = svc.RunReaper(ctx) }()
	go func() { _ = svc.RunApplier(ctx) }()
	on := func(hive string) (open, all []string) {
		for _, id := range ids {
			if j, _ := v.Job(id); j.Hive == hive {
				all = append(all, id)
				if !api.Terminal(j.State) {
					open = append(open, id)
				}
			}
		}
		return open, all
	}
	p.PutHive(t, api.Hive{ID: "h1", Slots: 4, SlotsFree: 4, Labels: pool, HeartbeatAt: time.Now()})
	testkit.WaitFor(t, 10*time.Second, "h1 holds 8", func() bool { open, _ := on("h1"); return len(open) == 8 })
	time.Sleep(1500 * time.Millisecond) // a reaper pass, and more
	if open, all := on("h1"); len(open) != 8 || len(all) != 8 {
		t.Fatalf("h1 holds %d jobs (%d placed in all), want its 4 slots and 4 waiting", len(open), len(all))
	}
	if waiting := v.Queued(api.JobRequest{Operation: api.OpHiveCheck, Labels: pool}); waiting != n-8 {
		t.Fatalf("%d jobs wait in the queue, want %d", waiting, n-8)
	}
	p.PutHive(t, api.Hive{ID: "h2", Slots: 2, SlotsFree: 2, Labels: pool, HeartbeatAt: time.Now()})
	testkit.WaitFor(t, 10*time.Second, "h2 holds 4", func() bool { open, _ := on("h2"); return len(open) == 4 })
	open, _ := on("h1")
	for _, id := range open[:3] {
		if _, err := svc.Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "3 more on h1", func() bool { open, all := on("h1"); return len(open) == 8 && len(all) == 11 })
	if open, all := on("h2"); len(open) != 4 || len(all) != 4 {
		t.Fatalf("h2 holds %d jobs (%d in all), want 4", len(open), len(all))
	}
}

// A job waiting on its hive's work queue that the hive never began: past
// its deadline it ends within a reaper pass, not after the grace a running
// job's hive has; and when the hive is lost, one that may run again waits
// in the cluster's queue, as a new job would, rather than failing.
func TestJobsAHiveNeverBegan(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 1, SlotsFree: 1, AllowRun: true, HeartbeatAt: time.Now()})
	svc, v := p.Jobs, p.View
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, _, err := svc.Create(ctx, api.JobRequest{Operation: api.OpHiveCheck}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	short := api.JobRequest{Operation: api.OpRun, Payload: &api.Run{Command: []string{"true"}}, TimeoutS: 1}
	second, _, err := svc.Create(ctx, short, "", "")
	if err != nil || first.Hive != "h1" || second.Hive != "h1" {
		t.Fatalf("placed on %q and %q (%v), want both on h1: one runs, one waits there", first.Hive, second.Hive, err)
	}
	go func() { _ = svc.RunReaper(ctx) }()
	go func() { _ = svc.RunApplier(ctx) }()
	testkit.WaitFor(t, 5*time.Second, "the second job's end", func() bool { j, _ := v.Job(second.JobID); return api.Terminal(j.State) })
	if j, _ := v.Job(second.JobID); j.State != api.StateFailed || j.FinishedAt.Sub(j.DeadlineAt) > 1500*time.Millisecond {
		t.Fatalf("the job that waited past its deadline: %s at %s, deadline %s", j.State, j.FinishedAt, j.DeadlineAt)
	}

	p.DropHive(t, "h1")
	testkit.WaitFor(t, 10*time.Second, "the hive_check job back in the queue", func() bool {
		j, _ := v.Job(first.JobID)
		return j.State == api.StateQueued && j.Hive == "" && j.Attempt == 2
	})
	p.PutHive(t, api.Hive{ID: "h2", Slots: 1, SlotsFree: 1, AllowRun: true, HeartbeatAt: time.Now()})
	testkit.WaitFor(t, 10*time.Second, "the hive_check job on h2", func() bool { j, _ := v.Job(first.JobID); return j.Hive == "h2" })
}

// A hive's work-queue consumer goes some time after the hive does, so that
// hive ids that come and go (simulated hives, renamed machines) do not
// each keep one in NATS for good; a hive still live keeps its own.
func TestGoneHivesConsumersRemoved(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "stays", Slots: 1, SlotsFree: 1, HeartbeatAt: time.Now()},
		api.Hive{ID: "goes", Slots: 1, SlotsFree: 1, HeartbeatAt: time.Now()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.Jobs.ConsumerKeptFor = time.Second
	go func() { _ = p.Jobs.RunDispatchConsumers(ctx) }()
	have := func() []string {
		hives, err := p.Store.DispatchConsumerHives(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(hives)
		return hives
	}
	testkit.WaitFor(t, 10*time.Second, "both consumers", func() bool { return len(have()) == 2 })
	p.DropHive(t, "goes")
	testkit.WaitFor(t, 20*time.Second, "the gone hive's consumer removed", func() bool { return slices.Equal(have(), []string{"stays"}) })
}

// A job does not jump the jobs that wait for the same hives: with room
// for only those, it waits behind them.
func TestJobsWaitInTurn(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 1, SlotsFree: 1, HeartbeatAt: time.Now()})
	svc, v := p.Jobs, p.View
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = svc.RunApplier(ctx) }()
	req := api.JobRequest{Operation: api.OpHiveCheck}
	var js []api.Job
	for range 3 {
		j, _, err := svc.Create(ctx, req, "", "")
		if err != nil {
			t.Fatal(err)
		}
		js = append(js, j)
	}
	if js[0].Hive != "h1" || js[1].Hive != "h1" || js[2].Hive != "" {
		t.Fatalf("placed on %q, %q, %q; want h1 to hold two and the third to wait", js[0].Hive, js[1].Hive, js[2].Hive)
	}
	if _, err := svc.Cancel(ctx, js[0].JobID); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "room on h1", func() bool { return v.JobLoad("h1") == 1 })
	late, _, err := svc.Create(ctx, req, "", "")
	if err != nil || late.Hive != "" {
		t.Fatalf("a job created with one waiting and room for one went to %q (%v); want it behind", late.Hive, err)
	}
	go func() { _ = svc.RunReaper(ctx) }()
	testkit.WaitFor(t, 5*time.Second, "the waiting job placed", func() bool { j, _ := v.Job(js[2].JobID); return j.Hive == "h1" })
	if j, _ := v.Job(late.JobID); j.Hive != "" {
		t.Fatalf("the later job went to %q beside the one that waited", j.Hive)
	}
}
