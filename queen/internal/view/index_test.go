package view_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// The view sorts open jobs as their records change in the bucket: waiting
// for a hive, grouped by what they need of one, or underway; finished and
// deleted jobs leave both.
func TestViewIndexesOpenJobs(t *testing.T) {
	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	gpu := api.JobRequest{Operation: api.OpHiveCheck, Labels: map[string]string{"gpu": "a100"}}
	f := newFixture(t, nil, []api.Job{
		{JobID: "j2", State: api.StateQueued, Request: gpu, DeadlineAt: future},
		{JobID: "j1", State: api.StateQueued, Request: gpu, DeadlineAt: past},
		{JobID: "j3", State: api.StateQueued, Request: api.JobRequest{Operation: api.OpRun}, DeadlineAt: future},
		{JobID: "j4", State: api.StateRunning, Hive: "h1", Request: gpu, DeadlineAt: future},
		{JobID: "j5", State: api.StateDone, Hive: "h1", Request: gpu, DeadlineAt: future},
	})
	v := f.v
	if n := v.Waiting(""); n != 3 {
		t.Fatalf("waiting %d, want 3", n)
	}
	if n := v.Waiting("j1"); n != 2 {
		t.Fatalf("waiting but j1 %d, want 2", n)
	}
	if needs := v.WaitingNeeds(); len(needs) != 2 {
		t.Fatalf("needs %v, want two kinds", needs)
	}
	// Served in the order they arrived in the bucket, which every queen
	// sees alike, whatever their ids say.
	if w := waitingFor(t, v, gpu); !slices.Equal(w, []string{"j2", "j1"}) {
		t.Fatalf("waiting for a100: %v, want j2, j1", w)
	}
	if p, _ := v.WaitedPast(context.Background(), time.Now()); !slices.Equal(ids(p), []string{"j1"}) {
		t.Fatalf("past deadline: %v, want j1", ids(p))
	}
	if u := v.Underway(); !slices.Equal(ids(u), []string{"j4"}) {
		t.Fatalf("underway: %v, want j4", ids(u))
	}

	// j2 is placed, j4 ends, j3 is deleted.
	f.putJob(t, api.Job{JobID: "j2", State: api.StateQueued, Hive: "h2", Request: gpu, DeadlineAt: future})
	f.putJob(t, api.Job{JobID: "j4", State: api.StateFailed, Hive: "h1", Request: gpu, DeadlineAt: future})
	if err := f.jobs.Delete(context.Background(), "j3"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "j3 deleted", func() bool { _, ok := v.Job("j3"); return !ok })
	if n := v.Waiting(""); n != 1 {
		t.Fatalf("waiting %d, want 1", n)
	}
	if w := waitingFor(t, v, gpu); !slices.Equal(w, []string{"j1"}) {
		t.Fatalf("waiting for a100: %v, want j1", w)
	}
	if u := v.Underway(); !slices.Equal(ids(u), []string{"j2"}) {
		t.Fatalf("underway: %v, want j2", ids(u))
	}
	if len(v.WaitingNeeds()) != 1 {
		t.Fatalf("needs %v, want one kind", v.WaitingNeeds())
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
