package refworker_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"rbee.dev/hive/internal/refworker"
	"rbee.dev/shared/testkit"
)

// mustServe starts a ready worker serving model "tiny" behind httptest.
func mustServe(t testing.TB, edit ...func(*refworker.Config)) (*refworker.Server, string) {
	t.Helper()
	cfg := refworker.Config{ModelPath: "/models/tiny.gguf", TokenRate: 0, CtxSize: 4096}
	for _, e := range edit {
		e(&cfg)
	}
	s := refworker.NewServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts.URL
}

func post(t testing.TB, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode %s answer: %v", url, err)
	}
	return resp.StatusCode, out
}

func get(t testing.TB, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode %s answer: %v", url, err)
	}
	return resp.StatusCode, out
}

// dig walks a decoded JSON value by keys and indices.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func TestHealthWhileLoading(t *testing.T) {
	s := refworker.NewServer(refworker.Config{ModelPath: "m.gguf", LoadDelay: time.Hour, CtxSize: 64}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()

	code, body := get(t, ts.URL+"/health")
	if code != http.StatusServiceUnavailable || body["status"] != "loading" {
		t.Fatalf("health while loading = %d %v, want 503 loading", code, body)
	}
	code, body = post(t, ts.URL+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`)
	if code != http.StatusServiceUnavailable || dig(body, "error", "code") != "model_loading" {
		t.Fatalf("chat while loading = %d %v", code, body)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Load(ctx); err == nil {
		t.Fatal("Load with a cancelled context and an hour's delay returned nil")
	}
	_, url := mustServe(t)
	if code, body := get(t, url+"/health"); code != http.StatusOK || body["status"] != "ok" {
		t.Fatalf("health when ready = %d %v", code, body)
	}
}

func TestModels(t *testing.T) {
	tests := []struct {
		name string
		cfg  refworker.Config
		want string
	}{
		{"file base name", refworker.Config{ModelPath: "/m/qwen2-0.5b.Q4_K_M.gguf"}, "qwen2-0.5b.Q4_K_M"},
		{"explicit id", refworker.Config{ModelPath: "/m/x.gguf", ModelID: "tiny"}, "tiny"},
		{"no extension", refworker.Config{ModelPath: "/m/plain"}, "plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, url := mustServe(t, func(c *refworker.Config) { c.ModelPath, c.ModelID = tt.cfg.ModelPath, tt.cfg.ModelID })
			code, body := get(t, url+"/v1/models")
			if code != 200 || body["object"] != "list" || dig(body, "data", 0, "id") != tt.want || dig(body, "data", 0, "object") != "model" {
				t.Fatalf("models = %d %v, want id %s", code, body, tt.want)
			}
		})
	}
}

func TestChatDeterministic(t *testing.T) {
	_, url := mustServe(t)
	req := `{"model":"tiny","messages":[{"role":"user","content":"Say something"}],"max_tokens":5}`
	code, a := post(t, url+"/v1/chat/completions", req)
	if code != 200 {
		t.Fatalf("chat = %d %v", code, a)
	}
	_, b := post(t, url+"/v1/chat/completions", req)
	content := dig(a, "choices", 0, "message", "content")
	if content != dig(b, "choices", 0, "message", "content") || content == "" {
		t.Fatalf("same request, different answers: %v / %v", a, b)
	}
	if n := len(strings.Fields(content.(string))); n != 5 {
		t.Fatalf("content %q has %d words, want max_tokens 5", content, n)
	}
	if dig(a, "choices", 0, "finish_reason") != "length" || dig(a, "object") != "chat.completion" || dig(a, "choices", 0, "message", "role") != "assistant" {
		t.Fatalf("answer shape: %v", a)
	}
	if dig(a, "usage", "completion_tokens") != 5.0 || dig(a, "usage", "prompt_tokens") != 3.0 || dig(a, "usage", "total_tokens") != 8.0 {
		t.Fatalf("usage = %v, want prompt 3 (user: Say something), completion 5", dig(a, "usage"))
	}

	_, other := post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Something else"}],"max_tokens":5}`)
	if dig(other, "choices", 0, "message", "content") == content {
		t.Fatalf("different prompts gave the same answer %q", content)
	}

	// With room to spare the answer ends by itself.
	_, long := post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"Say something"}],"max_tokens":1000}`)
	n := dig(long, "usage", "completion_tokens").(float64)
	if dig(long, "choices", 0, "finish_reason") != "stop" || n < 8 || n > 64 {
		t.Fatalf("long answer: finish %v after %v tokens, want stop after 8-64", dig(long, "choices", 0, "finish_reason"), n)
	}
	if !strings.HasPrefix(dig(long, "choices", 0, "message", "content").(string), content.(string)) {
		t.Fatal("the long answer does not start with the short one")
	}

	// Default max_tokens is 16.
	_, def := post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"a b c d e f g h"}]}`)
	if got := dig(def, "usage", "completion_tokens").(float64); got > 16 {
		t.Fatalf("default answer is %v tokens, want at most 16", got)
	}
}

// sseEvents reads a streamed answer's data lines, up to and including [DONE].
func sseEvents(t testing.TB, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected SSE line %q", line)
		}
		out = append(out, data)
		if data == "[DONE]" {
			break
		}
	}
	return out
}

func TestChatStream(t *testing.T) {
	_, url := mustServe(t)
	_, whole := post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"stream me"}],"max_tokens":6}`)

	resp, err := http.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[{"role":"user","content":"stream me"}],"max_tokens":6,"stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := sseEvents(t, resp.Body)
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events = %v", events)
	}
	var text strings.Builder
	var finish any
	var usage any
	for i, e := range events[:len(events)-1] {
		var c map[string]any
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("event %d %q: %v", i, e, err)
		}
		if c["object"] != "chat.completion.chunk" {
			t.Fatalf("event %d object %v", i, c["object"])
		}
		if i == 0 && dig(c, "choices", 0, "delta", "role") != "assistant" {
			t.Fatalf("first chunk has no assistant role: %s", e)
		}
		if s, ok := dig(c, "choices", 0, "delta", "content").(string); ok {
			text.WriteString(s)
		}
		if f := dig(c, "choices", 0, "finish_reason"); f != nil {
			finish = f
		}
		if u := c["usage"]; u != nil {
			usage = u
			if len(c["choices"].([]any)) != 0 {
				t.Fatalf("usage chunk has choices: %s", e)
			}
		}
	}
	if text.String() != dig(whole, "choices", 0, "message", "content") {
		t.Fatalf("streamed %q, whole %q", text.String(), dig(whole, "choices", 0, "message", "content"))
	}
	if finish != "length" || dig(usage, "completion_tokens") != 6.0 {
		t.Fatalf("finish %v usage %v", finish, usage)
	}
}

func TestCompletions(t *testing.T) {
	_, url := mustServe(t)
	code, whole := post(t, url+"/v1/completions", `{"model":"tiny","prompt":"Once upon a time","max_tokens":4}`)
	if code != 200 || dig(whole, "object") != "text_completion" || dig(whole, "choices", 0, "finish_reason") != "length" ||
		dig(whole, "usage", "prompt_tokens") != 4.0 || dig(whole, "usage", "completion_tokens") != 4.0 {
		t.Fatalf("completion = %d %v", code, whole)
	}
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"prompt":"Once upon a time","max_tokens":4,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := sseEvents(t, resp.Body)
	var text strings.Builder
	for _, e := range events[:len(events)-1] {
		var c map[string]any
		_ = json.Unmarshal([]byte(e), &c)
		if c["usage"] != nil {
			t.Fatalf("usage chunk without include_usage: %s", e)
		}
		text.WriteString(dig(c, "choices", 0, "text").(string))
	}
	if text.String() != dig(whole, "choices", 0, "text") || events[len(events)-1] != "[DONE]" {
		t.Fatalf("streamed %q (%d events), whole %q", text.String(), len(events), dig(whole, "choices", 0, "text"))
	}
}

func TestErrors(t *testing.T) {
	_, url := mustServe(t, func(c *refworker.Config) { c.CtxSize = 8 })
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, 404, "model_not_found"},
		{"bad json", "POST", "/v1/chat/completions", `{"messages":`, 400, "invalid_json"},
		{"no messages", "POST", "/v1/chat/completions", `{"messages":[]}`, 400, "invalid_request"},
		{"zero max_tokens", "POST", "/v1/completions", `{"prompt":"x","max_tokens":0}`, 400, "invalid_max_tokens"},
		{"no prompt", "POST", "/v1/completions", `{}`, 400, "invalid_request"},
		{"prompt past context", "POST", "/v1/completions", `{"prompt":"one two three four five six seven eight nine"}`, 400, "context_length_exceeded"},
		{"wrong method", "GET", "/v1/chat/completions", ``, 405, "method_not_allowed"},
		{"unknown path", "GET", "/v2/nothing", ``, 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, url+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.status || dig(body, "error", "code") != tt.code ||
				dig(body, "error", "message") == "" || dig(body, "error", "type") == nil {
				t.Fatalf("%s %s = %d %v, want %d %s", tt.method, tt.path, resp.StatusCode, body, tt.status, tt.code)
			}
		})
	}
	// The context bounds the answer too: 3 prompt tokens leave 5.
	_, body := post(t, url+"/v1/completions", `{"prompt":"one two three","max_tokens":100}`)
	if dig(body, "usage", "completion_tokens") != 5.0 || dig(body, "choices", 0, "finish_reason") != "length" {
		t.Fatalf("answer in a small context: %v", body)
	}
}

// A client that goes away mid-stream stops the generation.
func TestDisconnectStopsGeneration(t *testing.T) {
	s, url := mustServe(t, func(c *refworker.Config) { c.TokenRate = 50; c.ModelID = "tiny" })
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"a long one"}],"max_tokens":1000,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 2; i++ { // the role chunk and one token
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		_, _ = br.ReadString('\n')
	}
	cancel()
	resp.Body.Close()

	deadline := time.Now().Add(3 * time.Second)
	for s.Stats().Cancelled != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: the generation was not cancelled", s.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	tokens := s.Stats().Tokens
	time.Sleep(100 * time.Millisecond)
	_, st := get(t, url+"/stats")
	if st["tokens"] != float64(tokens) || st["requests"] != 1.0 || st["cancelled"] != 1.0 || tokens >= 64 {
		t.Fatalf("stats after disconnect %v (tokens then %d): generation went on", st, tokens)
	}
}

func TestMainFlagsAndLoad(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "demo.gguf")
	if err := os.WriteFile(model, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{},
		{"--model", filepath.Join(dir, "missing.gguf")},
		{"--model", model, "--token-rate", "-1"},
		{"--model", model, "extra"},
	} {
		if err := refworker.Main(context.Background(), args, io.Discard); err == nil {
			t.Errorf("Main(%q) = nil, want an error", args)
		}
	}

	var logs testkit.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- refworker.Main(ctx, []string{"--port", "0", "--model", model, "--load-delay", "300ms"}, &logs)
	}()
	urlRE := regexp.MustCompile(`url=(http://\S+)`)
	var url string
	for deadline := time.Now().Add(5 * time.Second); url == ""; time.Sleep(10 * time.Millisecond) {
		if m := urlRE.FindStringSubmatch(logs.String()); m != nil {
			url = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no listening line in %q", logs.String())
		}
	}
	if code, _ := get(t, url+"/health"); code != http.StatusServiceUnavailable {
		t.Fatalf("health during the load delay = %d, want 503", code)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, _ := get(t, url+"/health"); code == http.StatusOK {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
	}
	if _, body := get(t, url+"/v1/models"); dig(body, "data", 0, "id") != "demo" {
		t.Fatalf("models = %v", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Main after cancel = %v", err)
	}
	if !strings.Contains(logs.String(), "loading model") || !strings.Contains(logs.String(), "ready") {
		t.Fatalf("logs: %s", logs.String())
	}
}
