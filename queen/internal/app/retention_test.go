package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// A job past the retention is gone everywhere at once: its record, its
// place in the listing and its stream answer 404 with a reason.
func TestRetentionExpiresJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the retention")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.Retention = 3 * time.Second })
	mustHive(t, base, ns.ClientURL(), "h1")
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(3)}})
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	checkComplete(t, frames, done)

	listed := func() bool {
		var l api.JobList
		do(t, "GET", base+"/v1/jobs", nil, &l)
		for _, j := range l.Jobs {
			if j.JobID == job {
				return true
			}
		}
		return false
	}
	if !listed() {
		t.Fatal("the job is not listed before it expires")
	}
	waitFor(t, 15*time.Second, func() bool { return status(t, base+"/v1/jobs/"+job) == 404 })
	// The listing follows the purge through the bucket's watch.
	waitFor(t, 2*time.Second, func() bool { return !listed() })
	var e api.ErrorBody
	if code := do(t, "GET", base+"/v1/jobs/"+job+"/stream", nil, &e); code != 404 || !strings.Contains(e.Error.Message, "retention") {
		t.Fatalf("stream of an expired job: %d %+v", code, e)
	}
	// The cluster keeps working at that retention.
	next := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(1)}})
	frames, done, _ = sse(t, context.Background(), base, next, 0, 0)
	checkComplete(t, frames, done)
}

// A job that runs longer than the retention keeps its record until it ends:
// the jobs bucket's TTL leaves room for the longest deadline.
func TestRetentionKeepsRunningJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("outlives the retention")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.Retention = 2 * time.Second })
	mustHive(t, base, ns.ClientURL(), "h1", func(c *agent.Config) { c.AllowRun = true })
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "5"}}})
	waitFor(t, 5*time.Second, func() bool {
		var j api.Job
		return do(t, "GET", base+"/v1/jobs/"+job, nil, &j) == 200 && j.State == api.StateRunning
	})
	time.Sleep(3500 * time.Millisecond)
	var j api.Job
	if code := do(t, "GET", base+"/v1/jobs/"+job, nil, &j); code != 200 || j.State != api.StateRunning {
		t.Fatalf("a running job past the retention: %d %+v", code, j)
	}
	waitFor(t, 10*time.Second, func() bool {
		var j api.Job
		return do(t, "GET", base+"/v1/jobs/"+job, nil, &j) == 200 && j.State == api.StateDone
	})
}
