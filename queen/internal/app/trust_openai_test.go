package app_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// Another hive's tokens, result and end in an inference job reach neither
// the OpenAI-compatible answer nor the job's record.
func TestOpenAIAnswerIsTheHivesOwn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	downloadDemo(t, base, "h1")
	client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, 10*time.Second, func() bool {
		models, err := client.Models.List(ctx)
		return err == nil && len(models.Data) == 1
	})
	// The first request starts the worker.
	if _, err := client.Chat.Completions.New(ctx, ask(2)); err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	type answer struct {
		resp *openai.ChatCompletion
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := client.Chat.Completions.New(ctx, ask(60))
		got <- answer{resp, err}
	}()
	var infer api.Job
	waitFor(t, 10*time.Second, func() bool {
		var list api.JobList
		do(t, "GET", base+"/v1/jobs?operation=infer&state=running", nil, &list)
		if len(list.Jobs) == 0 {
			return false
		}
		infer = list.Jobs[0]
		return true
	})
	forge := func(subj string, e api.Event) {
		e.JobID, e.Attempt, e.Time, e.Actor, e.Level = infer.JobID, 1, time.Now(), "hive", api.LevelInfo
		data, _ := json.Marshal(e)
		if _, err := js.Publish(ctx, subj, data); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		forge(bus.Narr(infer.JobID, "h2", bus.KindEvent), api.Event{Seq: uint64(1000 + i), Action: "token", Message: " FORGED"})
	}
	forge(bus.Narr(infer.JobID, "h2", bus.KindData), api.Event{Seq: 1003, Action: "result", Data: map[string]any{"prompt_tokens": 1, "completion_tokens": 999}})
	forge(bus.NarrEndSubject(infer.JobID, "h2", 1), api.Event{Seq: 1004, Action: "end", State: api.StateFailed, Error: "forged"})

	a := <-got
	if a.err != nil {
		t.Fatalf("answer: %v", a.err)
	}
	if c := a.resp.Choices[0].Message.Content; strings.Contains(c, "FORGED") || a.resp.Usage.CompletionTokens == 999 {
		t.Fatalf("answer carries another hive's words: %q, usage %+v", c, a.resp.Usage)
	}
	var rec api.Job
	do(t, "GET", base+"/v1/jobs/"+infer.JobID, nil, &rec)
	if rec.State != api.StateDone {
		t.Fatalf("record %+v", rec)
	}
}
