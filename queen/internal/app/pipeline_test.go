package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

func allowRun(c *agent.Config) { c.AllowRun = true }
func oneSlot(c *agent.Config)  { c.Slots = 1 }

// cluster is one queen on its own NATS with a hive h1 that may run commands.
func cluster(t *testing.T, hive ...func(*agent.Config)) (base, natsURL string) {
	t.Helper()
	ns := mustNATS(t)
	base, _ = mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1", append([]func(*agent.Config){allowRun}, hive...)...)
	return base, ns.ClientURL()
}

// A client that connects before the hive has picked the job up gets every
// event: the job's narration exists from the moment it is created.
func TestStreamBeforePickup(t *testing.T) {
	base, _ := cluster(t, oneSlot)
	blocker := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "0.5"}}})
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(50)}})

	var rec api.Job
	do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
	if rec.State != api.StateDispatched && rec.State != api.StateQueued {
		t.Fatalf("job should still wait behind %s, state %s", blocker, rec.State)
	}
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	end := checkComplete(t, frames, done)
	if end.State != api.StateDone || len(frames) != 53 {
		t.Fatalf("end %s with %d frames, want done with 53", end.State, len(frames))
	}
	if first := frames[0].event(t); first.Action != "job_created" {
		t.Fatalf("first event %q, want job_created", first.Action)
	}
}

// A client that connects after the job ended gets the full replay and the
// end, however many times it asks.
func TestReplayAfterEnd(t *testing.T) {
	base, _ := cluster(t)
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(200)}})
	first, done, _ := sse(t, context.Background(), base, job, 0, 0)
	checkComplete(t, first, done)
	for i := 0; i < 2; i++ {
		again, done, _ := sse(t, context.Background(), base, job, 0, 0)
		checkComplete(t, again, done)
		if len(again) != len(first) || again[len(again)-1].ID != first[len(first)-1].ID {
			t.Fatalf("replay %d differs: %d frames vs %d", i, len(again), len(first))
		}
	}
	// Resuming after the end gets 204 at once: nothing follows.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rest, done, _ := sse(t, ctx, base, job, first[len(first)-1].ID, 0)
	if len(rest) != 0 || !done {
		t.Fatalf("resume after end: %d frames, done=%v", len(rest), done)
	}
	var rec api.Job
	do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
	if rec.State != api.StateDone || rec.FinishedAt == nil || rec.StartedAt == nil {
		t.Fatalf("record after end: %+v", rec)
	}
}

// A client that drops mid-job and reconnects with Last-Event-ID to a second
// queen on the same NATS gets the rest with no gap and no repeat.
func TestResumeOnSecondQueen(t *testing.T) {
	base, natsURL := cluster(t)
	second, _ := mustQueen(t, natsURL)
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.02; done"}}})

	head, done, _ := sse(t, context.Background(), base, job, 0, 10)
	if done || len(head) != 10 {
		t.Fatalf("first read: %d frames, done=%v", len(head), done)
	}
	tail, done, _ := sse(t, context.Background(), second, job, head[len(head)-1].ID, 0)
	end := checkComplete(t, append(head, tail...), done)
	if end.State != api.StateDone {
		t.Fatalf("end %+v", end)
	}
	var lines int
	for _, f := range append(head, tail...) {
		if e := f.event(t); e.Stream == "stdout" {
			if want := fmt.Sprintf("line %d", lines); e.Message != want {
				t.Fatalf("line %q, want %q", e.Message, want)
			}
			lines++
		}
	}
	if lines != 40 {
		t.Fatalf("%d lines, want 40", lines)
	}
	// An id past the newest event of a running job is no place to resume:
	// its stream would skip the end still to come and never close.
	slow := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "echo a; sleep 30"}}})
	first, _, _ := sse(t, context.Background(), base, slow, 0, 2)
	for _, q := range []string{base, second} {
		hdr := map[string]string{"Last-Event-ID": strconv.FormatUint(first[len(first)-1].ID+1_000_000, 10)}
		var e api.ErrorBody
		if code := doHeaders(t, "GET", q+"/v1/jobs/"+slow+"/stream", nil, hdr, &e); code != 400 || !strings.Contains(e.Error.Message, "past the newest event") {
			t.Fatalf("resume past the newest event: %d %+v", code, e)
		}
	}
	// follow=false: what is stored now, then the close, the job still
	// running; once its output is stored, that too.
	waitFor(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", second+"/v1/jobs/"+slow+"/stream?follow=false", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "event: narration") ||
			!strings.HasSuffix(string(body), "data: [DONE]\n\n") || strings.Contains(string(body), "event: end") {
			t.Fatalf("follow=false: %d %v\n%s", resp.StatusCode, err, body)
		}
		return strings.Contains(string(body), `"message":"a"`)
	})
	do(t, "DELETE", base+"/v1/jobs/"+slow, nil, nil)
	// The second queen serves the same records.
	var rec api.Job
	if code := do(t, "GET", second+"/v1/jobs/"+job, nil, &rec); code != 200 || rec.State != api.StateDone {
		t.Fatalf("second queen: %d %+v", code, rec)
	}
}

// A job that stays quiet for longer than any idle timeout is not ended
// early: heartbeats keep the stream open until the real end.
func TestQuietJobNotEndedEarly(t *testing.T) {
	if testing.Short() {
		t.Skip("sleeps")
	}
	base, _ := cluster(t)
	start := time.Now()
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "echo before; sleep 3; echo after"}}})
	frames, done, comments := sse(t, context.Background(), base, job, 0, 0)
	end := checkComplete(t, frames, done)
	if end.State != api.StateDone || time.Since(start) < 3*time.Second {
		t.Fatalf("end %s after %s", end.State, time.Since(start))
	}
	if comments < 5 {
		t.Fatalf("%d heartbeat comments in 3s at 200ms", comments)
	}
	var msgs []string
	for _, f := range frames {
		if e := f.event(t); e.Stream == "stdout" {
			msgs = append(msgs, e.Message)
		}
	}
	if strings.Join(msgs, ",") != "before,after" {
		t.Fatalf("output %v", msgs)
	}
}

// A job with 100,000 events arrives complete and in order; the system this
// replaces dropped everything past 10,000.
func TestHundredThousandEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	base, _ := cluster(t)
	const n = 100_000
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(n), PayloadBytes: 16}})
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	end := checkComplete(t, frames, done)
	if end.State != api.StateDone || len(frames) != n+3 {
		t.Fatalf("end %s, %d frames, want %d", end.State, len(frames), n+3)
	}
	// A second client reading the whole history gets the same.
	again, done, _ := sse(t, context.Background(), base, job, 0, 0)
	checkComplete(t, again, done)
	if len(again) != len(frames) {
		t.Fatalf("replay %d frames, live %d", len(again), len(frames))
	}
}

// Cancelling a queued job ends it without running it.
func TestCancelQueued(t *testing.T) {
	base, _ := cluster(t, oneSlot)
	marker := filepath.Join(t.TempDir(), "ran")
	blocker := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "1"}}})
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"touch", marker}}})
	var cr api.CancelResponse
	if code := do(t, "DELETE", base+"/v1/jobs/"+job, nil, &cr); code != 202 {
		t.Fatalf("cancel: %d", code)
	}
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateCancelled {
		t.Fatalf("end %+v", end)
	}
	// Let the blocker finish and the hive pass over the cancelled job.
	sse(t, context.Background(), base, blocker, 0, 0)
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("cancelled job ran")
	}
	var rec api.Job
	do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
	if rec.State != api.StateCancelled {
		t.Fatalf("record %s", rec.State)
	}
	if code := do(t, "DELETE", base+"/v1/jobs/"+job, nil, nil); code != 409 {
		t.Fatalf("second cancel: %d, want 409", code)
	}
}

// Cancelling a running job kills its whole process group and the stream
// ends cancelled within two seconds.
func TestCancelRunning(t *testing.T) {
	base, _ := cluster(t)
	pidFile := filepath.Join(t.TempDir(), "child")
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "sleep 60 & echo $! > " + pidFile + "; echo started; wait"}}})
	frames, _, _ := sse(t, context.Background(), base, job, 0, 4)
	if e := frames[len(frames)-1].event(t); e.Message != "started" {
		t.Fatalf("fourth event %+v", e)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	fmt.Sscan(string(data), &child)

	start := time.Now()
	if code := do(t, "DELETE", base+"/v1/jobs/"+job, nil, nil); code != 202 {
		t.Fatalf("cancel: %d", code)
	}
	all, done, _ := sse(t, context.Background(), base, job, 0, 0)
	end := checkComplete(t, all, done)
	if end.State != api.StateCancelled || time.Since(start) > 2*time.Second {
		t.Fatalf("end %s after %s", end.State, time.Since(start))
	}
	waitFor(t, 2*time.Second, func() bool { return syscall.Kill(child, 0) != nil })
}

// A hive killed mid-job: the job still reaches a terminal state and its
// stream ends.
func TestHiveKilledMidJob(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	hive := hiveProcess(t, base, ns.ClientURL(), "doomed", "--allow-run")
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "doomed", Payload: &api.Run{Command: []string{"sh", "-c", "echo up; sleep 60"}}})
	head, _, _ := sse(t, context.Background(), base, job, 0, 4)
	if err := hive.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rest, done, _ := sse(t, ctx, base, job, head[len(head)-1].ID, 0)
	end := checkComplete(t, append(head, rest...), done)
	if end.State != api.StateFailed || !strings.Contains(end.Error, "hive doomed lost") {
		t.Fatalf("end %+v", end)
	}
	var rec api.Job
	do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
	if rec.State != api.StateFailed {
		t.Fatalf("record %s", rec.State)
	}
}

// run on a hive started without --allow-run fails clearly and executes
// nothing.
func TestRunNotAllowed(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "locked")
	marker := filepath.Join(t.TempDir(), "ran")
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "locked", Payload: &api.Run{Command: []string{"touch", marker}}})
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	end := checkComplete(t, frames, done)
	if end.State != api.StateFailed || !strings.Contains(end.Error, "--allow-run") {
		t.Fatalf("end %+v", end)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("command ran on a hive without --allow-run")
	}
}

// A server-side deadline ends a job that runs too long.
func TestDeadline(t *testing.T) {
	base, _ := cluster(t)
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", TimeoutS: 0.5, Payload: &api.Run{Command: []string{"sleep", "30"}}})
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateFailed || end.Error != "deadline exceeded" {
		t.Fatalf("end %+v", end)
	}
}

// The status operation runs on the queen; hive_status on the hive.
func TestStatusOperations(t *testing.T) {
	base, _ := cluster(t)
	for _, op := range []string{api.OpStatus, api.OpHiveStatus} {
		job := submit(t, base, api.JobRequest{Operation: op})
		frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
		checkComplete(t, frames, done)
		var data *api.Event
		for _, f := range frames {
			if f.Event == "data" {
				e := f.event(t)
				data = &e
			}
		}
		if data == nil || data.Data == nil {
			t.Fatalf("%s: no data event in %v", op, frames)
		}
		if !strings.Contains(fmt.Sprint(data.Data), "h1") {
			t.Fatalf("%s: data does not mention hive h1: %v", op, data.Data)
		}
	}
}

// An Idempotency-Key makes a retried submission return the first job.
func TestIdempotencyKey(t *testing.T) {
	base, natsURL := cluster(t)
	second, _ := mustQueen(t, natsURL, func(c *app.Config) {})
	var ids []string
	for _, b := range []string{base, second, base} {
		req := api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(1)}}
		var out api.CreateJobResponse
		hdr := map[string]string{"Idempotency-Key": "retry-me-1"}
		if code := doHeaders(t, "POST", b+"/v1/jobs", req, hdr, &out); code != 201 {
			t.Fatalf("status %d", code)
		}
		ids = append(ids, out.JobID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("ids differ: %v", ids)
	}
	var list api.JobList
	waitFor(t, 2*time.Second, func() bool {
		do(t, "GET", base+"/v1/jobs?operation=hive_check", nil, &list)
		return len(list.Jobs) == 1
	})
}

// An Idempotency-Key belongs to who sent it and to what they sent: the same
// key with another body is a conflict, another key holder gets a job of its
// own, and retries racing each other all get the one job, never an empty id.
func TestIdempotencyKeyBinding(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	mustHive(t, base, ns.ClientURL(), "h1")
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey, "Idempotency-Key": "k-1"}
	var k api.Key
	if code := doHeaders(t, "POST", base+"/v1/keys", api.KeyRequest{Name: "ops", Scopes: []string{"operate", "read"}}, admin, &k); code != 201 {
		t.Fatalf("create key: %d", code)
	}
	ops := map[string]string{"Authorization": "Bearer " + k.Key, "Idempotency-Key": "k-1"}
	one := api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(1)}}
	two := api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(2)}}

	var first, again, other api.CreateJobResponse
	if code := doHeaders(t, "POST", base+"/v1/jobs", one, admin, &first); code != 201 || first.JobID == "" {
		t.Fatalf("first: %d %+v", code, first)
	}
	if code := doHeaders(t, "POST", base+"/v1/jobs", two, admin, nil); code != 409 {
		t.Fatalf("same key, other body: %d, want 409", code)
	}
	if code := doHeaders(t, "POST", base+"/v1/jobs", one, ops, &other); code != 201 || other.JobID == first.JobID || other.JobID == "" {
		t.Fatalf("same key, other principal: %d %+v (first %s)", code, other, first.JobID)
	}
	if code := doHeaders(t, "POST", base+"/v1/jobs", one, admin, &again); code != 201 || again.JobID != first.JobID {
		t.Fatalf("retry: %d %+v, want %s", code, again, first.JobID)
	}

	const racers = 8
	ids := make(chan string, racers)
	var wg sync.WaitGroup
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out api.CreateJobResponse
			hdr := map[string]string{"Authorization": "Bearer " + testAdminKey, "Idempotency-Key": "race-1"}
			code := doHeaders(t, "POST", base+"/v1/jobs", one, hdr, &out)
			if code != 201 {
				t.Errorf("racer: status %d", code)
			}
			ids <- out.JobID
		}()
	}
	wg.Wait()
	close(ids)
	var won string
	for id := range ids {
		if id == "" || (won != "" && id != won) {
			t.Fatalf("racing retries got job ids %q and %q", won, id)
		}
		won = id
	}
}
