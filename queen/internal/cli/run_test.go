package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"rbee.dev/shared/api"
)

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name           string
		end            func(j *fakeJob)
		code           int
		stderrSuffix   string
		verboseStderrs []string
	}{
		{"done", func(j *fakeJob) { j.end(api.StateDone, ptr(0), "") }, 0, "err1\n", nil},
		{"exit 3", func(j *fakeJob) { j.end(api.StateFailed, ptr(3), "exit status 3") }, 3, "err1\n", nil},
		{"exit code out of range", func(j *fakeJob) { j.end(api.StateFailed, ptr(300), "") }, 1, "err1\n", nil},
		{"killed", func(j *fakeJob) { j.end(api.StateFailed, ptr(-1), "deadline exceeded") }, 1, "err1\nrbee: job job-1 failed: deadline exceeded\n", nil},
		{"failed without a code", func(j *fakeJob) { j.end(api.StateFailed, nil, "hive h1 lost") }, 1, "err1\nrbee: job job-1 failed: hive h1 lost\n", nil},
		{"cancelled elsewhere", func(j *fakeJob) { j.end(api.StateCancelled, nil, "cancelled") }, 130, "err1\nrbee: job job-1 was cancelled\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newFakeQueen(t)
			q.script = func(j *fakeJob) {
				j.narrate("started", "")
				j.output("stdout", "line1")
				j.output("stderr", "err1")
				j.output("stdout", "  line2 keeps its spaces  ")
				tt.end(j)
			}
			r := q.run(t, "run", "--hive", "h1", "--env", "A=1", "--env", "B=x=y", "--dir", "/srv", "--timeout", "30", "--", "sh", "-c", "echo hi")
			r.want(t, tt.code)
			if r.stdout != "line1\n  line2 keeps its spaces  \n" {
				t.Errorf("stdout %q", r.stdout)
			}
			if r.stderr != tt.stderrSuffix {
				t.Errorf("stderr %q, want %q", r.stderr, tt.stderrSuffix)
			}
			creates, _, _ := q.snapshot()
			req := creates[0].req
			run, _ := req.Payload.(*api.Run)
			if req.Operation != api.OpRun || req.Hive != "h1" || strings.Join(run.Command, "|") != "sh|-c|echo hi" ||
				run.Env["A"] != "1" || run.Env["B"] != "x=y" || run.Dir != "/srv" || req.TimeoutS != 30 {
				t.Errorf("request %+v", req)
			}
		})
	}
}

func TestRunFlagsStopAtCommand(t *testing.T) {
	q := newFakeQueen(t)
	r := q.run(t, "run", "--hive", "h1", "ls", "-l", "--json")
	r.want(t, 0)
	creates, _, _ := q.snapshot()
	if got := strings.Join(creates[0].req.Payload.(*api.Run).Command, " "); got != "ls -l --json" {
		t.Fatalf("command %q: the command's flags must reach it", got)
	}
}

func TestRunVerboseAndJSON(t *testing.T) {
	q := newFakeQueen(t)
	q.script = func(j *fakeJob) {
		j.narrate("started", "pid 42")
		j.output("stdout", "out")
		j.end(api.StateDone, ptr(0), "")
	}
	r := q.run(t, "-v", "run", "true")
	r.want(t, 0)
	wantErr := "job job-1\n05:06:07.001 queen job_created job created\n05:06:07.002 hive-a started pid 42\n05:06:07.004 hive-a end done (exit code 0)\n"
	if r.stdout != "out\n" || r.stderr != wantErr {
		t.Errorf("stdout %q\nstderr %q\nwant   %q", r.stdout, r.stderr, wantErr)
	}

	r = q.run(t, "--json", "run", "true")
	r.want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || r.stderr != "" {
		t.Fatalf("--json stdout:\n%s\nstderr %q", r.stdout, r.stderr)
	}
	var ev api.Event
	if err := json.Unmarshal([]byte(lines[2]), &ev); err != nil || ev.Stream != "stdout" || ev.Message != "out" {
		t.Errorf("line %q: %v", lines[2], err)
	}
}

// TestRunReconnect cuts a run job's stream mid-event: the command's output
// must come out whole, once, in order.
func TestRunReconnect(t *testing.T) {
	q := newFakeQueen(t)
	q.dropAfter = 4
	q.script = func(j *fakeJob) {
		j.waitStream()
		j.narrate("started", "")
		for i := 1; i <= 8; i++ {
			j.output("stdout", fmt.Sprintf("line %d", i))
		}
		j.end(api.StateFailed, ptr(7), "exit status 7")
	}
	r := q.run(t, "run", "--", "seq", "8")
	r.want(t, 7)
	var want strings.Builder
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if r.stdout != want.String() || r.stderr != "" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
	ids := q.frameIDs("job-1")
	if _, _, lastIDs := q.snapshot(); fmt.Sprint(lastIDs) != fmt.Sprintf("[ %d]", ids[3]) {
		t.Errorf("Last-Event-ID per connection %q, want the 4th event's id %d", lastIDs, ids[3])
	}
}

// TestRunInterrupt stands in for Ctrl-C: the command cancels its job, waits
// for the end event, prints everything up to it and exits 130.
func TestRunInterrupt(t *testing.T) {
	q := newFakeQueen(t)
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	q.script = func(j *fakeJob) {
		j.waitStream()
		j.narrate("started", "")
		j.output("stdout", "working")
		interrupt()
		if !j.waitCancel() {
			return
		}
		j.output("stderr", "terminated")
		j.end(api.StateCancelled, nil, "cancelled by request")
	}
	start := time.Now()
	r := q.runWith(t, invocation{ctx: ctx}, "run", "sleep", "100")
	r.want(t, 130)
	if r.stdout != "working\n" || r.stderr != "terminated\nrbee: interrupted; job job-1 cancelled\n" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
	if _, cancels, _ := q.snapshot(); fmt.Sprint(cancels) != "[job-1]" {
		t.Errorf("cancels %v, want one DELETE of job-1", cancels)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s", d)
	}
}

// TestLogsInterruptDetaches checks that following someone's job and
// pressing Ctrl-C leaves the job alone.
func TestLogsInterruptDetaches(t *testing.T) {
	q := newFakeQueen(t)
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	j := q.seedJob(api.JobRequest{Operation: api.OpHiveCheck}, func(j *fakeJob) { j.narrate("started", "") })
	go func() {
		j.waitStream()
		time.Sleep(20 * time.Millisecond)
		interrupt()
	}()
	r := q.runWith(t, invocation{ctx: ctx}, "jobs", "logs", "-f", "job-1")
	r.want(t, 130)
	if _, cancels, _ := q.snapshot(); len(cancels) != 0 {
		t.Errorf("logs -f cancelled the job: %v", cancels)
	}
	if !strings.Contains(r.stdout, "hive-a started") || r.stderr != "rbee: interrupted\n" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}
