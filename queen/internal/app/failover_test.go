package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// slowFile serves size bytes in 100 KB pieces, one every tick, so a
// download is still running when a test breaks its hive.
func slowFile(t *testing.T, size int, tick time.Duration) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		piece := []byte(strings.Repeat("m", 100_000))
		for sent := 0; sent < size; sent += len(piece) {
			if _, err := w.Write(piece[:min(len(piece), size-sent)]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(tick):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/model.gguf"
}

// A hive killed mid-download: the download is safe to repeat, so it is
// re-placed on the other hive with its attempt raised, and the stream reads
// as one story.
func TestHiveKilledMidDownloadReplaces(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	a := hiveProcess(t, base, ns.ClientURL(), "a")
	hiveProcess(t, base, ns.ClientURL(), "b")
	url := slowFile(t, 1_500_000, 100*time.Millisecond)
	job := submit(t, base, api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: url}})
	head, _, _ := sse(t, context.Background(), base, job, 0, 4)
	var rec api.Job
	do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
	if rec.Hive != "a" {
		t.Fatalf("placed on %s, want a", rec.Hive)
	}
	_ = a.Process.Kill()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rest, done, _ := sse(t, ctx, base, job, head[len(head)-1].ID, 0)
	all := append(head, rest...)
	end := checkComplete(t, all, done)
	if end.State != api.StateDone || end.Attempt != 2 {
		t.Fatalf("end %+v", end)
	}
	if !replacedIn(t, all, "a", "b") {
		t.Fatal("no replaced event naming a and b")
	}
	do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
	if rec.State != api.StateDone || rec.Hive != "b" || rec.Attempt != 2 {
		t.Fatalf("record %+v", rec)
	}
}

// A hive that freezes (a partition, a stalled machine) loses its job to
// another hive; when it wakes, what it still writes for the old attempt is
// fenced off, and its orphaned work is stopped.
func TestFrozenHiveIsFencedOff(t *testing.T) {
	if testing.Short() {
		t.Skip("stops processes")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	a := hiveProcess(t, base, ns.ClientURL(), "a")
	hiveProcess(t, base, ns.ClientURL(), "b")
	url := slowFile(t, 2_000_000, 100*time.Millisecond)
	job := submit(t, base, api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: url}})
	head, _, _ := sse(t, context.Background(), base, job, 0, 4)
	_ = a.Process.Signal(syscall.SIGSTOP)
	var rec api.Job
	waitFor(t, 15*time.Second, func() bool {
		do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
		return rec.Attempt == 2
	})
	_ = a.Process.Signal(syscall.SIGCONT)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rest, done, _ := sse(t, ctx, base, job, head[len(head)-1].ID, 0)
	all := append(head, rest...)
	end := checkComplete(t, all, done)
	if end.State != api.StateDone || end.Attempt != 2 {
		t.Fatalf("end %+v", end)
	}
	seenReplace := false
	for _, f := range all {
		e := f.event(t)
		if e.Action == "replaced" {
			seenReplace = true
		} else if seenReplace && e.Actor != "queen" && e.Attempt != 2 {
			t.Fatalf("attempt %d event after the re-placement: %s", e.Attempt, f.Data)
		}
	}
	// The woken hive is told to drop the job it still runs.
	waitFor(t, 15*time.Second, func() bool {
		var h api.Hive
		return do(t, "GET", base+"/v1/hives/a", nil, &h) == 200 && len(h.Running) == 0
	})
	// A full replay tells the same story.
	again, done, _ := sse(t, context.Background(), base, job, 0, 0)
	checkComplete(t, again, done)
	if len(again) != len(all) {
		t.Fatalf("replay has %d frames, live read %d", len(again), len(all))
	}
}

func replacedIn(t *testing.T, frames []frame, from, to string) bool {
	for _, f := range frames {
		e := f.event(t)
		if e.Action == "replaced" && strings.Contains(e.Message, "hive "+from) && strings.Contains(e.Message, "hive "+to) {
			return true
		}
	}
	return false
}

// A job for a hive that is not online waits as queued, saying why, and
// runs when the hive joins, even if the queen that took it is gone by then.
func TestQueuedUntilHiveJoins(t *testing.T) {
	ns := mustNATS(t)
	first, q1 := mustQueen(t, ns.ClientURL())
	job := submit(t, first, api.JobRequest{Operation: api.OpHiveCheck, Hive: "late", Payload: &api.HiveCheck{Events: intp(3)}})
	var rec api.Job
	do(t, "GET", first+"/v1/jobs/"+job, nil, &rec)
	if rec.State != api.StateQueued || rec.Hive != "" {
		t.Fatalf("record %+v", rec)
	}
	head, _, _ := sse(t, context.Background(), first, job, 0, 1)
	if e := head[0].event(t); !strings.Contains(e.Message, "waits in the queue at position 1") || !strings.Contains(e.Message, "late") {
		t.Fatalf("first event %q does not say why it waits", e.Message)
	}
	// A second job waits behind it, once this queen's listing (its view)
	// has the first.
	waitFor(t, 10*time.Second, func() bool {
		var list api.JobList
		do(t, "GET", first+"/v1/jobs?state=queued", nil, &list)
		return len(list.Jobs) == 1
	})
	next := submit(t, first, api.JobRequest{Operation: api.OpHiveCheck, Hive: "late", Payload: &api.HiveCheck{Events: intp(1)}})
	if head, _, _ := sse(t, context.Background(), first, next, 0, 1); !strings.Contains(head[0].event(t).Message, "at position 2") {
		t.Fatalf("second job's first event %q", head[0].event(t).Message)
	}
	_ = q1.Close()

	second, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, second, ns.ClientURL(), "late")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	frames, done, _ := sse(t, ctx, second, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateDone {
		t.Fatalf("end %+v", end)
	}
	if e := frames[1].event(t); e.Action != "placed" {
		t.Fatalf("second event %+v, want placed", e)
	}
}

// A frame the lost hive stores while the queen moves its job, after the
// queen read where the story stood and before its event that moves the job,
// is the old attempt's story for every reader or for none: a client that
// resumes anywhere reads the same story as one that reads it whole. The
// test stores that frame itself, as the lost hive, the moment it sees the
// queen ask for the job's newest message.
func TestLateFrameOfLostHiveSameForEveryReader(t *testing.T) {
	if testing.Short() {
		t.Skip("stops processes")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	hives := map[string]*exec.Cmd{"a": hiveProcess(t, base, ns.ClientURL(), "a"), "b": hiveProcess(t, base, ns.ClientURL(), "b")}
	// Long enough to be under way on the lost hive however loaded the
	// machine is.
	url := slowFile(t, 4_000_000, 100*time.Millisecond)
	job := submit(t, base, api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: url}})
	sse(t, context.Background(), base, job, 0, 4)
	var rec api.Job
	do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
	lost := rec.Hive
	_ = hives[lost].Process.Signal(syscall.SIGSTOP)
	defer func() { _ = hives[lost].Process.Kill() }()

	nc := testkit.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newest, err := js.Stream(ctx, bus.NarrStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := newest.GetLastMsgForSubject(ctx, bus.NarrJob(job))
	if err != nil {
		t.Fatal(err)
	}
	var last api.Event
	if err := json.Unmarshal(m.Data, &last); err != nil {
		t.Fatal(err)
	}
	e := api.Event{JobID: job, Seq: last.Seq + 1, Attempt: 1, Hive: lost, Actor: "hive", Action: "progress", Message: "stored while the job moved", Time: time.Now().UTC()}
	body, _ := json.Marshal(e)
	late := bus.Meta{Job: job, Writer: lost, Kind: bus.KindEvent, Seq: e.Seq, Attempt: 1}.Msg(body)
	stored := make(chan uint64, 1)
	var once sync.Once
	sub, err := nc.Subscribe("$JS.API.STREAM.MSG.GET."+bus.NarrStream, func(req *nats.Msg) {
		var get struct {
			LastFor string `json:"last_by_subj"`
		}
		if json.Unmarshal(req.Data, &get) != nil || get.LastFor != bus.NarrJob(job) {
			return
		}
		once.Do(func() {
			go func() {
				ack, err := js.PublishMsg(ctx, late)
				if err != nil {
					t.Errorf("store the late frame: %v", err)
					close(stored)
					return
				}
				stored <- ack.Sequence
			}()
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var lateSeq uint64
	select {
	case seq, ok := <-stored:
		if !ok {
			return
		}
		lateSeq = seq
	case <-ctx.Done():
		t.Fatal("the queen never asked where the job's story stands")
	}
	waitFor(t, 15*time.Second, func() bool {
		do(t, "GET", base+"/v1/jobs/"+job, nil, &rec)
		return rec.Attempt == 2 || api.Terminal(rec.State)
	})
	if rec.Attempt != 2 {
		t.Fatalf("the job was not re-placed: %+v", rec)
	}
	all, done, _ := sse(t, ctx, base, job, 0, 0)
	checkComplete(t, all, done)
	moved := uint64(0)
	for _, f := range all {
		if f.event(t).Action == "replaced" {
			moved = f.ID
			break
		}
	}
	if moved == 0 {
		t.Fatalf("no replaced event in the story of the job re-placed: %+v", rec)
	}
	if lateSeq > moved {
		t.Logf("the late frame was stored after the job moved (%d > %d): it is no one's story, and this run shows nothing more", lateSeq, moved)
	}
	for i, f := range all {
		if f.ID >= moved {
			break
		}
		rest, done, _ := sse(t, ctx, base, job, f.ID, 0)
		if !done || len(rest) != len(all)-i-1 {
			t.Fatalf("a client resuming after frame %d (id %d) read %d frames; the whole story has %d after it", i, f.ID, len(rest), len(all)-i-1)
		}
		for k, r := range rest {
			if r.ID != all[i+1+k].ID {
				t.Fatalf("a client resuming after id %d read id %d where the whole story has %d", f.ID, r.ID, all[i+1+k].ID)
			}
		}
	}
}

// A job its hive finished between two heartbeats is still in the last
// one's list of running jobs; that is no orphan, and the queen must not
// ask the hive to stop it.
func TestFinishedJobIsNoOrphan(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.HiveTTL = 6 * time.Second })
	mustHive(t, base, ns.ClientURL(), "h1", allowRun)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	asks, err := nc.SubscribeSync(bus.Cancel("h1"))
	if err != nil {
		t.Fatal(err)
	}
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "3.5"}}})
	running := func() []string {
		var h api.Hive
		if do(t, "GET", base+"/v1/hives/h1", nil, &h) != 200 {
			t.Fatal("hive h1 is not listed")
		}
		return h.Running
	}
	waitFor(t, 10*time.Second, func() bool { return slices.Contains(running(), job) })
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateDone {
		t.Fatalf("end %+v", end)
	}
	// The hive beats every 2 s while it has work, the reaper passes every
	// second: wait for the beat that no longer lists the job.
	waitFor(t, 10*time.Second, func() bool { return !slices.Contains(running(), job) })
	if m, err := asks.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("the queen asked the hive to stop a job it had finished: %s", m.Data)
	}
}
