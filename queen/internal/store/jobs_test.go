package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

func TestJobRecords(t *testing.T) {
	st := mustStore(t)
	ctx := context.Background()
	j := api.Job{JobID: "j1", Operation: api.OpHiveCheck, State: api.StateQueued, Attempt: 1}
	rev, err := st.CreateJob(ctx, j)
	if err != nil || rev == 0 {
		t.Fatalf("CreateJob = %d, %v", rev, err)
	}
	if _, err := st.CreateJob(ctx, j); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateJob of a taken id = %v, want ErrExists", err)
	}
	got, gotRev, err := st.GetJob(ctx, "j1")
	if err != nil || got.State != api.StateQueued || gotRev != rev {
		t.Errorf("GetJob = %+v, %d, %v; want the record at revision %d", got, gotRev, err, rev)
	}
	if _, _, err := st.GetJob(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJob of a missing id = %v, want ErrNotFound", err)
	}
	if _, _, err := st.UpdateJob(ctx, "nope", func(*api.Job) bool { return true }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UpdateJob of a missing id = %v, want ErrNotFound", err)
	}

	// A declined change writes nothing.
	if _, r, err := st.UpdateJob(ctx, "j1", func(r *api.Job) bool { r.State = api.StateFailed; return false }); err != nil || r != rev {
		t.Fatalf("declined UpdateJob = revision %d, %v; want the record's, %d", r, err, rev)
	}
	if got, r, _ := st.GetJob(ctx, "j1"); got.State != api.StateQueued || r != rev {
		t.Errorf("after a declined change: %s at revision %d, want queued at %d", got.State, r, rev)
	}

	if err := st.PurgeJob(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.GetJob(ctx, "j1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJob of a deleted record = %v, want ErrNotFound", err)
	}
}

// UpdateJobAt trusts a caller's copy only as far as its revision is
// current: a write in between makes it read the record and ask again.
func TestUpdateJobAtStaleCopy(t *testing.T) {
	tests := []struct {
		name string
		// change is asked of the caller's stale copy first, then of the
		// record as stored.
		change    func(r *api.Job) bool
		wantState string
		wantCalls int
	}{
		{"change applies to the stored record", func(r *api.Job) bool { r.Attempt++; return true }, api.StateRunning, 2},
		{"a decline on the stale copy is asked again", func(r *api.Job) bool {
			if r.State == api.StateQueued {
				return false
			}
			r.Attempt++
			return true
		}, api.StateRunning, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := mustStore(t)
			ctx := context.Background()
			stale := api.Job{JobID: "j1", State: api.StateQueued, Attempt: 1}
			rev, err := st.CreateJob(ctx, stale)
			if err != nil {
				t.Fatal(err)
			}
			// Another queen moves the record on.
			if _, _, err := st.UpdateJob(ctx, "j1", func(r *api.Job) bool { r.State = api.StateRunning; return true }); err != nil {
				t.Fatal(err)
			}
			calls := 0
			got, gotRev, err := st.UpdateJobAt(ctx, stale, rev, func(r *api.Job) bool { calls++; return tt.change(r) })
			if err != nil {
				t.Fatal(err)
			}
			stored, storedRev, _ := st.GetJob(ctx, "j1")
			if gotRev != storedRev {
				t.Errorf("UpdateJobAt returned revision %d, the record is at %d", gotRev, storedRev)
			}
			if got.State != tt.wantState || stored.State != tt.wantState || stored.Attempt != 2 || calls != tt.wantCalls {
				t.Errorf("returned %s, stored %s attempt %d, change asked %d times; want %s, attempt 2, %d times",
					got.State, stored.State, stored.Attempt, calls, tt.wantState, tt.wantCalls)
			}
		})
	}
}

// Concurrent updates by compare-and-set lose none.
func TestUpdateJobConcurrent(t *testing.T) {
	st := mustStore(t)
	ctx := context.Background()
	if _, err := st.CreateJob(ctx, api.Job{JobID: "j1", Attempt: 0}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, _, err := st.UpdateJob(ctx, "j1", func(r *api.Job) bool { r.Attempt++; return true }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if j, _, _ := st.GetJob(ctx, "j1"); j.Attempt != n {
		t.Errorf("attempt %d after %d increments", j.Attempt, n)
	}
}

func TestDispatchConsumerConfig(t *testing.T) {
	tests := []struct {
		name        string
		hive        api.Hive
		wantWait    time.Duration
		wantPending int
	}{
		{"defaults", api.Hive{ID: "h1"}, 30 * time.Second, 1},
		{"job and inference slots together", api.Hive{ID: "h1", Slots: 4, InferSlots: 2, AckWaitS: 12}, 12 * time.Second, 6},
		{"ack wait at least a second", api.Hive{ID: "h1", Slots: 2, AckWaitS: 0.01}, time.Second, 2},
		{"ack wait at most ten minutes", api.Hive{ID: "h1", Slots: 2, AckWaitS: 86400}, 10 * time.Minute, 2},
		{"pending bounded", api.Hive{ID: "h1", Slots: 100000}, 30 * time.Second, 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := store.DispatchConsumerConfig(tt.hive)
			if c.AckWait != tt.wantWait || c.MaxAckPending != tt.wantPending {
				t.Errorf("ack wait %s, max pending %d; want %s, %d", c.AckWait, c.MaxAckPending, tt.wantWait, tt.wantPending)
			}
			if c.Durable != "hive-h1" || c.FilterSubject != "dispatch.hive.h1" || c.AckPolicy != jetstream.AckExplicitPolicy {
				t.Errorf("consumer %s on %s, ack %v: want hive-h1 on dispatch.hive.h1, explicit acks", c.Durable, c.FilterSubject, c.AckPolicy)
			}
		})
	}
}

// Open makes every stream and bucket and may run again on a cluster that
// has them, as a newer queen does on an older cluster's data.
func TestOpenTwice(t *testing.T) {
	nc := testkit.Connect(t, testkit.NATS(t))
	ctx := context.Background()
	st, err := store.Open(ctx, nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	again, err := store.Open(ctx, nc, store.Options{Replicas: 1, Retention: 2 * time.Hour, HiveTTL: 3 * time.Second})
	if err != nil {
		t.Fatalf("Open again: %v", err)
	}
	if err := again.Ready(ctx); err != nil {
		t.Fatalf("Ready after a second Open: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, bus.NarrStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 2*time.Hour {
		t.Errorf("narration stream after a second Open keeps MaxAge %s, want 2h", info.Config.MaxAge)
	}
}

// More hives than nats-server's default of 1,000 consumers a stream each
// get their work-queue consumer.
func TestDispatchConsumersPastAThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("makes 1,001 consumers")
	}
	st := mustStore(t)
	ctx := context.Background()
	for i := 0; i <= 1000; i++ {
		if err := st.DispatchConsumer(ctx, api.Hive{ID: fmt.Sprintf("h%04d", i), Slots: 1}); err != nil {
			t.Fatalf("hive %d: %v", i, err)
		}
	}
}

// Queens finishing one move at once store one move event between them, and
// each is told its numbers, whatever the lost hive wrote.
func TestNarrateMoveOnce(t *testing.T) {
	nc := testkit.Connect(t, testkit.NATS(t))
	ctx := context.Background()
	st, err := store.Open(ctx, nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Narrate(ctx, bus.KindEvent, api.Event{JobID: "j1", Seq: 1, Attempt: 1, Action: "job_created"}); err != nil {
		t.Fatal(err)
	}
	// The lost hive's frames for attempt 1: sequences 2 and 3.
	pub := bus.NewPublisher(js, "j1", "h0", 1, 2)
	encode := func(seq uint64) ([]byte, error) {
		return fmt.Appendf(nil, `{"job_id":"j1","seq":%d,"attempt":1}`, seq), nil
	}
	if err := pub.Start(ctx, encode); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(bus.KindEvent, encode); err != nil {
		t.Fatal(err)
	}
	if err := pub.Finish(); err != nil {
		t.Fatal(err)
	}
	const queens = 8
	type told struct{ seq, at uint64 }
	got := make([]told, queens)
	var wg sync.WaitGroup
	for i := range queens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq, at, err := st.NarrateMove(ctx, api.Event{JobID: "j1", Attempt: 2, Action: "replaced", Hive: "h1"}, "h0")
			if err != nil {
				t.Error(err)
			}
			got[i] = told{seq, at}
		}()
	}
	wg.Wait()
	for i, g := range got {
		if g != got[0] || g.seq != 4 {
			t.Errorf("queen %d was told sequence %d at %d; queen 0 %d at %d; want all 4, at one place", i, g.seq, g.at, got[0].seq, got[0].at)
		}
	}
	if last, err := st.LastStreamSeq(ctx, "j1"); err != nil || last != got[0].at {
		t.Errorf("the job's newest message is at %d (%v), want the one move at %d", last, err, got[0].at)
	}
	// A later move is a move of its own.
	if seq, _, err := st.NarrateMove(ctx, api.Event{JobID: "j1", Attempt: 3, Action: "replaced", Hive: "h2"}, "h1"); err != nil || seq != 5 {
		t.Errorf("the next attempt's move: sequence %d, %v; want 5", seq, err)
	}
}

// A record that would not fit in one NATS message of the server, with room
// to grow, is refused before anything is stored, as ErrTooLarge: on a
// server left at NATS's 1 MB default, a request body near the queen's limit.
func TestEncodeJobTooLarge(t *testing.T) {
	nc := testkit.Connect(t, testkit.NATS(t, func(o *server.Options) { o.MaxPayload = 1 << 20 }))
	st, err := store.Open(context.Background(), nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	job := func(n int) api.Job {
		body := `{"model":"m","prompt":"` + strings.Repeat("a", n) + `"}`
		return api.Job{JobID: "j1", Operation: api.OpInfer, Attempt: 1,
			Request: api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "m", Path: api.InferCompletions, Body: api.RawBody(body)}}}
	}
	if _, err := st.EncodeJob(job(1 << 20)); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("a 1 MiB body on a 1 MiB server: %v, want ErrTooLarge", err)
	}
	if _, err := st.CreateJob(context.Background(), job(1<<20-8<<10)); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("a body within the headroom: %v, want ErrTooLarge", err)
	}
	if _, _, err := st.GetJob(context.Background(), "j1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused record was stored: %v", err)
	}
	if _, err := st.CreateJob(context.Background(), job(512<<10)); err != nil {
		t.Errorf("a 512 KiB body: %v", err)
	}
}
