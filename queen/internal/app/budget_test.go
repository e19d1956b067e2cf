package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// issueCheck is the hive_check that could store 640 GiB of narration.
var issueCheck = api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(10_000_000), PayloadBytes: 65536}}

// A job certain to pass its narration budget is refused at submit, with a
// message that names the limit; one that fits is accepted.
func TestNarrationBudgetRefusedAtSubmit(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a queen process")
	}
	ns := mustNATS(t)
	small, _ := queenProcess(t, ns.ClientURL(), "--job-max-narration-bytes", "1MiB")
	dflt, _ := mustQueen(t, ns.ClientURL())
	cases := []struct {
		name, base string
		req        api.JobRequest
		status     int
		budget     string
	}{
		{"issue request, default budget", dflt, issueCheck, 400, "1 GiB"},
		{"issue request, 1 MiB budget", small, issueCheck, 400, "1 MiB"},
		{"2 MiB of payload, 1 MiB budget", small, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(32), PayloadBytes: 65536}}, 400, "1 MiB"},
		{"fits", small, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(10), PayloadBytes: 1000}}, 201, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body struct {
				api.ErrorBody
				api.CreateJobResponse
			}
			code := do(t, "POST", c.base+"/v1/jobs", c.req, &body)
			if code != c.status {
				t.Fatalf("status %d, want %d: %+v", code, c.status, body)
			}
			if c.status != 400 {
				return
			}
			msg := body.Error.Message
			if body.Error.Code != api.CodeValidation || !strings.Contains(msg, "--job-max-narration-bytes") || !strings.Contains(msg, c.budget) {
				t.Fatalf("error %+v does not name the budget of %s and its flag", body.Error, c.budget)
			}
		})
	}
}

// A job whose output is not known in advance is stopped by its hive when
// its narration passes the budget: it ends failed saying so, and the stream
// holds no more than the budget of its events.
func TestNarrationBudgetStopsJob(t *testing.T) {
	if testing.Short() {
		t.Skip("runs jobs until they pass a budget")
	}
	const budget = 1 << 20
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.JobMaxNarrationBytes = budget })
	hiveProcess(t, base, ns.ClientURL(), "h1", "--allow-run")
	line := strings.Repeat("y", 200)
	cases := []struct {
		name string
		req  api.JobRequest
	}{
		// A command printing forever: the hive must kill it.
		{"run", api.JobRequest{Operation: api.OpRun, Hive: "h1", TimeoutS: 120, Payload: &api.Run{Command: []string{"yes", line}}}},
		// Under the budget by payload alone, over it with each event's
		// envelope: only the hive can tell.
		{"hive_check", api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(3000), PayloadBytes: 300}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			job := submit(t, base, c.req)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			frames, done, _ := sse(t, ctx, base, job, 0, 0)
			end := checkComplete(t, frames, done)
			want := "narration budget of 1 MiB exceeded (--job-max-narration-bytes)"
			if end.State != api.StateFailed || end.Error != want {
				t.Fatalf("end %+v, want failed with %q", end, want)
			}
			stored := 0
			for _, f := range frames[:len(frames)-1] {
				stored += len(f.Data)
			}
			if stored > budget || stored < budget/2 {
				t.Fatalf("%d events stored %d bytes; want near the budget of %d and not past it", len(frames)-1, stored, budget)
			}
			var j api.Job
			waitFor(t, 10*time.Second, func() bool {
				do(t, "GET", base+"/v1/jobs/"+job, nil, &j)
				return j.State == api.StateFailed
			})
			if j.Error != want {
				t.Fatalf("job record error %q, want %q", j.Error, want)
			}
		})
	}
}

// The narration stream is bounded, and refuses new events when full
// rather than deleting other jobs' narration.
func TestNarrationStreamBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("boots queens")
	}
	cases := []struct {
		name     string
		flag     int64
		server   int64 // the NATS server's store bound, 0: its default
		upgrade  bool  // NARR exists as earlier versions made it
		min, max int64
	}{
		{"flag", 8 << 20, 0, false, 8 << 20, 8 << 20},
		{"default: a tenth of the disk, at most 50 GiB", 0, 0, false, 64 << 20, 50 << 30},
		{"default shrinks to what the server holds", 0, 300 << 20, false, 64 << 20, 300 << 20},
		{"an unbounded stream of an earlier version is bounded", 8 << 20, 0, true, 8 << 20, 8 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := mustNATSStore(t, c.server)
			nc, err := nats.Connect(ns.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if c.upgrade {
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NARR", Subjects: []string{"narr.>"}, Storage: jetstream.FileStorage, Discard: jetstream.DiscardOld, AllowDirect: true})
				if err != nil {
					t.Fatal(err)
				}
			}
			mustQueen(t, ns.ClientURL(), func(cfg *app.Config) { cfg.NarrationMaxBytes = c.flag })
			st, err := js.Stream(ctx, "NARR")
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			if cfg.MaxBytes < c.min || cfg.MaxBytes > c.max || cfg.Discard != jetstream.DiscardNew {
				t.Fatalf("NARR max bytes %d discard %v; want %d..%d, discard new", cfg.MaxBytes, cfg.Discard, c.min, c.max)
			}
		})
	}
}

// mustNATSStore is mustNATS with JetStream's store bounded to maxStore
// bytes (0: the server's default).
func mustNATSStore(t testing.TB, maxStore int64) *server.Server {
	t.Helper()
	return testkit.NATS(t, func(o *server.Options) { o.JetStreamMaxStore = maxStore })
}

// When jobs together fill the narration stream, the oldest finished jobs
// leave before their retention, so running and new jobs can still narrate
// and end: a full stream must not fail new jobs or leave them open for good.
func TestFullNarrationStreamMakesRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a narration stream")
	}
	const limit = 4 << 20
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) {
		c.NarrationMaxBytes, c.JobMaxNarrationBytes = limit, 512<<10
	})
	mustHive(t, base, ns.ClientURL(), "h1")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stored := func() uint64 {
		s, err := js.Stream(context.Background(), "NARR")
		if err != nil {
			return limit
		}
		return s.CachedInfo().State.Bytes
	}
	var ids []string
	for i := 0; i < 30; i++ {
		// About 200 KB each: the stream holds twenty. The queen keeps it
		// under 80% full, so every job finds room.
		waitFor(t, 10*time.Second, func() bool { return stored() < limit*8/10 })
		job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(50), PayloadBytes: 4000}})
		frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
		if err := complete(frames); err != nil || !done {
			t.Fatalf("job %d: %v, done %v", i, err, done)
		}
		if end := frames[len(frames)-1].event(t); end.State != api.StateDone {
			t.Fatalf("job %d ended %+v", i, end)
		}
		ids = append(ids, job)
	}
	if code := do(t, "GET", base+"/v1/jobs/"+ids[0], nil, nil); code != 404 {
		t.Fatalf("the oldest job should have made room: %d", code)
	}
	if code := do(t, "GET", base+"/v1/jobs/"+ids[len(ids)-1], nil, nil); code != 200 {
		t.Fatalf("the newest job: %d", code)
	}
}
