package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/queen/internal/natsauth"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// authCluster is a queen with per-hive NATS identities for gpuA and gpuB,
// and gpuA's hive running in-process with its own identity.
type authCluster struct {
	base, natsURL string
	creds         natsauth.File
}

func mustAuthCluster(t *testing.T) authCluster {
	t.Helper()
	authFile := t.TempDir() + "/nats-auth.json"
	if err := app.Run(context.Background(), []string{"nats-config", "--hives", "gpuA,gpuB", "--out", authFile}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := natsauth.Load(authFile)
	if err != nil {
		t.Fatal(err)
	}
	base, q := mustQueen(t, "", func(c *app.Config) { c.NATSAuth, c.NATSListen = authFile, "127.0.0.1:0" })
	c := authCluster{base: base, natsURL: q.NATSURL(), creds: f}
	nc := c.connect(t, "gpuA")
	cfg := agent.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.Slots, cfg.AllowRun = "gpuA", t.TempDir(), 2, true
	a, err := agent.New(cfg, nc, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitHive(t, base, "gpuA")
	return c
}

// connect opens a NATS connection with hive's real credentials, as a
// hostile process on that hive's machine would.
func (c authCluster) connect(t *testing.T, hive string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(c.natsURL, nats.UserInfo(hive, c.creds.Hives[hive]), nats.CustomInboxPrefix(bus.Inbox(hive)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// publish stores e on subj twice: with the headers a writer sets, claiming
// what e says, and without headers, as frames were stored before writers
// set them. Readers must judge both alike.
func publish(t *testing.T, js jetstream.JetStream, subj string, e any) {
	t.Helper()
	data, _ := json.Marshal(e)
	var says struct {
		Seq     uint64
		Attempt int
	}
	_ = json.Unmarshal(data, &says)
	job, writer, kind, _ := bus.ParseNarr(subj)
	m := bus.Meta{Job: job, Writer: writer, Kind: kind, Seq: says.Seq, Attempt: says.Attempt}
	if kind == bus.KindEnd {
		m.Attempt = bus.EndAttempt(subj)
	}
	for _, msg := range []*nats.Msg{m.Msg(data), {Subject: subj, Data: data}} {
		if _, err := js.PublishMsg(context.Background(), msg); err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
	}
}

// publishClaiming stores e on subj with headers that claim what they
// please.
func publishClaiming(t *testing.T, js jetstream.JetStream, subj string, e any, h nats.Header) {
	t.Helper()
	data, _ := json.Marshal(e)
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: subj, Data: data, Header: h}); err != nil {
		t.Fatalf("publish %s: %v", subj, err)
	}
}

// metric reads one sample of the queen's metrics, 0 if absent.
func metric(t *testing.T, base, sample string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\d+)`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// A hive speaks only for its own jobs: hive B's frames in hive A's job, and
// hive A's own frames that are not valid events, reach no reader; the job's
// record and story are A's.
func TestHiveSpeaksOnlyForItsJobs(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a queen and a hive")
	}
	c := mustAuthCluster(t)
	jsB, _ := jetstream.New(c.connect(t, "gpuB"))
	jsA, _ := jetstream.New(c.connect(t, "gpuA"))

	job := submit(t, c.base, api.JobRequest{Operation: api.OpRun, Hive: "gpuA", Payload: &api.Run{Command: []string{"sh", "-c", "sleep 1.5; echo real"}}})
	type result struct {
		frames []frame
		done   bool
	}
	live := make(chan result, 1)
	go func() {
		frames, done, _, _ := readSSE(context.Background(), c.base, job, 0, 0, 0)
		live <- result{frames, done}
	}()
	waitFor(t, 5*time.Second, func() bool {
		var j api.Job
		do(t, "GET", c.base+"/v1/jobs/"+job, nil, &j)
		return j.State == api.StateRunning && metric(t, c.base, "rbee_sse_clients") == 1
	})

	forged := api.Event{JobID: job, Seq: 3, Attempt: 1, Time: time.Now(), Actor: "hive", Action: "forged", Level: api.LevelInfo, Message: "forged"}
	publish(t, jsB, bus.Narr(job, "gpuB", bus.KindEvent), forged)
	publish(t, jsB, bus.Narr(job, "gpuB", bus.KindData), forged)
	forgedEnd := forged
	forgedEnd.State = api.StateDone
	publish(t, jsB, bus.NarrEndSubject(job, "gpuB", 1), forgedEnd)
	huge := forged
	huge.Seq = 1 << 62
	publish(t, jsA, bus.Narr(job, "gpuA", bus.KindEvent), huge)
	notEnd := forged
	notEnd.Seq, notEnd.State = 4, api.StateRunning
	publish(t, jsA, bus.NarrEndSubject(job, "gpuA", 1), notEnd)
	publish(t, jsA, bus.Narr(job, "gpuA", bus.KindEvent), map[string]any{"job_id": "someone-else", "seq": 5, "action": "forged"})
	// Headers that say another thing than the subject or the body.
	claims := func(writer string, seq uint64) nats.Header {
		return bus.Meta{Job: job, Writer: writer, Kind: bus.KindEvent, Seq: seq, Attempt: 1}.Msg(nil).Header
	}
	publishClaiming(t, jsB, bus.Narr(job, "gpuB", bus.KindEvent), forged, claims("gpuA", 3))
	publishClaiming(t, jsA, bus.Narr(job, "gpuA", bus.KindEvent), forged, claims("gpuA", 1000))

	time.Sleep(300 * time.Millisecond)
	var j api.Job
	do(t, "GET", c.base+"/v1/jobs/"+job, nil, &j)
	if j.State != api.StateRunning {
		t.Fatalf("after forged ends the job is %s, want running", j.State)
	}

	check := func(name string, frames []frame, done bool) {
		t.Helper()
		for _, f := range frames {
			if strings.Contains(f.Data, "forged") {
				t.Errorf("%s: forged frame relayed: %s", name, f.Data)
			}
		}
		end := checkComplete(t, frames, done)
		if end.State != api.StateDone || end.Actor != "hive" {
			t.Errorf("%s: end %+v", name, end)
		}
		var out bool
		for _, f := range frames {
			out = out || strings.Contains(f.Data, "real")
		}
		if !out {
			t.Errorf("%s: the job's own output is missing", name)
		}
	}
	var r result
	select {
	case r = <-live:
	case <-time.After(20 * time.Second):
		t.Fatal("live stream did not end")
	}
	check("live", r.frames, r.done)
	replay, done, _ := sse(t, context.Background(), c.base, job, 0, 0)
	check("replay", replay, done)
	resumed, done, _ := sse(t, context.Background(), c.base, job, replay[0].ID, 0)
	check("resume", append([]frame{replay[0]}, resumed...), done)

	do(t, "GET", c.base+"/v1/jobs/"+job, nil, &j)
	if j.State != api.StateDone || j.Hive != "gpuA" {
		t.Fatalf("record %+v", j)
	}
	for _, reason := range []string{"writer", "invalid", "not_terminal", "sequence"} {
		if metric(t, c.base, `rbee_narration_rejected_total{reason="`+reason+`"}`) == 0 {
			t.Errorf("rbee_narration_rejected_total{reason=%q} is 0", reason)
		}
	}
}

// A hive's NATS identity cannot list other jobs' subjects, read other
// jobs' narration live or write live frames itself, nor make a work-queue
// consumer of its own choosing, and its heartbeat speaks for its own key
// only.
func TestHiveIdentityLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a queen and a hive")
	}
	c := mustAuthCluster(t)
	job := submit(t, c.base, api.JobRequest{Operation: api.OpRun, Hive: "gpuA", Payload: &api.Run{Command: []string{"echo", "secret-job"}}})
	frames, done, _ := sse(t, context.Background(), c.base, job, 0, 0)
	checkComplete(t, frames, done)

	ncB := c.connect(t, "gpuB")
	jsB, _ := jetstream.New(ncB)
	t.Run("stream info with subjects", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, _ := json.Marshal(map[string]any{"subjects_filter": bus.NarrAll})
		reply, err := ncB.RequestWithContext(ctx, "$JS.API.STREAM.INFO."+bus.NarrStream, req)
		if err == nil && bytes.Contains(reply.Data, []byte(job)) {
			t.Fatalf("hive B listed job subjects: %s", reply.Data)
		}
		if err == nil {
			t.Fatalf("stream info answered: %s", reply.Data)
		}
	})
	t.Run("consumer of its own choosing", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := jsB.CreateOrUpdateConsumer(ctx, bus.DispatchStream, jetstream.ConsumerConfig{
			Durable: bus.DispatchConsumer("gpuB"), FilterSubject: bus.Dispatch("gpuC"), AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err == nil {
			t.Fatal("hive B created its own dispatch consumer")
		}
	})
	t.Run("other jobs' live narration", func(t *testing.T) {
		got := make(chan *nats.Msg, 64)
		if _, err := ncB.ChanSubscribe(bus.LiveAll, got); err != nil {
			t.Fatal(err)
		}
		_ = ncB.Flush()
		other := submit(t, c.base, api.JobRequest{Operation: api.OpRun, Hive: "gpuA", Payload: &api.Run{Command: []string{"echo", "secret-live"}}})
		frames, done, _ := sse(t, context.Background(), c.base, other, 0, 0)
		checkComplete(t, frames, done)
		select {
		case m := <-got:
			t.Fatalf("hive B read %s live: %s", m.Subject, m.Data)
		case <-time.After(300 * time.Millisecond):
		}
	})
	t.Run("a live frame of its own making", func(t *testing.T) {
		queen, err := nats.Connect(c.natsURL, nats.UserInfo(natsauth.QueenUser, c.creds.QueenPassword))
		if err != nil {
			t.Fatal(err)
		}
		defer queen.Close()
		got := make(chan *nats.Msg, 64)
		if _, err := queen.ChanSubscribe(bus.LiveAll, got); err != nil {
			t.Fatal(err)
		}
		_ = queen.Flush()
		forged := &nats.Msg{Subject: "live." + bus.Narr(job, "gpuB", bus.KindEvent), Header: nats.Header{"Nats-Sequence": []string{"999999"}},
			Data: []byte(`{"job_id":"` + job + `","seq":99,"action":"forged"}`)}
		if err := ncB.PublishMsg(forged); err != nil {
			t.Fatal(err)
		}
		_ = ncB.Flush()
		select {
		case m := <-got:
			t.Fatalf("hive B published %s past the stream: %s", m.Subject, m.Data)
		case <-time.After(300 * time.Millisecond):
		}
	})
	t.Run("heartbeat under another id", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, err := jsB.KeyValue(ctx, bus.HivesBucket)
		if err != nil {
			t.Fatal(err)
		}
		beat, _ := json.Marshal(api.Hive{ID: "gpuA", Slots: 8, SlotsFree: 8, HeartbeatAt: time.Now().UTC(), AllowRun: true})
		if _, err := kv.Put(ctx, "gpuB", beat); err != nil {
			t.Fatal(err)
		}
		waitHive(t, c.base, "gpuB")
		var list api.HiveList
		do(t, "GET", c.base+"/v1/hives", nil, &list)
		var ids []string
		for _, h := range list.Hives {
			ids = append(ids, h.ID)
		}
		if strings.Join(ids, ",") != "gpuA,gpuB" {
			t.Fatalf("hives %v, want gpuA,gpuB", ids)
		}
	})
}

// The in-process hive gets its work queue from the queen like any other.
func TestLocalHiveGetsItsWorkQueue(t *testing.T) {
	base, _ := mustQueen(t, "", func(c *app.Config) { c.LocalHive = true })
	waitHive(t, base, "local")
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "local", Payload: &api.HiveCheck{Events: intp(3)}})
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateDone {
		t.Fatalf("end %+v", end)
	}
}
