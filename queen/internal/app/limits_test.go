package app_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// limited is one answer of the OpenAI API as a rate-limit test reads it.
type limited struct {
	code  int
	retry string
	err   struct {
		Type, Code string
	}
}

// chat posts a chat completion with key to base and reads the answer whole.
func chat(t *testing.T, base, key string, maxTokens int) limited {
	t.Helper()
	resp := postChat(t, base, key, maxTokens, false)
	defer resp.Body.Close()
	var out limited
	out.code, out.retry = resp.StatusCode, resp.Header.Get("Retry-After")
	var body struct {
		Error struct {
			Type string `json:"type"`
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	out.err.Type, out.err.Code = body.Error.Type, body.Error.Code
	return out
}

func postChat(t *testing.T, base, key string, maxTokens int, stream bool) *http.Response {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"model": "demo", "max_tokens": maxTokens, "stream": stream,
		"messages": []map[string]string{{"role": "user", "content": "tell me about bees"}}})
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// wantLimited checks a refusal in OpenAI's shape: 429, the type, code
// rate_limit_exceeded and Retry-After within max seconds.
func wantLimited(t *testing.T, what string, got limited, typ string, max int) {
	t.Helper()
	n, err := strconv.Atoi(got.retry)
	if got.code != http.StatusTooManyRequests || got.err.Type != typ || got.err.Code != "rate_limit_exceeded" || err != nil || n < 1 || n > max {
		t.Fatalf("%s: %+v, want 429 %s rate_limit_exceeded with Retry-After 1-%d", what, got, typ, max)
	}
}

// Keys' limits hold across two queens on one NATS: requests per minute,
// requests at once and tokens per minute each answer 429 with Retry-After
// at the request that passes them, and a key without limits is not held.
func TestKeyLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("demo model bytes ", 1000)))
	}))
	t.Cleanup(files.Close)
	ns := mustNATS(t)
	withAdmin := func(c *app.Config) { c.AdminKey = testAdminKey }
	a, _ := mustQueen(t, ns.ClientURL(), withAdmin)
	b, _ := mustQueen(t, ns.ClientURL(), withAdmin)
	queens := []string{a, b}
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	mustHive(t, a, ns.ClientURL(), "h1", func(c *agent.Config) { c.Slots = 4 })
	var created api.CreateJobResponse
	if code := doHeaders(t, "POST", a+"/v1/jobs", api.JobRequest{Operation: api.OpModelDownload, Hive: "h1", Payload: &api.ModelDownload{Source: files.URL + "/demo.gguf"}}, admin, &created); code != 201 {
		t.Fatalf("download: %d", code)
	}
	waitFor(t, 30*time.Second, func() bool {
		var j api.Job
		doHeaders(t, "GET", a+"/v1/jobs/"+created.JobID, nil, admin, &j)
		return j.State == api.StateDone
	})
	mk := func(name string, l api.KeyLimits) string {
		t.Helper()
		var k api.Key
		if code := doHeaders(t, "POST", a+"/v1/keys", api.KeyRequest{Name: name, Scopes: []string{"infer"}, KeyLimits: l}, admin, &k); code != 201 || k.KeyLimits != l {
			t.Fatalf("create key %s: %d %+v", name, code, k)
		}
		// Both queens know it before it is used on either; listing models
		// counts against no limit.
		waitFor(t, 5*time.Second, func() bool {
			return doHeaders(t, "GET", b+"/v1/models", nil, map[string]string{"Authorization": "Bearer " + k.Key}, nil) == 200
		})
		return k.Key
	}
	if code := doHeaders(t, "POST", a+"/v1/keys", map[string]any{"name": "bad", "scopes": []string{"infer"}, "rpm": -1}, admin, nil); code != 400 {
		t.Errorf("negative rpm: %d, want 400", code)
	}

	t.Run("no way around them through /v1/jobs", func(t *testing.T) {
		key := mk("jobs", api.KeyLimits{RPM: 1})
		for _, req := range []api.JobRequest{
			{Operation: api.OpInfer, Payload: &api.Infer{Model: "m", Prompt: "hi"}},
			{Operation: api.OpInfer, Payload: &api.Infer{Model: "m", Path: api.InferChat, Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)}},
		} {
			if code := doHeaders(t, "POST", a+"/v1/jobs", req, map[string]string{"Authorization": "Bearer " + key}, nil); code != 403 {
				t.Fatalf("a limited key's infer job through /v1/jobs: %d, want 403", code)
			}
		}
	})

	t.Run("rpm", func(t *testing.T) {
		// A minute that rolls between the first request and the last
		// resets the count: try again with a fresh key.
		for attempt := 0; ; attempt++ {
			key := mk("rpm"+strconv.Itoa(attempt), api.KeyLimits{RPM: 3})
			minute := time.Now().Unix() / 60
			var got []limited
			for i := 0; i < 4; i++ {
				got = append(got, chat(t, queens[i%2], key, 2))
			}
			if time.Now().Unix()/60 != minute && attempt == 0 {
				continue
			}
			for i, g := range got[:3] {
				if g.code != 200 {
					t.Fatalf("request %d: %+v", i+1, g)
				}
			}
			wantLimited(t, "request 4, on the other queen", got[3], "requests", 60)
			// Another key is not held by this one's count.
			if got := chat(t, b, mk("rpm-other"+strconv.Itoa(attempt), api.KeyLimits{RPM: 3}), 2); got.code != 200 {
				t.Fatalf("another key: %+v", got)
			}
			return
		}
	})

	t.Run("max concurrent", func(t *testing.T) {
		key := mk("conc", api.KeyLimits{MaxConcurrent: 1})
		// The reference worker makes 50 tokens a second: 100 take two.
		resp := postChat(t, a, key, 100, true)
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		// A chunk is an id line, then its data.
		if line, err := r.ReadString('\n'); resp.StatusCode != 200 || err != nil || !strings.HasPrefix(line, "id: ") {
			t.Fatalf("first stream: %d %q %v", resp.StatusCode, line, err)
		}
		for _, q := range queens {
			wantLimited(t, "second while the first runs", chat(t, q, key, 2), "requests", 1)
		}
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				break
			}
			if strings.HasPrefix(line, "data: ") {
				last = line
			}
		}
		if strings.TrimSpace(last) != "data: [DONE]" {
			t.Fatalf("first stream ended with %q", last)
		}
		if got := chat(t, b, key, 2); got.code != 200 {
			t.Fatalf("after the first ended: %+v", got)
		}
	})

	t.Run("tpm", func(t *testing.T) {
		for attempt := 0; ; attempt++ {
			key := mk("tpm"+strconv.Itoa(attempt), api.KeyLimits{TPM: 20})
			minute := time.Now().Unix() / 60
			first := chat(t, a, key, 30)
			second := chat(t, b, key, 2)
			if time.Now().Unix()/60 != minute && attempt == 0 {
				continue
			}
			if first.code != 200 {
				t.Fatalf("first: %+v", first)
			}
			wantLimited(t, "past the tokens", second, "tokens", 60)
			return
		}
	})

	t.Run("no limits", func(t *testing.T) {
		key := mk("free", api.KeyLimits{})
		for i := 0; i < 6; i++ {
			if got := chat(t, queens[i%2], key, 2); got.code != 200 {
				t.Fatalf("request %d: %+v", i+1, got)
			}
		}
	})
}
