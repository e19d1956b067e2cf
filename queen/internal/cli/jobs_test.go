package cli_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"rbee.dev/shared/api"
)

func TestMain(m *testing.M) {
	// Narration lines print local times; one zone makes them comparable.
	time.Local = time.UTC
	goleak.VerifyTestMain(m)
}

func ptr[T any](v T) *T { return &v }

func TestSubmit(t *testing.T) {
	q := newFakeQueen(t)
	q.token = "tok"
	r := q.runWith(t, invocation{env: map[string]string{"RBEE_TOKEN": "tok"}},
		"jobs", "submit", "--op", "hive_check", "--hive", "h1", "--field", "events=5",
		"--field", "payload_bytes=16", "--timeout", "90", "--idempotency-key", "k1")
	r.want(t, 0)
	if r.stdout != "job-1\n" {
		t.Fatalf("stdout %q, want the job id", r.stdout)
	}
	creates, _, _ := q.snapshot()
	c := creates[0]
	if c.req.Operation != api.OpHiveCheck || c.req.Hive != "h1" || *c.req.Payload.(*api.HiveCheck).Events != 5 || c.req.Payload.(*api.HiveCheck).PayloadBytes != 16 || c.req.TimeoutS != 90 {
		t.Errorf("request %+v", c.req)
	}
	if c.key != "k1" || c.auth != "Bearer tok" {
		t.Errorf("Idempotency-Key %q, Authorization %q", c.key, c.auth)
	}
}

func TestSubmitBodyAndFlags(t *testing.T) {
	q := newFakeQueen(t)
	q.token = "flagtok"
	// --queen and --token win over the environment.
	env := map[string]string{"RBEE_QUEEN": "http://127.0.0.1:1", "RBEE_TOKEN": "wrong"}
	r := q.runWith(t, invocation{env: env}, "--queen", q.srv.URL, "--token", "flagtok", "--json",
		"jobs", "submit", "--body", `{"operation":"run","command":["echo","hi"],"env":{"A":"1"}}`, "--hive", "h2", "--timeout", "2m")
	r.want(t, 0)
	var created api.CreateJobResponse
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.JobID != "job-1" || created.StreamURL == "" {
		t.Fatalf("--json output %q: %v", r.stdout, err)
	}
	r = q.runWith(t, invocation{env: env, stdin: `{"operation":"run","command":["true"]}`},
		"--queen", q.srv.URL, "--token", "flagtok", "jobs", "submit", "--body", "-", "--field", "dir=/tmp")
	r.want(t, 0)
	creates, _, _ := q.snapshot()
	if got, run := creates[0].req, creates[0].req.Payload.(*api.Run); strings.Join(run.Command, " ") != "echo hi" || run.Env["A"] != "1" || got.Hive != "h2" || got.TimeoutS != 120 {
		t.Errorf("first request %+v, %+v", got, run)
	}
	if run := creates[1].req.Payload.(*api.Run); run.Command[0] != "true" || run.Dir != "/tmp" {
		t.Errorf("second request %+v", run)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"jobs", "submit"}, "--op is required"},
		{[]string{"jobs", "submit", "--op", "hive_check", "--field", "events=abc"}, `"abc" is not JSON`},
		{[]string{"jobs", "submit", "--op", "hive_check", "--field", "bogus=1"}, `unknown field "bogus"`},
		{[]string{"jobs", "submit", "--op", "hive_check", "--field", "novalue"}, "want KEY=VALUE"},
		{[]string{"jobs", "submit", "--body", "[1]"}, "--body must be a JSON object"},
		{[]string{"jobs", "submit", "--op", "run", "--timeout", "soon"}, "neither seconds nor a duration"},
		{[]string{"jobs", "submit", "--op", "run", "extra"}, "takes no arguments"},
		{[]string{"jobs", "get"}, "needs ID"},
		{[]string{"jobs", "logs", "a", "b"}, "needs ID"},
		{[]string{"jobs", "ls", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"jobs", "ls", "--limit", "-1"}, "--limit must not be negative"},
		{[]string{"jobs", "nope"}, `unknown command "nope" for "rbee jobs"`},
		{[]string{"nope"}, `unknown command "nope" for "rbee"`},
		{[]string{"run"}, "run needs a command"},
		{[]string{"run", "--env", "NOEQUALS", "--", "true"}, "want KEY=VALUE"},
		{[]string{"hive", "status"}, "needs HIVE"},
		{[]string{"--queen", "ftp://x", "jobs", "ls"}, "not an http(s) URL"},
	}
	q := newFakeQueen(t)
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := q.run(t, tt.args...)
			r.want(t, 2)
			if !strings.HasPrefix(r.stderr, "rbee: ") || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("stderr %q, want %q", r.stderr, tt.want)
			}
		})
	}
	if creates, _, _ := q.snapshot(); len(creates) != 0 {
		t.Fatalf("usage errors reached the queen: %+v", creates)
	}
}

func TestHelpExitsZero(t *testing.T) {
	q := newFakeQueen(t)
	for _, args := range [][]string{{}, {"--help"}, {"jobs"}, {"run", "--help"}} {
		r := q.run(t, args...)
		r.want(t, 0)
		if !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("rbee %v printed no usage: %q", args, r.stdout)
		}
	}
}

func TestQueenErrors(t *testing.T) {
	q := newFakeQueen(t)
	r := q.run(t, "jobs", "submit", "--op", "nope")
	r.want(t, 1)
	if !strings.Contains(r.stderr, `rbee: submit nope job: unknown operation "nope"`) {
		t.Errorf("stderr %q", r.stderr)
	}
	r = q.run(t, "jobs", "get", "ghost")
	r.want(t, 1)
	if r.stderr != "rbee: get job ghost: job ghost not found\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	q.token = "tok"
	r = q.run(t, "hive", "ls")
	r.want(t, 1)
	if r.stderr != "rbee: list hives: a valid token is required\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestJobsList(t *testing.T) {
	q := newFakeQueen(t)
	q.seedJob(api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1"}, func(j *fakeJob) {
		j.narrate("started", "")
		j.end(api.StateDone, nil, "")
	})
	q.seedJob(api.JobRequest{Operation: api.OpRun, Payload: &api.Run{Command: []string{"true"}}}, func(*fakeJob) {})
	r := q.run(t, "jobs", "ls", "--state", "done", "--limit", "5", "--hive", "h1")
	r.want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	want := [][]string{
		{"ID", "OPERATION", "HIVE", "STATE", "CREATED", "DURATION"},
		{"job-2", "run", "-", "queued", "2025-03-04", "05:06:07", "-"},
		{"job-1", "hive_check", "h1", "done", "2025-03-04", "05:06:07", "1ms"},
	}
	if len(lines) != len(want) {
		t.Fatalf("table:\n%s", r.stdout)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d: %q, want %q", i, got, w)
		}
	}
	q.mu.Lock()
	query := q.listQuery[0]
	q.mu.Unlock()
	if query != "hive=h1&limit=5&state=done" {
		t.Errorf("query %q", query)
	}
	r = q.run(t, "--json", "jobs", "ls")
	r.want(t, 0)
	var list api.JobList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Jobs) != 2 || list.Jobs[0].JobID != "job-2" {
		t.Fatalf("--json %q: %v", r.stdout, err)
	}
}

func TestJobsGetAndCancel(t *testing.T) {
	q := newFakeQueen(t)
	q.seedJob(api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"false"}}}, func(j *fakeJob) {
		j.narrate("started", "")
		j.end(api.StateFailed, ptr(1), "exit status 1")
	})
	q.seedJob(api.JobRequest{Operation: api.OpRun, Payload: &api.Run{Command: []string{"sleep", "9"}}}, func(j *fakeJob) { j.narrate("started", "") })

	r := q.run(t, "jobs", "get", "job-1")
	r.want(t, 0)
	for _, want := range []string{"ID         job-1", "STATE      failed", "EXIT CODE  1", "ERROR      exit status 1", `REQUEST    {"operation":"run","hive":"h1","command":["false"]}`} {
		if !strings.Contains(r.stdout, want+"\n") {
			t.Errorf("get output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = q.run(t, "--json", "jobs", "get", "job-1")
	r.want(t, 0)
	var j api.Job
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || j.State != api.StateFailed || *j.ExitCode != 1 {
		t.Fatalf("--json %q: %v", r.stdout, err)
	}

	r = q.run(t, "jobs", "cancel", "job-2")
	r.want(t, 0)
	if r.stdout != "job-2 cancelling\n" {
		t.Errorf("cancel stdout %q", r.stdout)
	}
	r = q.run(t, "jobs", "cancel", "job-1")
	r.want(t, 1)
	if r.stderr != "rbee: cancel job job-1: job job-1 already failed\n" {
		t.Errorf("cancel of a finished job: stderr %q", r.stderr)
	}
}

// richScript narrates one of everything a log view must show.
func richScript(j *fakeJob) {
	j.narrate("started", "running")
	j.output("stdout", "hello")
	j.output("stderr", "oops")
	j.emit(api.SSENarration, api.Event{Actor: "hive-a", Action: "download", Message: "fetching", Progress: &api.Progress{Done: 5, Total: 10, Unit: "bytes"}})
	j.emit(api.SSEData, api.Event{Actor: "hive-a", Action: "result", Message: "model listed", Data: map[string]any{"model_id": "m1"}})
	j.emit(api.SSENarration, api.Event{Actor: "hive-a", Action: "slow", Level: api.LevelWarn, Message: "mirror is slow"})
	j.emit(api.SSENarration, api.Event{Actor: "hive-a", Action: "detail", Level: api.LevelDebug, Message: "only with -v"})
	j.end(api.StateDone, nil, "")
}

const richStdout = `05:06:07.001 queen job_created job created
05:06:07.002 hive-a started running
hello
05:06:07.005 hive-a download fetching [5/10 bytes]
05:06:07.006 hive-a result model listed
  {
    "model_id": "m1"
  }
05:06:07.007 hive-a slow WARN mirror is slow
05:06:07.009 hive-a end done
`

func TestJobsLogs(t *testing.T) {
	q := newFakeQueen(t)
	q.seedJob(api.JobRequest{Operation: api.OpHiveCheck}, richScript)
	r := q.run(t, "jobs", "logs", "job-1")
	r.want(t, 0)
	if r.stdout != richStdout {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, richStdout)
	}
	if r.stderr != "oops\n" {
		t.Errorf("stderr %q, want the job's stderr line only", r.stderr)
	}

	r = q.run(t, "jobs", "logs", "-v", "job-1")
	r.want(t, 0)
	if !strings.Contains(r.stdout, "05:06:07.008 hive-a detail only with -v\n") {
		t.Errorf("-v does not show debug events:\n%s", r.stdout)
	}
}

func TestJobsLogsJSON(t *testing.T) {
	q := newFakeQueen(t)
	q.seedJob(api.JobRequest{Operation: api.OpHiveCheck}, richScript)
	r := q.run(t, "--json", "jobs", "logs", "job-1")
	r.want(t, 0)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 9 || r.stderr != "" {
		t.Fatalf("%d lines, stderr %q:\n%s", len(lines), r.stderr, r.stdout)
	}
	for i, l := range lines {
		var ev api.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Seq != uint64(i+1) || ev.JobID != "job-1" {
			t.Fatalf("line %d %q: %v", i, l, err)
		}
	}
	if !strings.Contains(lines[8], `"state":"done"`) {
		t.Errorf("last line is not the end: %s", lines[8])
	}
}

// TestJobsLogsFollowReconnect follows a live job through a connection that
// dies in the middle of an event: the reconnect must resume after the last
// whole event, and the output must have every line exactly once.
func TestJobsLogsFollowReconnect(t *testing.T) {
	q := newFakeQueen(t)
	q.dropAfter = 3
	q.script = func(j *fakeJob) {
		j.waitStream()
		for i := 1; i <= 6; i++ {
			j.narrate("step", fmt.Sprintf("step %d", i))
		}
		j.end(api.StateFailed, nil, "disk full")
	}
	r := q.run(t, "jobs", "submit", "--op", "hive_check")
	r.want(t, 0)
	r = q.run(t, "jobs", "logs", "-f", "job-1")
	r.want(t, 1)
	var want strings.Builder
	want.WriteString("05:06:07.001 queen job_created job created\n")
	for i := 1; i <= 6; i++ {
		fmt.Fprintf(&want, "05:06:07.%03d hive-a step step %d\n", i+1, i)
	}
	want.WriteString("05:06:07.008 hive-a end failed: disk full\n")
	if r.stdout != want.String() {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want.String())
	}
	if r.stderr != "rbee: job job-1 failed: disk full\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	ids := q.frameIDs("job-1")
	_, _, lastIDs := q.snapshot()
	if len(lastIDs) != 2 || lastIDs[0] != "" || lastIDs[1] != fmt.Sprint(ids[2]) {
		t.Errorf("Last-Event-ID per connection %q, want [\"\" %q]", lastIDs, fmt.Sprint(ids[2]))
	}
}

func TestSubmitFollow(t *testing.T) {
	q := newFakeQueen(t)
	r := q.run(t, "jobs", "submit", "--op", "hive_check", "-f")
	r.want(t, 0)
	want := "05:06:07.001 queen job_created job created\n05:06:07.002 hive-a end done\n"
	if r.stdout != want || r.stderr != "job job-1\n" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// Without -f, a running job's events so far are printed and the command
// ends, however busy the job.
func TestJobsLogsOfRunningJob(t *testing.T) {
	q := newFakeQueen(t)
	q.seedJob(api.JobRequest{Operation: api.OpHiveCheck}, func(j *fakeJob) { j.narrate("started", "working") })
	start := time.Now()
	r := q.run(t, "jobs", "logs", "job-1")
	r.want(t, 0)
	if r.stdout != "05:06:07.001 queen job_created job created\n05:06:07.002 hive-a started working\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "job job-1 is running; these are its events so far") {
		t.Errorf("stderr %q", r.stderr)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s to stop", d)
	}
}
