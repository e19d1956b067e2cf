package view

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
)

// bucket is a jobs bucket in memory: the records the view reads back.
type bucket struct {
	mu    sync.Mutex
	jobs  map[string][]byte
	revs  map[string]uint64
	reads int
}

func (b *bucket) GetJob(_ context.Context, id string) (api.Job, uint64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reads++
	data, ok := b.jobs[id]
	if !ok {
		return api.Job{}, 0, store.ErrNotFound
	}
	var j api.Job
	err := json.Unmarshal(data, &j)
	return j, b.revs[id], err
}

// put stores j at rev and hands the view the record as its watch would,
// decoded from the bucket's bytes.
func (b *bucket) put(t testing.TB, v *View, j api.Job, rev uint64) {
	t.Helper()
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.jobs[j.JobID], b.revs[j.JobID] = data, rev
	b.mu.Unlock()
	var got api.Job
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	v.applyJob(j.JobID, &got, rev)
}

func newBucketView(recent int) (*View, *bucket) {
	v := New(slog.New(slog.NewTextHandler(io.Discard, nil)), recent)
	b := &bucket{jobs: map[string][]byte{}, revs: map[string]uint64{}}
	v.get = b.GetJob
	return v, b
}

// held counts the records the view holds whole.
func (v *View) held() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := 0
	for _, e := range v.jobs {
		if e.job != nil {
			n++
		}
	}
	return n
}

// backlogJob is a job like those of rbee-bench's backlog: waiting for a
// label no hive has.
func backlogJob(i int) api.Job {
	events := 1
	now := time.Now()
	return api.Job{JobID: fmt.Sprintf("j%07d", i), Operation: api.OpHiveCheck, State: api.StateQueued, Owner: "open",
		CreatedAt: now, DeadlineAt: now.Add(time.Hour), Attempt: 1,
		Request: api.JobRequest{Operation: api.OpHiveCheck, Labels: map[string]string{"pool": "nowhere"}, Payload: &api.HiveCheck{Events: &events}}}
}

// However many records pass through the view, it holds whole only the
// jobs underway and the last few others; the rest are entries, read back
// from the bucket whole when asked for, request and all.
func TestViewHoldsRecentRecordsWhole(t *testing.T) {
	const n, recent = 100_000, 64
	v, b := newBucketView(recent)
	for i := range n {
		b.put(t, v, backlogJob(i), uint64(i+1))
	}
	// Ten jobs underway: held whole whatever came after them.
	for i := range 10 {
		j := backlogJob(i)
		j.State, j.Hive = api.StateRunning, "h1"
		b.put(t, v, j, uint64(n+i+1))
	}
	for i := range 2 * recent {
		b.put(t, v, backlogJob(n+i), uint64(2*n+i))
	}
	if got, want := v.held(), 10+recent; got != want {
		t.Fatalf("%d records held whole, want %d (underway and recent)", got, want)
	}
	if got := len(v.Underway()); got != 10 {
		t.Fatalf("%d underway, want 10", got)
	}
	if w := v.Waiting(""); w != n-10+2*recent {
		t.Fatalf("%d waiting, want %d", w, n-10+2*recent)
	}

	// The oldest waiting job is long let go: it reads back whole.
	want := backlogJob(10)
	got, ok := v.Job(want.JobID)
	if !ok || got.JobID != want.JobID || got.Request.Labels["pool"] != "nowhere" || *got.Request.Payload.(*api.HiveCheck).Events != 1 {
		t.Fatalf("Job(%s) = %+v, %v; want it whole from the bucket", want.JobID, got, ok)
	}
	if _, rev, ok := v.JobAt(want.JobID); !ok || rev != 11 {
		t.Fatalf("JobAt after the read: rev %d, %v; want it held again at 11", rev, ok)
	}

	// The queue is served in order, reading only as far as the caller goes.
	b.reads = 0
	var first []string
	for j, err := range v.WaitingFor(context.Background(), want.Request) {
		if err != nil {
			t.Fatal(err)
		}
		if first = append(first, j.JobID); len(first) == 3 {
			break
		}
	}
	if fmt.Sprint(first) != "[j0000010 j0000011 j0000012]" || b.reads > 2 {
		t.Fatalf("first waiting %v after %d reads; want j0000010 to j0000012 after at most 2", first, b.reads)
	}

	// A listing reads its page whole.
	page, err := v.Jobs(context.Background(), Filter{State: api.StateQueued, Limit: 3})
	if err != nil || len(page) != 3 || page[0].JobID != fmt.Sprintf("j%07d", n+2*recent-1) || page[2].Request.Labels["pool"] != "nowhere" {
		t.Fatalf("Jobs = %+v, %v", page, err)
	}
}

// What the view's memory holds per waiting job, holding every record whole
// and holding a few: the heap the view takes, the bucket's left out.
func TestViewMemoryPerJob(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a view with 100,000 jobs")
	}
	const n = 100_000
	perJob := func(recent int) int64 {
		v, b := newBucketView(recent)
		recs := make([]api.Job, n)
		for i := range recs {
			recs[i] = backlogJob(i)
			data, _ := json.Marshal(recs[i])
			b.jobs[recs[i].JobID], b.revs[recs[i].JobID] = data, uint64(i+1)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i, j := range recs {
			var got api.Job
			_ = json.Unmarshal(b.jobs[j.JobID], &got)
			v.applyJob(j.JobID, &got, uint64(i+1))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(recs)
		runtime.KeepAlive(b)
		runtime.KeepAlive(v)
		return (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	}
	all, few := perJob(n), perJob(DefaultRecent)
	t.Logf("heap per waiting job: %d bytes holding every record whole, %d holding %d", all, few, DefaultRecent)
	if few > all/2 {
		t.Errorf("holding %d records whole takes %d bytes per job, more than half of %d holding all", DefaultRecent, few, all)
	}
}

// A record read from the bucket at a newer revision than the view knows
// is answered but not held: the watch brings that revision, with what it
// changes in the indexes.
func TestViewHoldsOnlyTheRevisionItKnows(t *testing.T) {
	v, b := newBucketView(1)
	b.put(t, v, backlogJob(1), 1)
	b.put(t, v, backlogJob(2), 2) // lets j0000001 go
	placed := backlogJob(1)
	placed.Hive = "h1"
	data, _ := json.Marshal(placed)
	b.jobs[placed.JobID], b.revs[placed.JobID] = data, 3
	got, ok := v.Job(placed.JobID)
	if !ok || got.Hive != "h1" {
		t.Fatalf("Job = %+v, %v; want the bucket's newer record", got, ok)
	}
	if _, _, ok := v.JobAt(placed.JobID); ok {
		t.Fatal("the view holds a revision its watch has not brought")
	}
	if !v.Waits(placed.JobID) {
		t.Fatal("the view's indexes moved before its watch")
	}
	// Deleted from the bucket before the watch says so: not found.
	delete(b.jobs, placed.JobID)
	if _, ok := v.Job(placed.JobID); ok {
		t.Fatal("a deleted record was found")
	}
}
