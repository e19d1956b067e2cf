package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// A streamed completion sent with Rbee-Detach keeps generating when its
// client drops; the client reattaches on another queen with the job id and
// Last-Event-ID and gets the rest as OpenAI chunks: what it had plus the
// rest is exactly the whole answer, as a full replay gives it.
func TestDetachedStreamReattaches(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	ns := mustNATS(t)
	a, _ := mustQueen(t, ns.ClientURL())
	b, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, a, ns.ClientURL(), "h1", func(c *agent.Config) { c.Slots = 2 })
	downloadDemo(t, a, "h1")

	ctx, drop := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", a+"/v1/chat/completions",
		strings.NewReader(`{"model":"demo","stream":true,"max_tokens":300,"messages":[{"role":"user","content":"tell me about bees"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Rbee-Detach", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	job := resp.Header.Get("X-Rbee-Job")
	if resp.StatusCode != 200 || job == "" {
		t.Fatalf("status %d, job %q", resp.StatusCode, job)
	}
	head, last, _ := readChunks(t, resp, 3)
	drop()
	resp.Body.Close()
	if last == 0 {
		t.Fatal("no id on the chunks")
	}

	rest := reattach(t, b, job, last)
	whole := reattach(t, b, job, 0)
	if head+rest != whole || len(whole) < 10 {
		t.Fatalf("first part %q + reattached %q != whole %q", head, rest, whole)
	}
	var rec api.Job
	do(t, "GET", b+"/v1/jobs/"+job, nil, &rec)
	if rec.State != api.StateDone {
		t.Fatalf("the detached job ended %s: %s", rec.State, rec.Error)
	}

	// [DONE] carries the id of the job's end: reconnecting with the last
	// id seen, as an EventSource does, is told that nothing follows.
	resp, err = http.Get(b + "/v1/jobs/" + job + "/stream?format=openai")
	if err != nil {
		t.Fatal(err)
	}
	var lastID string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			lastID = id
		}
	}
	resp.Body.Close()
	req, _ = http.NewRequest("GET", b+"/v1/jobs/"+job+"/stream?format=openai", nil)
	req.Header.Set("Last-Event-ID", lastID)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("reconnect after [DONE] with id %s: %v %v, want 204", lastID, resp, err)
	} else {
		resp.Body.Close()
	}

	// Only inference jobs have an OpenAI form.
	var dl api.JobList
	do(t, "GET", b+"/v1/jobs?operation=model_download", nil, &dl)
	var e api.ErrorBody
	if code := do(t, "GET", b+"/v1/jobs/"+dl.Jobs[0].JobID+"/stream?format=openai", nil, &e); code != http.StatusBadRequest || e.Error.Code == "" {
		t.Fatalf("format=openai on a download: %d %+v", code, e)
	}
}

// reattach reads an inference job's answer as OpenAI chunks after
// Last-Event-ID after, to [DONE], and returns its text.
func reattach(t *testing.T, base, job string, after uint64) string {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/jobs/"+job+"/stream?format=openai", nil)
	if after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("reattach: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	text, _, done := readChunks(t, resp, 0)
	if !done {
		t.Fatal("reattached stream ended without [DONE]")
	}
	return text
}

// readChunks reads OpenAI chunks, up to max content chunks (0: to [DONE]),
// and returns their text, the last chunk's id and whether [DONE] came.
func readChunks(t *testing.T, resp *http.Response, max int) (text string, last uint64, done bool) {
	t.Helper()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var id uint64
	n := 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id, _ = strconv.ParseUint(line[4:], 10, 64)
		case line == "data: [DONE]":
			return text, last, true
		case strings.HasPrefix(line, "data: "):
			var c struct {
				Choices []struct {
					Delta struct{ Content string } `json:"delta"`
				} `json:"choices"`
				Error json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal([]byte(line[6:]), &c); err != nil || len(c.Error) > 0 {
				t.Fatalf("chunk %s: %v", line, err)
			}
			last = id
			if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
				text += c.Choices[0].Delta.Content
				if n++; max > 0 && n == max {
					return text, last, false
				}
			}
		}
	}
	return text, last, false
}

// A key with the infer scope alone may follow its own inference job in
// its OpenAI form, to reattach; not in the narration form, which needs
// read, and never another key's job.
func TestReattachScopes(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	key := func(name string) map[string]string {
		var k api.Key
		if code := doHeaders(t, "POST", base+"/v1/keys", api.KeyRequest{Name: name, Scopes: []string{api.ScopeInfer}}, admin, &k); code != 201 {
			t.Fatalf("create key %s: %d", name, code)
		}
		return map[string]string{"Authorization": "Bearer " + k.Key}
	}
	mine, theirs := key("mine"), key("theirs")
	var created api.CreateJobResponse
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(`{"model":"demo","stream":true,"messages":[{"role":"user","content":"hi"}]}`)}}
	if code := doHeaders(t, "POST", base+"/v1/jobs", req, mine, &created); code != 201 {
		t.Fatalf("create infer job: %d", code)
	}
	stream := base + "/v1/jobs/" + created.JobID + "/stream"
	for _, c := range []struct {
		who  map[string]string
		url  string
		want int
	}{
		{mine, stream + "?format=openai", http.StatusOK},
		{mine, stream, http.StatusForbidden},
		{theirs, stream + "?format=openai", http.StatusNotFound},
		{theirs, stream, http.StatusForbidden},
		{admin, stream, http.StatusOK},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, _ := http.NewRequestWithContext(ctx, "GET", c.url, nil)
		for k, v := range c.who {
			r.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != c.want {
			t.Fatalf("GET %s as %v: %d, want %d", c.url, c.who, resp.StatusCode, c.want)
		}
	}
	// And cancel it: its own, not another key's.
	if code := doHeaders(t, "DELETE", base+"/v1/jobs/"+created.JobID, nil, theirs, nil); code != http.StatusNotFound {
		t.Fatalf("another infer key cancels: %d, want 404", code)
	}
	if code := doHeaders(t, "DELETE", base+"/v1/jobs/"+created.JobID, nil, mine, nil); code != http.StatusAccepted {
		t.Fatalf("its infer key cancels: %d, want 202", code)
	}
	waitFor(t, 5*time.Second, func() bool {
		var j api.Job
		doHeaders(t, "GET", base+"/v1/jobs/"+created.JobID, nil, admin, &j)
		return j.State == api.StateCancelled
	})
}
