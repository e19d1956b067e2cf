package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/hive/agent"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// mustHive starts an embedded JetStream server, creates the streams and
// bucket the queen would (as queen/internal/store does), and runs a hive
// on it. It returns a JetStream handle for publishing jobs and reading
// their narration.
func mustHive(t testing.TB, id string) jetstream.JetStream {
	t.Helper()
	js := testkit.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: bus.NarrStream, Subjects: []string{bus.NarrAll}, Storage: jetstream.MemoryStorage, AllowDirect: true},
		{Name: bus.DispatchStream, Subjects: []string{bus.DispatchAll}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage, Duplicates: time.Minute},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.HivesBucket, TTL: 15 * time.Second, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}

	cfg := agent.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.Slots = id, t.TempDir(), 2
	// Queens make each hive's work-queue consumer; here the test is the queen.
	if _, err := js.CreateOrUpdateConsumer(ctx, bus.DispatchStream, jetstream.ConsumerConfig{
		Durable: bus.DispatchConsumer(id), FilterSubject: bus.Dispatch(id), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: cfg.AckWait, MaxAckPending: cfg.Slots,
	}); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, js.Conn(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("hive run: %v", err)
		}
	})
	return js
}

// runJob dispatches one job to the hive and returns its narration up to and
// including the end event.
func runJob(t testing.TB, js jetstream.JetStream, hive, jobID string, req api.JobRequest) []api.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := req.Validate(); err != nil {
		t.Fatalf("request: %v", err)
	}
	d, _ := json.Marshal(api.Dispatch{JobID: jobID, Attempt: 1, NextSeq: 1, DeadlineAt: time.Now().Add(time.Minute), Request: req})
	if _, err := js.Publish(ctx, bus.Dispatch(hive), d, jetstream.WithMsgID(jobID)); err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, bus.NarrStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.NarrJob(jobID)}})
	if err != nil {
		t.Fatal(err)
	}
	var events []api.Event
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("job %s: %v after %+v", jobID, err, events)
		}
		var e api.Event
		if err := json.Unmarshal(msg.Data(), &e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
		if bus.EndAttempt(msg.Subject()) > 0 {
			return events
		}
	}
}

// dataOf decodes the one data event's payload of an action into v.
func dataOf(t testing.TB, events []api.Event, action string, v any) {
	t.Helper()
	for _, e := range events {
		if e.Action == action && e.Data != nil {
			raw, _ := json.Marshal(e.Data)
			if err := json.Unmarshal(raw, v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no %s data event in %+v", action, events)
}

func TestModelOperations(t *testing.T) {
	content := []byte(strings.Repeat("not a gguf model, just bytes. ", 20000))
	sum := sha256.Sum256(content)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), strings.NewReader(string(content)))
	}))
	t.Cleanup(srv.Close)
	js := mustHive(t, "h1")

	events := runJob(t, js, "h1", "dl1", api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: srv.URL + "/files/tiny.bin", SHA256: hex.EncodeToString(sum[:])}})
	end := events[len(events)-1]
	if end.State != api.StateDone {
		t.Fatalf("download ended %s: %s\n%+v", end.State, end.Error, events)
	}
	var last *api.Progress
	for _, e := range events {
		if e.Action == "progress" {
			if e.Actor != "download" || e.Progress == nil || e.Progress.Unit != "bytes" || !strings.Contains(e.Message, " of ") {
				t.Fatalf("progress event %+v", e)
			}
			last = e.Progress
		}
	}
	if last == nil || last.Done != int64(len(content)) || last.Total != int64(len(content)) {
		t.Fatalf("last progress %+v, want %d bytes done", last, len(content))
	}
	var m api.Model
	dataOf(t, events, "model_download", &m)
	if m.ModelID != "tiny" || m.Hive != "h1" || m.SHA256 != hex.EncodeToString(sum[:]) || m.SizeBytes != int64(len(content)) {
		t.Fatalf("downloaded model %+v", m)
	}

	events = runJob(t, js, "h1", "ls1", api.JobRequest{Operation: api.OpModelList})
	var list []api.Model
	dataOf(t, events, "model_list", &list)
	if len(list) != 1 || list[0].ModelID != "tiny" || list[0].Hive != "h1" {
		t.Fatalf("model list %+v", list)
	}

	events = runJob(t, js, "h1", "get1", api.JobRequest{Operation: api.OpModelGet, Payload: &api.ModelRef{ModelID: "nope"}})
	if end := events[len(events)-1]; end.State != api.StateFailed || end.Error != "model nope not found on hive h1" {
		t.Fatalf("get of an unknown model ended %+v", end)
	}

	events = runJob(t, js, "h1", "del1", api.JobRequest{Operation: api.OpModelDelete, Payload: &api.ModelRef{ModelID: "tiny"}})
	if end := events[len(events)-1]; end.State != api.StateDone {
		t.Fatalf("delete ended %+v", end)
	}
	events = runJob(t, js, "h1", "get2", api.JobRequest{Operation: api.OpModelGet, Payload: &api.ModelRef{ModelID: "tiny"}})
	if end := events[len(events)-1]; end.State != api.StateFailed || !strings.Contains(end.Error, "not found on hive h1") {
		t.Fatalf("get after delete ended %+v", end)
	}

	events = runJob(t, js, "h1", "dl2", api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: srv.URL + "/"}})
	if end := events[len(events)-1]; end.State != api.StateFailed || !strings.Contains(end.Error, "give model_id") {
		t.Fatalf("download without a file name ended %+v", end)
	}
}
