package agent_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// A generation's request goes to the worker while its start is on its way
// (agent.handle), but its narration still begins with the start, then the
// worker event, in sequence; and a generation whose end was stored before
// the hive picked it up narrates nothing at all.
func TestInferNarratesOnlyAfterItsStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a worker process")
	}
	buildReferenceWorker(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), strings.NewReader("not a gguf model"))
	}))
	t.Cleanup(srv.Close)
	js := mustHive(t, "h1")
	if end := runJob(t, js, "h1", "dl1", api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: srv.URL + "/tiny.gguf"}}); end[len(end)-1].State != api.StateDone {
		t.Fatalf("download ended %+v", end[len(end)-1])
	}
	if end := runJob(t, js, "h1", "sp1", api.JobRequest{Operation: api.OpWorkerSpawn, Payload: &api.WorkerSpawn{ModelID: "tiny", Backend: "reference", CtxSize: 256}}); end[len(end)-1].State != api.StateDone {
		t.Fatalf("spawn ended %+v", end[len(end)-1])
	}
	infer := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "tiny", Path: api.InferChat,
		Body: api.RawBody(`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":4}`)}}

	for _, id := range []string{"inf1", "inf2", "inf3"} {
		events := runJob(t, js, "h1", id, infer)
		if end := events[len(events)-1]; end.State != api.StateDone {
			t.Fatalf("%s ended %+v", id, end)
		}
		chunks := 0
		for i, e := range events {
			if e.Seq != uint64(i+1) {
				t.Fatalf("%s: event %d has sequence %d: %+v", id, i, e.Seq, events)
			}
			if e.Action == api.ActionChunk {
				chunks++
			}
		}
		if len(events) < 4 || events[0].Action != "started" || events[1].Action != "worker" || chunks == 0 {
			t.Fatalf("%s narrated %+v; want started, worker, then the chunks", id, events)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dispatch, err := js.Stream(ctx, bus.DispatchStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"gone1", "gone2", "gone3"} {
		// Ended by a queen before the hive picked it up.
		end, _ := json.Marshal(api.Event{JobID: id, Seq: 2, Attempt: 1, Action: "end", State: api.StateCancelled, Error: "cancelled by request"})
		if err := bus.PublishEnd(ctx, js, bus.Meta{Job: id, Writer: bus.QueenWriter, Seq: 2, Attempt: 1}, end); err != nil {
			t.Fatal(err)
		}
		d, _ := json.Marshal(api.Dispatch{JobID: id, Attempt: 1, NextSeq: 3, DeadlineAt: time.Now().Add(time.Minute), Request: infer})
		if _, err := bus.PublishDispatch(ctx, js, bus.DispatchMsg{Hive: "h1", Job: id, Attempt: 1, Operation: api.OpInfer}, d); err != nil {
			t.Fatal(err)
		}
	}
	// The hive acknowledges each dispatch, which empties the work queue.
	testkit.WaitFor(t, 10*time.Second, "the hive takes the ended jobs' dispatches", func() bool {
		info, err := dispatch.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	// Anything the hive sent for them before the acknowledgement is
	// stored by now; give a stray late event a moment all the same.
	time.Sleep(200 * time.Millisecond)
	for _, id := range []string{"gone1", "gone2", "gone3"} {
		if last, err := bus.LastSeq(ctx, js.Conn(), id, "h1"); err != nil || last != 0 {
			t.Errorf("the hive narrated %s up to sequence %d (%v); it was ended before it started", id, last, err)
		}
	}
}
