package httpapi_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"rbee.dev/queen/internal/queentest"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// GET /v1/queue shows every key where each waiting request stands, but
// the ids and owners of its own requests only; admin sees them all.
func TestQueueShowsOwnRequestsOnly(t *testing.T) {
	p := queentest.New(t, api.Hive{ID: "h1", Slots: 2, SlotsFree: 2,
		Workers: []api.Worker{{WorkerID: "w1", ModelID: "demo", State: api.WorkerReady, Parallel: 1}}})
	e, keys := serve(t, p, true)
	ctx := context.Background()

	var secrets []string
	var ids []string
	for _, name := range []string{"alice", "bob"} {
		k, err := keys.Create(ctx, api.KeyRequest{Name: name, Scopes: []string{api.ScopeRead, api.ScopeInfer}})
		if err != nil {
			t.Fatal(err)
		}
		secrets, ids = append(secrets, k.Key), append(ids, k.ID)
	}
	testkit.WaitFor(t, 5*time.Second, "keys synced", func() bool { return keys.Count() == 2 })
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(`{}`)}}
	for _, owner := range []int{0, 0, 1} { // alice's first runs; alice and bob wait
		if _, _, err := p.Jobs.Create(ctx, req, ids[owner], ""); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "two waiting", func() bool {
		q, err := p.View.InferQueues(ctx)
		return err == nil && len(q) == 1 && len(q[0].Waiting) == 2
	})
	read := func(key string) api.InferQueue {
		t.Helper()
		rec := call{method: "GET", path: "/v1/queue", header: map[string]string{"Authorization": "Bearer " + key}, want: 200}.do(t, e)
		var ql api.QueueList
		if err := json.Unmarshal(rec.Body.Bytes(), &ql); err != nil || len(ql.Queues) != 1 {
			t.Fatalf("queue: %d %s", rec.Code, rec.Body)
		}
		return ql.Queues[0]
	}
	if q := read(adminKey); q.Running != 1 || q.Capacity != 1 || q.Waiting[0].Owner != ids[0] || q.Waiting[1].Owner != ids[1] {
		t.Fatalf("admin sees %+v", q)
	}
	q := read(secrets[1])
	if w := q.Waiting[0]; w.Position != 1 || w.JobID != "" || w.Owner != "" || w.OwnerName != "" {
		t.Fatalf("bob sees alice's request as %+v", w)
	}
	if w := q.Waiting[1]; w.Position != 2 || w.JobID == "" || w.Owner != ids[1] {
		t.Fatalf("bob sees his own request as %+v", w)
	}
}
