package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// What the test worker answers to chat requests: a tool call with fields
// only real servers send, spaced oddly so that any re-encoding shows.
const (
	cannedChat = `{"id":"chatcmpl-w1", "object":"chat.completion","created":1,"model": "demo","system_fingerprint":"b4000",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":null,"reasoning_content":"think",` +
		`"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},` +
		`"logprobs":{"content":[{"token":"a","logprob":-0.5,"bytes":[97],"top_logprobs":[]}]},"finish_reason":"tool_calls"}],` +
		`"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12},"timings":{"predicted_n":7,"predicted_ms":1.5}}`
	chunkHead = `{"id":"chatcmpl-w2","object":"chat.completion.chunk","created":1,"model":"demo",`
)

var cannedChunks = []string{
	chunkHead + `"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_2","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}`,
	chunkHead + `"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}`,
	chunkHead + `"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]},"finish_reason":null}]}`,
	// An event whose data is two lines, which SSE readers join.
	chunkHead + "\n" + `"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"timings":{"predicted_n":3}}`,
	chunkHead + `"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`,
}

// The worker's error for completions, which the client must get as it is.
const cannedError = `{"error":{"code":400,"message":"grammar does not parse","type":"invalid_request_error"}}`

// passthroughCluster is a queen with alias gpt-4o-mini=demo and a hive
// whose reference worker records what it receives and answers chat and
// completions from the canned answers above.
func passthroughCluster(t *testing.T) (base, record, source string) {
	t.Helper()
	return cannedCluster(t, `{"/v1/chat/completions": {"body": `+cannedChat+`, "chunks": [`+strings.Join(cannedChunks, ",")+`]},`+
		`"/v1/completions": {"status": 400, "body": `+cannedError+`}}`)
}

// cannedCluster is a queen with alias gpt-4o-mini=demo and a hive whose
// reference worker records what it receives and gives the canned answers
// (refworker.Canned, by path).
func cannedCluster(t *testing.T, canned string) (base, record, source string) {
	t.Helper()
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("demo model bytes ", 1000)))
	}))
	t.Cleanup(files.Close)
	dir := t.TempDir()
	record = filepath.Join(dir, "record.jsonl")
	cannedFile := filepath.Join(dir, "canned.json")
	catalog := fmt.Sprintf(`{"backends": [{"name": "reference", "kind": "reference", "command": ["rbee-worker", "--host", "{host}", "--port", "{port}",
		"--model", "{model}", "--model-id", "{model_id}", "--ctx-size", "{ctx}", "--token-rate", "0", "--record", %q, "--canned", %q]}]}`, record, cannedFile)
	catalogFile := filepath.Join(dir, "hive.json")
	for name, data := range map[string]string{cannedFile: canned, catalogFile: catalog} {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ns := mustNATS(t)
	base, _ = mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.Infer.Aliases = map[string]string{"gpt-4o-mini": "demo"} })
	mustHive(t, base, ns.ClientURL(), "h1", func(c *agent.Config) { c.ConfigFile = catalogFile })
	job := submit(t, base, api.JobRequest{Operation: api.OpModelDownload, Hive: "h1", Payload: &api.ModelDownload{Source: files.URL + "/demo.gguf"}})
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateDone {
		t.Fatalf("download: %+v", end)
	}
	// Let the heartbeat show the model.
	waitFor(t, 10*time.Second, func() bool {
		var ml struct{ Data []any }
		do(t, "GET", base+"/v1/models", nil, &ml)
		return len(ml.Data) > 0
	})
	return base, record, files.URL + "/demo.gguf"
}

// lastRecorded is the body of the last request the worker received.
func lastRecorded(t *testing.T, record, path string) map[string]any {
	t.Helper()
	var last map[string]any
	if err := json.Unmarshal([]byte(lastRecordedRaw(t, record, path)), &last); err != nil {
		t.Fatal(err)
	}
	return last
}

// lastRecordedRaw is that body's bytes.
func lastRecordedRaw(t *testing.T, record, path string) string {
	t.Helper()
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	last, seen := "", false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var r struct{ Path, Body string }
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Path == path {
			last, seen = r.Body, true
		}
	}
	if !seen {
		t.Fatalf("the worker received nothing on %s", path)
	}
	return last
}

// The client's request reaches the worker as sent, but for the model's
// name, the download field and usage asked for; the worker's answer, tool
// calls and vendor fields included, reaches the client byte for byte but
// for the model's name, through the official SDK and raw HTTP alike.
func TestOpenAIPassThrough(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	base, record, source := passthroughCluster(t)
	var sent map[string]any
	capture := option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		if r.Body != nil {
			body, _ := io.ReadAll(r.Body)
			sent = nil
			_ = json.Unmarshal(body, &sent)
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		return next(r)
	})
	client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0), capture)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	models, err := client.Models.List(ctx)
	if err != nil || len(models.Data) != 2 || models.Data[0].ID != "demo" || models.Data[1].ID != "gpt-4o-mini" {
		t.Fatalf("models: %+v %v", models, err)
	}
	if m, err := client.Models.Get(ctx, "gpt-4o-mini"); err != nil || m.ID != "gpt-4o-mini" {
		t.Fatalf("alias: %+v %v", m, err)
	}

	params := openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("you answer with tools"),
			openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
				openai.TextContentPart("what is the weather here?"),
				openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "data:image/png;base64,iVBORw0KGgo="}),
			}),
		},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
			Name: "get_weather", Description: openai.String("the weather in a city"),
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
		})},
		ToolChoice:       openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("auto")},
		ResponseFormat:   openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}},
		Stop:             openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"\n\n", "END"}},
		Seed:             openai.Int(42),
		Temperature:      openai.Float(0.7),
		TopP:             openai.Float(0.9),
		FrequencyPenalty: openai.Float(0.5),
		PresencePenalty:  openai.Float(-0.5),
		Logprobs:         openai.Bool(true),
		TopLogprobs:      openai.Int(3),
		LogitBias:        map[string]int64{"15043": -100},
		User:             openai.String("user-7"),
		N:                openai.Int(2),
		MaxTokens:        openai.Int(64),
	}
	vendor := []option.RequestOption{
		option.WithJSONSet("min_p", 0.05), option.WithJSONSet("top_k", 40), option.WithJSONSet("cache_prompt", true),
		option.WithJSONSet("grammar", `root ::= "yes" | "no"`), option.WithJSONSet("reasoning_format", "deepseek"),
		option.WithJSONSet("download", source),
	}
	resp, err := client.Chat.Completions.New(ctx, params, vendor...)
	if err != nil {
		t.Fatal(err)
	}
	call := resp.Choices[0].Message.ToolCalls
	if len(call) != 1 || call[0].Function.Name != "get_weather" || call[0].Function.Arguments != `{"city":"Paris"}` ||
		resp.SystemFingerprint != "b4000" || resp.Model != "gpt-4o-mini" || resp.Choices[0].FinishReason != "tool_calls" ||
		resp.Choices[0].Logprobs.Content[0].Logprob != -0.5 || resp.Usage.TotalTokens != 12 {
		t.Fatalf("answer: %s", resp.RawJSON())
	}
	var extra struct {
		Timings struct {
			PredictedN int `json:"predicted_n"`
		} `json:"timings"`
		Choices []struct {
			Message struct {
				Reasoning string `json:"reasoning_content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(resp.RawJSON()), &extra); err != nil || extra.Timings.PredictedN != 7 || extra.Choices[0].Message.Reasoning != "think" {
		t.Fatalf("vendor fields: %+v %v", extra, err)
	}
	got := lastRecorded(t, record, "/v1/chat/completions")
	if got["model"] != "demo" {
		t.Fatalf("the worker was asked for %v", got["model"])
	}
	want := sent
	delete(want, "download")
	want["model"] = "demo"
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the worker received\n%v\nnot\n%v", got, want)
	}

	// Streaming: the SDK's accumulator finishes the tool call; the usage
	// chunk the hive asked for is not shown to a client that did not.
	stream := client.Chat.Completions.NewStreaming(ctx, params, vendor...)
	var acc openai.ChatCompletionAccumulator
	chunks, finished := 0, false
	for stream.Next() {
		acc.AddChunk(stream.Current())
		if tc, ok := acc.JustFinishedToolCall(); ok && tc.Name == "get_weather" && tc.Arguments == `{"city":"Oslo"}` {
			finished = true
		}
		if stream.Current().Model != "gpt-4o-mini" {
			t.Fatalf("chunk model %q", stream.Current().Model)
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks != 4 || !finished || acc.Choices[0].Message.ToolCalls[0].Function.Arguments != `{"city":"Oslo"}` {
		t.Fatalf("stream: %d chunks, finished %v, %+v", chunks, finished, acc.ChatCompletion)
	}
	got = lastRecorded(t, record, "/v1/chat/completions")
	if opts, _ := got["stream_options"].(map[string]any); opts["include_usage"] != true || got["stream"] != true || got["grammar"] != `root ::= "yes" | "no"` {
		t.Fatalf("streamed request: %v", got)
	}

	// Raw HTTP: the bytes, but for the model.
	rename := func(s string) string { return strings.ReplaceAll(s, `"model": "demo"`, `"model": "gpt-4o-mini"`) }
	status, ctype, body := post(t, base+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	if status != 200 || !strings.HasPrefix(ctype, "application/json") || body != rename(cannedChat) {
		t.Fatalf("raw answer %d %s:\n%s\nnot\n%s", status, ctype, body, rename(cannedChat))
	}
	// ... and the request's bytes, but for the model: key order, spacing,
	// numbers and what a JSON encoder would escape as the client wrote them.
	status, _, _ = post(t, base+"/v1/chat/completions", "{\"zeta\": 1, \"model\" : \"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"<b>hi</b> & \u2028 \\u00e9\"}],\"temperature\":0.70,\"download\":null}\n")
	if raw := lastRecordedRaw(t, record, "/v1/chat/completions"); status != 200 || raw != "{\"zeta\": 1, \"model\" : \"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"<b>hi</b> & \u2028 \\u00e9\"}],\"temperature\":0.70}\n" {
		t.Fatalf("the worker received %q (status %d)", raw, status)
	}
	// A body full of what JSON encoders escape for HTML is taken up to
	// the size limit (its job's record holds it at its own size) and
	// reaches the worker whole.
	big := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("<b>&</b>", 80_000) + `"}]}`
	status, _, body = post(t, base+"/v1/chat/completions", big)
	if raw := lastRecordedRaw(t, record, "/v1/chat/completions"); status != 200 || raw != strings.Replace(big, "gpt-4o-mini", "demo", 1) {
		t.Fatalf("a %d-byte body of markup: status %d, %.200s; the worker received %d bytes", len(big), status, body, len(raw))
	}
	var wantSSE strings.Builder
	for _, c := range cannedChunks {
		c = strings.Replace(c, `"model":"demo"`, `"model":"gpt-4o-mini"`, 1)
		fmt.Fprintf(&wantSSE, "data: %s\n\n", strings.ReplaceAll(c, "\n", "\ndata: "))
	}
	wantSSE.WriteString("data: [DONE]\n\n")
	status, ctype, body = post(t, base+"/v1/chat/completions",
		`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	// Every chunk has an id, and [DONE] the id of the job's end.
	if ids := regexp.MustCompile(`(?m)^id: [1-9][0-9]*$`).FindAllString(body, -1); len(ids) != len(cannedChunks)+1 {
		t.Fatalf("raw stream: %d id lines for %d chunks and [DONE]:\n%s", len(ids), len(cannedChunks), body)
	}
	if status != 200 || ctype != "text/event-stream" || stripComments(body) != wantSSE.String() {
		t.Fatalf("raw stream %d %s:\n%s\nnot\n%s", status, ctype, body, wantSSE.String())
	}

	// A worker's error reaches the client as the worker gave it.
	status, _, body = post(t, base+"/v1/completions", `{"model":"demo","prompt":"x","grammar":"root ::= ("}`)
	if status != 400 || body != cannedError {
		t.Fatalf("worker error: %d %s", status, body)
	}
	_, err = client.Completions.New(ctx, openai.CompletionNewParams{Model: "demo", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("x")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Message != "grammar does not parse" {
		t.Fatalf("worker error through the SDK: %v", err)
	}

	// Every request was a job.
	var list api.JobList
	do(t, "GET", base+"/v1/jobs?operation=infer", nil, &list)
	if len(list.Jobs) != 8 {
		t.Fatalf("%d infer jobs, want 8", len(list.Jobs))
	}
}

// Embeddings and rerank round-trip to a worker that serves them.
func TestOpenAIEmbeddingsRerank(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	base, record, _ := passthroughCluster(t)
	client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "gpt-4o-mini",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"bees make honey", "wasps do not"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(emb.Data) != 2 || len(emb.Data[1].Embedding) != 8 || emb.Model != "gpt-4o-mini" || emb.Usage.PromptTokens != 6 {
		t.Fatalf("embeddings: %s", emb.RawJSON())
	}
	if got := lastRecorded(t, record, "/v1/embeddings"); got["model"] != "demo" {
		t.Fatalf("embeddings request: %v", got)
	}
	status, _, body := post(t, base+"/v1/rerank", `{"model":"demo","query":"honey","documents":["bees make honey","rocks","sand"],"top_n":2}`)
	var rr struct {
		Model   string `json:"model"`
		Results []struct {
			Index int     `json:"index"`
			Score float64 `json:"relevance_score"`
		} `json:"results"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &rr) != nil || rr.Model != "demo" || len(rr.Results) != 2 || rr.Results[0].Score < rr.Results[1].Score {
		t.Fatalf("rerank: %d %s", status, body)
	}
}

// Hostile input is a JSON 4xx in OpenAI's error shape.
func TestOpenAIHostileInput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	base, _, _ := passthroughCluster(t)
	huge := `{"model":"demo","messages":[{"role":"user","content":"` + strings.Repeat("a", 2<<20) + `"}]}`
	// A body of exactly the limit, 1 MiB, that no JSON encoder would write
	// as it is (spacing, '<' in its strings): the job carries it as a
	// string, half as large again; one of '<' alone as large (a record is
	// written without HTML escapes); one of newlines between its keys
	// twice as large, past what a record may hold.
	head, tail := `{"model": "demo", "messages": [{"role": "user", "content": "`, `"}]}`
	unit := `some text with <b>bold</b> and more words. `
	pad := strings.Repeat(unit, (1<<20-len(head)-len(tail))/len(unit))
	markup := head + strings.Repeat("<", 1<<20-len(head)-len(tail)) + tail
	atLimit := head + pad + strings.Repeat(" ", 1<<20-len(head)-len(tail)-len(pad)) + tail
	newlines := `{"model": "demo",` + strings.Repeat("\n", 1<<20-len(`{"model": "demo",`)-len(`"messages": []}`)) + `"messages": []}`
	for _, tc := range []struct {
		name, path, body string
		status           int
	}{
		{"too large", "/v1/chat/completions", huge, 413},
		{"one byte over", "/v1/chat/completions", atLimit + " ", 413},
		{"at the limit", "/v1/chat/completions", atLimit, 200},
		{"at the limit, all markup", "/v1/chat/completions", markup, 200},
		{"at the limit, all newlines", "/v1/chat/completions", newlines, 413},
		{"bad model id", "/v1/chat/completions", `{"model":"../etc/passwd","messages":[]}`, 400},
		{"no model", "/v1/embeddings", `{"input":"x"}`, 400},
		{"array body", "/v1/chat/completions", `[{"model":"demo"}]`, 400},
		{"string body", "/v1/rerank", `"demo"`, 400},
		{"not JSON", "/v1/completions", `model=demo`, 400},
		{"bad download", "/v1/chat/completions", `{"model":"fresh","download":"ftp://x/y.gguf","messages":[]}`, 400},
		{"download of no repo", "/v1/chat/completions", `{"model":"fresh","download":"hf:org","messages":[]}`, 400},
		{"download of a repo's parent", "/v1/embeddings", `{"model":"fresh","download":"hf:org/repo:../x.gguf","input":"x"}`, 400},
		{"download of no host", "/v1/chat/completions", `{"model":"fresh","download":"http:///x.gguf","messages":[]}`, 400},
		{"download of a bad host", "/v1/chat/completions", `{"model":"fresh","download":"https://exa mple.com/x","messages":[]}`, 400},
		{"unknown model", "/v1/embeddings", `{"model":"nope","input":"x"}`, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ctype, body := post(t, base+tc.path, tc.body)
			var e struct {
				Error struct{ Message, Type string } `json:"error"`
			}
			if tc.status == 200 {
				if status != 200 {
					t.Fatalf("%d %s %s", status, ctype, body)
				}
				return
			}
			if status != tc.status || !strings.HasPrefix(ctype, "application/json") || json.Unmarshal([]byte(body), &e) != nil ||
				e.Error.Message == "" || e.Error.Type == "" {
				t.Fatalf("%d %s %s", status, ctype, body)
			}
		})
	}

	// Rbee-Detach says true or false; anything else is a mistake to tell.
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(`{"model":"demo","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Rbee-Detach", "maybe")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(data), "Rbee-Detach") || !strings.Contains(string(data), `"type"`) {
		t.Fatalf("Rbee-Detach: maybe: %d %s", resp.StatusCode, data)
	}
}

func post(t *testing.T, url, body string) (status int, ctype, answer string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(data)
}

// stripComments drops SSE comment lines (keep-alives) and the id lines
// that let a client resume.
func stripComments(s string) string {
	var out []string
	for _, ev := range strings.SplitAfter(s, "\n\n") {
		if !strings.HasPrefix(ev, ":") {
			out = append(out, idLine.ReplaceAllString(ev, ""))
		}
	}
	return strings.Join(out, "")
}

var idLine = regexp.MustCompile(`(?m)^id: [0-9]+\n`)
