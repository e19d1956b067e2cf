package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/hive/agent"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// Issue 16's tests: many hives, many jobs. Both stay out of -short.

// simHives runs n simulated hives in this process, as `hive --simulate`
// does: the real agent, each with its own NATS connection and heartbeat,
// every job's work a pause of work. It waits until the queen at base
// lists them all.
func simHives(t *testing.T, base, natsURL string, n int, work time.Duration, labels map[string]string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for i := 1; i <= n; i++ {
		nc, err := nats.Connect(natsURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg := agent.DefaultConfig()
		cfg.ID, cfg.DataDir, cfg.Slots, cfg.Labels = fmt.Sprintf("sim-%04d", i), t.TempDir(), 4, labels
		cfg.Simulate = work
		a, err := agent.New(cfg, nc, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); defer nc.Close(); _ = a.Run(ctx) }()
	}
	waitFor(t, 60*time.Second, func() bool {
		var list api.HiveList
		return doQuiet(base+"/v1/hives", nil, &list) == 200 && len(list.Hives) >= n
	})
}

// submitMany creates n jobs from req through the queens in turn, from 32
// submitters, and returns their ids.
func submitMany(t *testing.T, bases []string, n int, req api.JobRequest) []string {
	t.Helper()
	ids := make([]string, n)
	var failed sync.Map
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var out api.CreateJobResponse
				if code := doQuiet(bases[i%len(bases)]+"/v1/jobs", req, &out); code != 201 {
					failed.Store(i, code)
					continue
				}
				ids[i] = out.JobID
			}
		}()
	}
	wg.Wait()
	failed.Range(func(k, v any) bool {
		t.Fatalf("job %d not created: status %v", k, v)
		return false
	})
	return ids
}

// jobRecords reads every record of the jobs bucket, keyed by job id.
func jobRecords(t *testing.T, natsURL string) map[string]api.Job {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bus.JobsBucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	out := map[string]api.Job{}
	for e := range w.Updates() {
		if e == nil {
			return out
		}
		var j api.Job
		if err := json.Unmarshal(e.Value(), &j); err != nil {
			t.Fatalf("record %s: %v", e.Key(), err)
		}
		out[e.Key()] = j
	}
	t.Fatal("the jobs bucket's watch ended before its records were read")
	return nil
}

// 200 simulated hives and 20,000 jobs through two queens: every job ends
// done, on its first attempt, exactly once, and none is left behind.
func TestManyHivesManyJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("200 hives, 20,000 jobs")
	}
	const hives, jobs = 200, 20000
	ns := mustNATS(t)
	q1, _ := mustQueen(t, ns.ClientURL())
	q2, _ := mustQueen(t, ns.ClientURL())
	start := time.Now()
	simHives(t, q1, ns.ClientURL(), hives, time.Millisecond, map[string]string{"sim": "yes"})
	t.Logf("%d hives listed in %s", hives, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	req := api.JobRequest{Operation: api.OpHiveCheck, Labels: map[string]string{"sim": "yes"}, Payload: &api.HiveCheck{Events: intp(1)}}
	ids := submitMany(t, []string{q1, q2}, jobs, req)
	t.Logf("%d jobs created in %s", jobs, time.Since(start).Round(time.Millisecond))

	var recs map[string]api.Job
	open := 0
	for wait := time.Now().Add(3 * time.Minute); ; {
		recs, open = jobRecords(t, ns.ClientURL()), 0
		for _, id := range ids {
			if j, ok := recs[id]; !ok || !api.Terminal(j.State) {
				open++
			}
		}
		if open == 0 || time.Now().After(wait) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("%d jobs ended %s after the first was created", jobs, time.Since(start).Round(time.Millisecond))
	if len(recs) != jobs {
		t.Errorf("the jobs bucket holds %d records for %d jobs created", len(recs), jobs)
	}
	used := map[string]bool{}
	bad := 0
	for _, id := range ids {
		j, ok := recs[id]
		switch {
		case !ok:
			t.Errorf("job %s lost: no record", id)
		case j.State != api.StateDone || j.Attempt != 1 || len(j.PastHives) > 0:
			if bad++; bad <= 10 {
				t.Errorf("job %s: state %s, attempt %d, past hives %v, error %q", id, j.State, j.Attempt, j.PastHives, j.Error)
			}
		default:
			used[j.Hive] = true
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d jobs not done on their first attempt (%d still open)", bad, jobs, open)
	}
	if len(used) < hives/2 {
		t.Errorf("only %d of %d hives ran a job", len(used), hives)
	}
}

// A cancel and a deadline are honoured within a second while 20,000 jobs
// wait for a hive that never comes.
func TestCancelAndDeadlineUnderBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 queued jobs")
	}
	ns := mustNATS(t)
	q, _ := mustQueen(t, ns.ClientURL())
	nobody := map[string]string{"gpu": "none-has-it"}
	req := api.JobRequest{Operation: api.OpHiveCheck, Labels: nobody, Payload: &api.HiveCheck{Events: intp(1)}}
	start := time.Now()
	submitMany(t, []string{q}, 20000, req)
	t.Logf("20,000 jobs queued in %s", time.Since(start).Round(time.Millisecond))

	// ended polls a job's record until it is terminal and returns it with
	// the time it was first seen so.
	ended := func(id string, within time.Duration) (api.Job, time.Time) {
		t.Helper()
		var j api.Job
		for stop := time.Now().Add(within); time.Now().Before(stop); time.Sleep(10 * time.Millisecond) {
			if doQuiet(q+"/v1/jobs/"+id, nil, &j) == 200 && api.Terminal(j.State) {
				return j, time.Now()
			}
		}
		t.Fatalf("job %s not ended after %s: %+v", id, within, j)
		return j, time.Time{}
	}

	// The job behind all the others is cancelled.
	last := submit(t, q, req)
	asked := time.Now()
	if code := do(t, "DELETE", q+"/v1/jobs/"+last, nil, nil); code != 200 && code != 202 {
		t.Fatalf("cancel: status %d", code)
	}
	j, at := ended(last, 5*time.Second)
	if j.State != api.StateCancelled {
		t.Errorf("cancelled job ended %s: %q", j.State, j.Error)
	}
	if took := at.Sub(asked); took > time.Second {
		t.Errorf("cancel took %s to end the job", took)
	} else {
		t.Logf("cancel ended the job in %s", took.Round(time.Millisecond))
	}

	// A job whose deadline passes while it waits.
	timed := req
	timed.TimeoutS = 1
	id := submit(t, q, timed)
	j, at = ended(id, 10*time.Second)
	if j.State != api.StateFailed {
		t.Errorf("job past its deadline ended %s: %q", j.State, j.Error)
	}
	if late := at.Sub(j.DeadlineAt); late > time.Second {
		t.Errorf("job ended %s after its deadline", late)
	} else {
		t.Logf("deadline honoured %s after it passed", late.Round(time.Millisecond))
	}
}
