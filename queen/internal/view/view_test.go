package view_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// fixture is a store on an in-process NATS server and a view of it that
// runs until the test ends. The test writes the buckets directly, as hives
// and other queens do.
type fixture struct {
	hives, jobs jetstream.KeyValue
	v           *view.View
}

// newFixture opens the buckets and writes hives and jobs into them before
// the view starts, so they arrive as the view's initial load.
func newFixture(t *testing.T, hives []api.Hive, jobs []api.Job) *fixture {
	t.Helper()
	return newFixtureHolding(t, view.DefaultRecent, hives, jobs)
}

// newFixtureHolding is newFixture with a view that holds recent records
// whole beside those of the jobs underway.
func newFixtureHolding(t *testing.T, recent int, hives []api.Hive, jobs []api.Job) *fixture {
	t.Helper()
	nc := testkit.Connect(t, testkit.NATS(t))
	st, err := store.Open(context.Background(), nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{v: view.New(slog.New(slog.NewTextHandler(io.Discard, nil)), recent)}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if f.hives, err = js.KeyValue(context.Background(), bus.HivesBucket); err != nil {
		t.Fatal(err)
	}
	if f.jobs, err = js.KeyValue(context.Background(), bus.JobsBucket); err != nil {
		t.Fatal(err)
	}
	for _, h := range hives {
		f.putHive(t, h.ID, h)
	}
	for _, j := range jobs {
		f.putJob(t, j)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.v.Run(ctx, st) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-f.v.Synced():
	case <-time.After(10 * time.Second):
		t.Fatal("view not synced within 10s")
	}
	return f
}

func (f *fixture) putHive(t *testing.T, key string, h api.Hive) {
	t.Helper()
	data, _ := json.Marshal(h)
	if _, err := f.hives.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) putJob(t *testing.T, j api.Job) uint64 {
	t.Helper()
	data, _ := json.Marshal(j)
	rev, err := f.jobs.Put(context.Background(), j.JobID, data)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func ids(jobs []api.Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.JobID
	}
	return out
}

// waitingFor is the ids of the jobs waiting with req's needs, in order.
func waitingFor(t *testing.T, v *view.View, req api.JobRequest) []string {
	t.Helper()
	out := []string{}
	for j, err := range v.WaitingFor(context.Background(), req) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j.JobID)
	}
	return out
}

// list is v.Jobs's ids.
func list(t *testing.T, v *view.View, f view.Filter) []string {
	t.Helper()
	jobs, err := v.Jobs(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	return ids(jobs)
}

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func at(min int) *time.Time {
	t := t0.Add(time.Duration(min) * time.Minute)
	return &t
}

// Job ids sort by creation time, so "j1" is the oldest.
var records = []api.Job{
	{JobID: "j1", Operation: api.OpRun, Hive: "h1", State: api.StateDone, Owner: "alice", CreatedAt: t0, DeadlineAt: t0.Add(time.Hour), FinishedAt: at(9)},
	{JobID: "j2", Operation: api.OpHiveCheck, Hive: "h2", State: api.StateFailed, Owner: "bob", CreatedAt: t0.Add(time.Minute), DeadlineAt: t0.Add(time.Hour), FinishedAt: at(3)},
	{JobID: "j3", Operation: api.OpHiveCheck, Hive: "h1", State: api.StateRunning, Owner: "alice", CreatedAt: t0.Add(2 * time.Minute), DeadlineAt: t0.Add(3 * time.Minute)},
	{JobID: "j4", Operation: api.OpRun, State: api.StateQueued, Owner: "bob", CreatedAt: t0.Add(3 * time.Minute), DeadlineAt: t0.Add(time.Hour)},
	{JobID: "j5", Operation: api.OpHiveCheck, Hive: "h2", State: api.StateDone, Owner: "alice", CreatedAt: t0.Add(4 * time.Minute), DeadlineAt: t0.Add(time.Hour)},
}

func TestJobsFilter(t *testing.T) {
	// Holding one record whole, the view reads the others' from the
	// bucket; the listing is the same.
	for _, recent := range []int{view.DefaultRecent, 1} {
		t.Run(fmt.Sprintf("holding %d", recent), func(t *testing.T) { testJobsFilter(t, newFixtureHolding(t, recent, nil, records)) })
	}
}

func testJobsFilter(t *testing.T, f *fixture) {
	tests := []struct {
		name   string
		filter view.Filter
		want   []string
	}{
		{"all, newest first", view.Filter{}, []string{"j5", "j4", "j3", "j2", "j1"}},
		{"by state", view.Filter{State: api.StateDone}, []string{"j5", "j1"}},
		{"by operation", view.Filter{Operation: api.OpRun}, []string{"j4", "j1"}},
		{"by hive", view.Filter{Hive: "h1"}, []string{"j3", "j1"}},
		{"by owner", view.Filter{Owner: "bob"}, []string{"j4", "j2"}},
		{"every field at once", view.Filter{State: api.StateDone, Operation: api.OpHiveCheck, Hive: "h2", Owner: "alice"}, []string{"j5"}},
		{"limit keeps the newest", view.Filter{Limit: 2}, []string{"j5", "j4"}},
		{"nothing matches", view.Filter{Hive: "h9"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := list(t, f.v, tt.filter); !slices.Equal(got, tt.want) {
				t.Errorf("Jobs(%+v) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestJobQueries(t *testing.T) {
	for _, recent := range []int{view.DefaultRecent, 1} {
		t.Run(fmt.Sprintf("holding %d", recent), func(t *testing.T) { testJobQueries(t, newFixtureHolding(t, recent, nil, records)) })
	}
}

func testJobQueries(t *testing.T, f *fixture) {
	sorted := func(s []string) []string { slices.Sort(s); return s }
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"underway: open, with a hive", ids(f.v.Underway()), []string{"j3"}},
		{"waiting: queued without one", waitingFor(t, f.v, api.JobRequest{}), []string{"j4"}},
		{"expired: ended before the cutoff", sorted(f.v.Expired(t0.Add(90 * time.Second))), []string{"j1", "j2"}},
		// j3's deadline passed long before this cutoff: nothing will end it.
		{"expired: open but long past its deadline", sorted(f.v.Expired(t0.Add(200 * time.Second))), []string{"j1", "j2", "j3"}},
		// j5 has no finish time: its creation counts.
		{"oldest finished first", f.v.OldestFinished(10), []string{"j2", "j5", "j1"}},
		{"oldest finished: at most n", f.v.OldestFinished(2), []string{"j2", "j5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !slices.Equal(tt.got, tt.want) {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	want := map[string]int{api.StateDone: 2, api.StateFailed: 1, api.StateRunning: 1, api.StateQueued: 1}
	if got := f.v.CountByState(); !maps.Equal(got, want) {
		t.Errorf("CountByState = %v, want %v", got, want)
	}
}

// The view follows both buckets after its initial load: a hive is named by
// its key whatever its body says, a new hive signals Joined, and deleted
// hives and records leave.
func TestViewFollowsBuckets(t *testing.T) {
	f := newFixture(t, []api.Hive{{ID: "h1", Slots: 2}}, records[:1])
	if h, ok := f.v.Hive("h1"); !ok || h.Slots != 2 {
		t.Fatalf("Hive(h1) = %+v, %v", h, ok)
	}
	select {
	case <-f.v.Joined():
	default:
		t.Error("the initial hive did not signal Joined")
	}

	f.putHive(t, "h2", api.Hive{ID: "h1", Slots: 4})
	testkit.WaitFor(t, 5*time.Second, "h2 in the view", func() bool { _, ok := f.v.Hive("h2"); return ok })
	if h, _ := f.v.Hive("h2"); h.ID != "h2" {
		t.Errorf("hive written under key h2 has id %q; the key must win", h.ID)
	}
	if h, _ := f.v.Hive("h1"); h.Slots != 2 {
		t.Errorf("h2's heartbeat changed h1: %+v", h)
	}
	select {
	case <-f.v.Joined():
	case <-time.After(5 * time.Second):
		t.Error("a new hive did not signal Joined")
	}
	if got := len(f.v.Hives()); got != 2 {
		t.Errorf("%d hives, want 2", got)
	}

	j := records[2]
	rev := f.putJob(t, j)
	testkit.WaitFor(t, 5*time.Second, "the new record at its revision", func() bool {
		_, r, ok := f.v.JobAt(j.JobID)
		return ok && r == rev
	})

	if err := f.hives.Delete(context.Background(), "h1"); err != nil {
		t.Fatal(err)
	}
	if err := f.jobs.Delete(context.Background(), j.JobID); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "h1 and the record gone", func() bool {
		_, hive := f.v.Hive("h1")
		_, job := f.v.Job(j.JobID)
		return !hive && !job
	})
	if got := f.v.Hives(); len(got) != 1 || got[0].ID != "h2" {
		t.Errorf("Hives() = %+v, want only h2", got)
	}
}

// A record the queen wrote is in the view at once (Wrote); the watch
// bringing back that write or an older one changes nothing, a newer one
// from elsewhere wins, and nothing the watch has passed, a delete
// included, is undone by a late Wrote.
func TestWroteFencesByRevision(t *testing.T) {
	f := newFixture(t, nil, nil)
	job := func(state string) api.Job { return api.Job{JobID: "j1", State: state, Hive: "h1", DeadlineAt: t0} }
	state := func() (string, uint64, bool) {
		j, rev, ok := f.v.JobAt("j1")
		return j.State, rev, ok
	}
	// passed waits until the watch has delivered everything written so
	// far, by writing another key and waiting for it.
	marks := 0
	passed := func() {
		t.Helper()
		marks++
		id := fmt.Sprintf("mark%d", marks)
		f.putJob(t, api.Job{JobID: id, State: api.StateDone})
		testkit.WaitFor(t, 5*time.Second, id+" in the view", func() bool { _, ok := f.v.Job(id); return ok })
	}

	rev1 := f.putJob(t, job(api.StateQueued))
	passed()
	ahead := rev1 + 20
	f.v.Wrote(job(api.StateRunning), ahead)
	if s, rev, _ := state(); s != api.StateRunning || rev != ahead {
		t.Fatalf("after Wrote: %s at %d, want running at %d", s, rev, ahead)
	}
	if u := f.v.Underway(); !slices.Equal(ids(u), []string{"j1"}) {
		t.Errorf("underway after Wrote: %v, want j1", ids(u))
	}

	rev2 := f.putJob(t, job(api.StateDispatched))
	passed()
	if s, rev, _ := state(); s != api.StateRunning || rev != ahead {
		t.Errorf("the watch's older revision %d replaced the written one: %s at %d", rev2, s, rev)
	}
	f.v.Wrote(job(api.StateFailed), rev2)
	if s, _, _ := state(); s != api.StateRunning {
		t.Errorf("a Wrote at a revision the watch has passed applied: %s", s)
	}

	var last uint64
	for last <= ahead {
		last = f.putJob(t, job(api.StateDone))
	}
	testkit.WaitFor(t, 5*time.Second, "the newer write from elsewhere", func() bool {
		s, rev, _ := state()
		return s == api.StateDone && rev == last
	})

	if err := f.jobs.Delete(context.Background(), "j1"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "j1 deleted", func() bool { _, _, ok := state(); return !ok })
	f.v.Wrote(job(api.StateRunning), last)
	if _, _, ok := state(); ok {
		t.Error("a late Wrote brought a deleted record back")
	}
}
