package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// A queen that died between storing a job's record and dispatching it
// leaves no job queued forever: a recent one is dispatched and runs, an old
// one fails. The records are written straight into the bucket, as such a
// queen left them.
func TestLostDispatch(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the reaper")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), bus.JobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	put := func(age time.Duration, n int) string {
		created := time.Now().UTC().Add(-age)
		j := api.Job{JobID: fmt.Sprintf("%012x%016x", created.UnixMilli(), n), Operation: api.OpHiveCheck, Hive: "h1",
			State: api.StateQueued, CreatedAt: created, DeadlineAt: created.Add(10 * time.Minute), Attempt: 1,
			Request: api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(3)}}}
		data, _ := json.Marshal(j)
		if _, err := kv.Create(context.Background(), j.JobID, data); err != nil {
			t.Fatal(err)
		}
		return j.JobID
	}
	recent, old := put(3*time.Second, 1), put(5*time.Minute, 2)
	state := func(id string) string {
		var j api.Job
		do(t, "GET", base+"/v1/jobs/"+id, nil, &j)
		return j.State
	}
	waitFor(t, 10*time.Second, func() bool { return state(recent) == api.StateDone && state(old) == api.StateFailed })
}
