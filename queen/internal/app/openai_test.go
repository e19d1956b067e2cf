package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/cli"
	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// inferCluster is a queen with two hives that both hold model "demo".
func inferCluster(t *testing.T) (base string, client openai.Client) {
	t.Helper()
	ns := mustNATS(t)
	base, _ = mustQueen(t, ns.ClientURL())
	for _, h := range []string{"h1", "h2"} {
		mustHive(t, base, ns.ClientURL(), h, func(c *agent.Config) { c.Slots = 3 })
		downloadDemo(t, base, h)
	}
	return base, openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

func ask(max int64) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:     "demo",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tell me about bees")},
		MaxTokens: openai.Int(max),
	}
}

// The official OpenAI SDK against the queen: the model list, answers
// streaming and not, usage, and a worker started on demand.
func TestOpenAISDK(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	base, client := inferCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	models, err := client.Models.List(ctx)
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "demo" {
		t.Fatalf("models: %+v %v", models, err)
	}
	// No worker runs yet: the first request starts one.
	resp, err := client.Chat.Completions.New(ctx, ask(6))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content == "" || resp.Usage.CompletionTokens != 6 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+6 {
		t.Fatalf("answer: %+v", resp)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "demo", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stream please")},
		MaxTokens: openai.Int(5), StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks < 5 || acc.Choices[0].Message.Content == "" || acc.Usage.CompletionTokens != 5 {
		t.Fatalf("stream: %d chunks, %+v", chunks, acc.ChatCompletion)
	}

	comp, err := client.Completions.New(ctx, openai.CompletionNewParams{
		Model: "demo", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon")}, MaxTokens: openai.Int(4),
	})
	if err != nil || comp.Choices[0].Text == "" || comp.Usage.CompletionTokens != 4 {
		t.Fatalf("completion: %+v %v", comp, err)
	}

	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "no-such-model",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
		t.Fatalf("unknown model: %v", err)
	}

	// Every request was a job, visible and counted.
	var list api.JobList
	do(t, "GET", base+"/v1/jobs?operation=infer", nil, &list)
	if len(list.Jobs) != 3 {
		t.Fatalf("%d infer jobs, want 3", len(list.Jobs))
	}
}

// A burst larger than the workers' capacity queues and completes, spread
// over workers on both hives.
func TestInferenceBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	base, client := inferCluster(t)
	for _, h := range []string{"h1", "h2"} {
		job := submit(t, base, api.JobRequest{Operation: api.OpWorkerSpawn, Hive: h, Payload: &api.WorkerSpawn{ModelID: "demo", Backend: "reference"}})
		frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
		if end := checkComplete(t, frames, done); end.State != api.StateDone {
			t.Fatalf("spawn on %s: %+v", h, end)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Let both heartbeats show their worker.
	waitFor(t, 10*time.Second, func() bool {
		var hl api.HiveList
		do(t, "GET", base+"/v1/hives", nil, &hl)
		ready := 0
		for _, h := range hl.Hives {
			for _, w := range h.Workers {
				if w.State == api.WorkerReady {
					ready++
				}
			}
		}
		return ready == 2
	})
	const n = 16 // hives run 3 jobs each: most of the burst waits
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Chat.Completions.New(ctx, ask(8))
			if err == nil && resp.Usage.CompletionTokens != 8 {
				err = errors.New("short answer")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var list api.JobList
	do(t, "GET", base+"/v1/jobs?operation=infer", nil, &list)
	hives := map[string]int{}
	for _, j := range list.Jobs {
		hives[j.Hive]++
	}
	if len(list.Jobs) != n || hives["h1"] == 0 || hives["h2"] == 0 {
		t.Fatalf("%d jobs over hives %v", len(list.Jobs), hives)
	}
}

// A client that disconnects mid-stream cancels its job, and the worker
// stops generating.
func TestInferenceDisconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	base, client := inferCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	stream := client.Chat.Completions.NewStreaming(ctx, ask(2000))
	for i := 0; i < 3 && stream.Next(); i++ {
	}
	cancel()
	_ = stream.Close()

	var list api.JobList
	waitFor(t, 5*time.Second, func() bool {
		do(t, "GET", base+"/v1/jobs?operation=infer", nil, &list)
		return len(list.Jobs) == 1 && list.Jobs[0].State == api.StateCancelled
	})
	var hive api.Hive
	do(t, "GET", base+"/v1/hives/"+list.Jobs[0].Hive, nil, &hive)
	if len(hive.Workers) != 1 {
		t.Fatalf("workers: %+v", hive.Workers)
	}
	waitFor(t, 5*time.Second, func() bool {
		resp, err := http.Get(hive.Workers[0].URL + "/stats")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct{ Cancelled int }
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st.Cancelled == 1
	})
}

// A model no hive holds is fetched when the request says from where: the
// queen downloads it onto a hive, starts a worker and answers.
func TestInferDownloadsOnRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("fresh model bytes ", 500)))
	}))
	t.Cleanup(files.Close)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	params := openai.ChatCompletionNewParams{Model: "fresh", MaxTokens: openai.Int(3),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	_, err := client.Chat.Completions.New(ctx, params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(apiErr.Message, "download") {
		t.Fatalf("unknown model without a source: %v", err)
	}
	_, err = client.Chat.Completions.New(ctx, params, option.WithJSONSet("download", "ftp://nowhere/x.gguf"))
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
		t.Fatalf("bad source: %v", err)
	}

	resp, err := client.Chat.Completions.New(ctx, params, option.WithJSONSet("download", files.URL+"/fresh.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content == "" || resp.Usage.CompletionTokens != 3 {
		t.Fatalf("answer: %+v", resp)
	}
	var list api.JobList
	do(t, "GET", base+"/v1/jobs?operation=model_download", nil, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].State != api.StateDone || list.Jobs[0].Hive != "h1" {
		t.Fatalf("download jobs: %+v", list.Jobs)
	}
	// Now it is held and served: a plain request works.
	if _, err := client.Chat.Completions.New(ctx, params); err != nil {
		t.Fatal(err)
	}
}

// rbee infer prints the answer as it streams, or the whole result as JSON,
// through the same OpenAI API; every answer is a job.
func TestRbeeInfer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	base, _ := inferCluster(t)
	rbee := func(stdin string, args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cli.Run(context.Background(), args, func(k string) string { return map[string]string{"RBEE_QUEEN": base}[k] },
			strings.NewReader(stdin), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, errOut := rbee("", "infer", "--model", "demo", "--max-tokens", "4", "tell", "me", "about", "bees")
	if code != 0 || strings.TrimSpace(out) == "" || !strings.HasSuffix(out, "\n") {
		t.Fatalf("infer: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = rbee("a prompt from stdin", "--json", "infer", "--model", "demo", "--max-tokens", "3", "-")
	var res client.ChatResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Usage.CompletionTokens != 3 || res.Content == "" {
		t.Fatalf("infer --json: exit %d, %q %q", code, out, errOut)
	}
	var rec api.Job
	if do(t, "GET", base+"/v1/jobs/"+res.JobID, nil, &rec) != 200 || rec.Operation != api.OpInfer || rec.State != api.StateDone {
		t.Fatalf("job of the answer: %+v", rec)
	}
	if code, _, errOut := rbee("", "infer", "--model", "nope", "hi"); code != 1 || !strings.Contains(errOut, "not served or held") {
		t.Fatalf("unknown model: exit %d, %q", code, errOut)
	}
	if code, _, _ := rbee("", "infer", "hi"); code != 2 {
		t.Fatalf("no --model: exit %d, want 2", code)
	}
}
