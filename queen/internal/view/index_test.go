package view_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
)

// The view sorts open jobs as their records change in the bucket: waiting
// for a hive, grouped by what they need of one, or underway; finished and
// deleted jobs leave both.
func TestViewIndexesOpenJobs(t *testing.T) {
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hives, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hives"})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	v := view.New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	go func() { _ = v.Run(ctx, hives, jobs) }()

	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	put := func(j api.Job) {
		t.Helper()
		data, _ := json.Marshal(j)
		if _, err := jobs.Put(ctx, j.JobID, data); err != nil {
			t.Fatal(err)
		}
	}
	gpu := api.JobRequest{Operation: api.OpHiveCheck, Labels: map[string]string{"gpu": "a100"}}
	put(api.Job{JobID: "j2", State: api.StateQueued, Request: gpu, DeadlineAt: future})
	put(api.Job{JobID: "j1", State: api.StateQueued, Request: gpu, DeadlineAt: past})
	put(api.Job{JobID: "j3", State: api.StateQueued, Request: api.JobRequest{Operation: api.OpRun}, DeadlineAt: future})
	put(api.Job{JobID: "j4", State: api.StateRunning, Hive: "h1", Request: gpu, DeadlineAt: future})
	put(api.Job{JobID: "j5", State: api.StateDone, Hive: "h1", Request: gpu, DeadlineAt: future})
	waitFor(t, func() bool { _, ok := v.Job("j5"); return ok })

	if n := v.Waiting(""); n != 3 {
		t.Fatalf("waiting %d, want 3", n)
	}
	if n := v.Waiting("j1"); n != 2 {
		t.Fatalf("waiting but j1 %d, want 2", n)
	}
	if needs := v.WaitingNeeds(); len(needs) != 2 {
		t.Fatalf("needs %v, want two kinds", needs)
	}
	if w := v.WaitingFor(gpu); len(w) != 2 || w[0].JobID != "j1" || w[1].JobID != "j2" {
		t.Fatalf("waiting for a100: %v, want j1, j2", ids(w))
	}
	if p := v.WaitedPast(time.Now()); len(p) != 1 || p[0].JobID != "j1" {
		t.Fatalf("past deadline: %v, want j1", ids(p))
	}
	if u := v.Underway(); len(u) != 1 || u[0].JobID != "j4" {
		t.Fatalf("underway: %v, want j4", ids(u))
	}

	// j2 is placed, j4 ends, j3 is deleted.
	put(api.Job{JobID: "j2", State: api.StateQueued, Hive: "h2", Request: gpu, DeadlineAt: future})
	put(api.Job{JobID: "j4", State: api.StateFailed, Hive: "h1", Request: gpu, DeadlineAt: future})
	if err := jobs.Delete(ctx, "j3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := v.Job("j3"); return !ok })
	if n := v.Waiting(""); n != 1 {
		t.Fatalf("waiting %d, want 1", n)
	}
	if w := v.WaitingFor(gpu); len(w) != 1 || w[0].JobID != "j1" {
		t.Fatalf("waiting for a100: %v, want j1", ids(w))
	}
	if u := v.Underway(); len(u) != 1 || u[0].JobID != "j2" {
		t.Fatalf("underway: %v, want j2", ids(u))
	}
	if len(v.WaitingNeeds()) != 1 {
		t.Fatalf("needs %v, want one kind", v.WaitingNeeds())
	}
}

func ids(js []api.Job) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.JobID)
	}
	return out
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Jobs that need the same of a hive share a key whatever the order of
// their labels; a pin, the run operation or another label makes another.
func TestNeeds(t *testing.T) {
	a := view.Needs(api.JobRequest{Operation: api.OpHiveCheck, Labels: map[string]string{"gpu": "a100", "zone": "x"}})
	b := view.Needs(api.JobRequest{Operation: api.OpModelList, Labels: map[string]string{"zone": "x", "gpu": "a100"}})
	if a != b {
		t.Fatalf("%q != %q", a, b)
	}
	for _, other := range []api.JobRequest{
		{Operation: api.OpRun, Labels: map[string]string{"gpu": "a100", "zone": "x"}},
		{Operation: api.OpHiveCheck, Hive: "h1", Labels: map[string]string{"gpu": "a100", "zone": "x"}},
		{Operation: api.OpHiveCheck, Labels: map[string]string{"gpu": "a100"}},
	} {
		if view.Needs(other) == a {
			t.Fatalf("%+v shares needs with %q", other, a)
		}
	}
}
