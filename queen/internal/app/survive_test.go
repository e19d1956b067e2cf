package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"rbee.dev/hive/agent"
	"rbee.dev/shared/api"
)

// survivors is how many streams run through each kill, as the issue asks:
// each test takes under ten seconds on two cores.
const survivors = 100

// chatStream is what one streaming chat client saw.
type chatStream struct {
	job      string
	status   int
	text     string
	chunks   int
	ids      map[string]bool
	finish   string
	usage    *api.Usage
	done     bool
	problems []string
}

// readChat sends a streaming chat request with its own prompt (and, with
// strict, a JSON response format, which must not continue) and reads the
// answer to its end, noting anything a client would call broken; first is
// called at the first text, and finished, if set, at the finish reason.
func readChat(ctx context.Context, base, prompt string, strict bool, first func(), finished ...func(job string)) chatStream {
	s := chatStream{ids: map[string]bool{}}
	format := ""
	if strict {
		format = `"response_format":{"type":"json_object"},`
	}
	body := fmt.Sprintf(`{"model":"demo","stream":true,%s"stream_options":{"include_usage":true},"max_tokens":200,"messages":[{"role":"user","content":%q}]}`, format, prompt)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.problems = append(s.problems, err.Error())
		return s
	}
	defer resp.Body.Close()
	s.status, s.job = resp.StatusCode, resp.Header.Get("X-Rbee-Job")
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		payload, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if payload == "[DONE]" {
			s.done = true
			continue
		}
		var c struct {
			ID      string          `json:"id"`
			Error   json.RawMessage `json:"error"`
			Choices []struct {
				Delta        struct{ Role, Content string } `json:"delta"`
				FinishReason string                         `json:"finish_reason"`
			} `json:"choices"`
			Usage *api.Usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(payload), &c); err != nil || c.Error != nil {
			s.problems = append(s.problems, "chunk "+payload)
			continue
		}
		s.ids[c.ID] = true
		if c.Usage != nil {
			s.usage = c.Usage
		}
		for _, ch := range c.Choices {
			if ch.Delta.Role != "" && s.chunks > 0 {
				s.problems = append(s.problems, "a second role chunk: "+payload)
			}
			s.chunks++
			if s.text == "" && ch.Delta.Content != "" {
				first()
			}
			s.text += ch.Delta.Content
			if ch.FinishReason != "" {
				s.finish = ch.FinishReason
				for _, f := range finished {
					f(s.job)
				}
			}
		}
	}
	return s
}

// wholeAnswer is the answer an uninterrupted request for prompt gets.
func wholeAnswer(t *testing.T, base, prompt string) string {
	var out struct {
		Choices []struct{ Message struct{ Content string } } `json:"choices"`
	}
	body := map[string]any{"model": "demo", "max_tokens": 200, "messages": []map[string]string{{"role": "user", "content": prompt}}}
	if code := do(t, "POST", base+"/v1/chat/completions", body, &out); code != 200 || len(out.Choices) != 1 {
		t.Errorf("uninterrupted request: %d", code)
		return ""
	}
	return out.Choices[0].Message.Content
}

// slowCatalog writes a worker catalog whose reference worker says 25
// tokens a second, so generations are mid-stream when the test breaks one.
func slowCatalog(t *testing.T) string {
	t.Helper()
	catalog := filepath.Join(t.TempDir(), "hive.json")
	if err := os.WriteFile(catalog, []byte(`{"backends": [{"name": "slow", "kind": "reference",
		"command": ["rbee-worker", "--host", "{host}", "--port", "{port}", "--model", "{model}", "--model-id", "{model_id}", "--token-rate", "25"]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return catalog
}

// spawnSlow starts hive's worker of demo, taking every survivor at once.
func spawnSlow(t *testing.T, base, hive string) api.Worker { return spawnDemo(t, base, hive, "slow") }

// spawnDemo downloads demo to hive and starts its worker there with
// backend, taking every survivor at once.
func spawnDemo(t *testing.T, base, hive, backend string) api.Worker {
	t.Helper()
	downloadDemo(t, base, hive)
	spawn := submit(t, base, api.JobRequest{Operation: api.OpWorkerSpawn, Hive: hive, Payload: &api.WorkerSpawn{ModelID: "demo", Backend: backend, MaxConcurrent: survivors}})
	if frames, done, _ := sse(t, context.Background(), base, spawn, 0, 0); checkComplete(t, frames, done).State != api.StateDone {
		t.Fatalf("worker spawn (%s) on %s failed", backend, hive)
	}
	var h api.Hive
	waitFor(t, 10*time.Second, func() bool {
		do(t, "GET", base+"/v1/hives/"+hive, nil, &h)
		return len(h.Workers) == 1 && h.Workers[0].State == api.WorkerReady
	})
	return h.Workers[0]
}

// moves is what the narration of one generation says about its moves.
type moves struct {
	first     string // the worker it started on
	queen     bool   // a queen moved it to another hive
	continued int    // the tokens its last worker continued after
}

func movesOf(t *testing.T, ctx context.Context, base, job string) moves {
	var m moves
	frames, _, _ := sse(t, ctx, base, job, 0, 0)
	for _, f := range frames {
		if f.Event != api.SSENarration {
			continue
		}
		e := f.event(t)
		m.queen = m.queen || (e.Action == "moved" && e.Actor == "queen")
		if e.Action != "worker" {
			continue
		}
		if _, w, ok := strings.Cut(e.Message, " on worker "); ok && m.first == "" {
			m.first, _, _ = strings.Cut(w, ",")
		}
		if _, n, ok := strings.Cut(e.Message, "continuing after "); ok {
			_, _ = fmt.Sscanf(n, "%d tokens", &m.continued)
		}
	}
	return m
}

// survive runs the survivors' streams, kills worker `killed` (with kill)
// once some are mid-answer, and checks what each client saw: one stream
// that ends with a finish reason and [DONE], no error, one role chunk, one
// chunk id, the text an uninterrupted request gets (so no token repeated
// or lost), and usage counting every token the client got. Every third
// stream asks for JSON output, which must not continue: if it ran on the
// killed worker and had no finish reason yet, it fails as before, with an
// error and no move, else it completes. It
// returns how many streams moved mid-answer, and how many of those a
// queen moved to another hive.
func survive(t *testing.T, base, killed string, kill func()) (moved, byQueen int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	streams := make([]chatStream, survivors)
	prompt := func(i int) string { return fmt.Sprintf("tell me about bee number %d", i) }
	strict := func(i int) bool { return i%3 == 2 }
	var wg sync.WaitGroup
	var talking atomic.Int32
	for i := range survivors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			streams[i] = readChat(ctx, base, prompt(i), strict(i), func() { talking.Add(1) })
		}()
	}
	// Mid-answer: half a second after every stream has begun to answer,
	// at 25 tokens a second.
	waitFor(t, 20*time.Second, func() bool { return talking.Load() == survivors })
	time.Sleep(500 * time.Millisecond)
	kill()
	wg.Wait()

	// What uninterrupted requests get, all at once: the workers left serve
	// every survivor together.
	whole := make([]string, survivors)
	for i := range survivors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			whole[i] = wholeAnswer(t, base, prompt(i))
		}()
	}
	wg.Wait()
	refused := 0
	for i, s := range streams {
		m := movesOf(t, ctx, base, s.job)
		if strict(i) && m.first == killed && s.finish == "" {
			// Killed before it finished: it fails, as before. One that
			// had its finish reason ends, with only its usage to come
			// (TestHiveLostAfterFinish).
			if len(s.problems) == 0 || m.continued > 0 || m.queen {
				t.Fatalf("stream %d (job %s) asked for JSON and was on the killed worker: problems %v, moves %+v", i, s.job, s.problems, m)
			}
			refused++
			continue
		}
		if s.status != 200 || !s.done || s.finish == "" || len(s.problems) > 0 {
			t.Fatalf("stream %d (job %s): status %d, done %v, finish %q, problems %v", i, s.job, s.status, s.done, s.finish, s.problems)
		}
		if len(s.ids) != 1 {
			t.Errorf("stream %d: chunk ids %v, want one", i, s.ids)
		}
		if want := whole[i]; s.text != want {
			t.Fatalf("stream %d (job %s) text:\n %q\nwant the uninterrupted\n %q", i, s.job, s.text, want)
		}
		if s.usage == nil || s.usage.CompletionTokens != len(strings.Fields(s.text)) {
			t.Errorf("stream %d: usage %+v for %d tokens", i, s.usage, len(strings.Fields(s.text)))
		}
		if m.continued > 0 {
			moved++
			if m.queen {
				byQueen++
			}
		}
	}
	if moved == 0 {
		t.Fatal("no stream moved mid-answer: the kill came too late")
	}
	t.Logf("%d of %d streams moved mid-answer, %d by a queen; %d asking for JSON failed", moved, survivors, byQueen, refused)
	return moved, byQueen
}

// A worker killed mid-answer: its generations continue on the other
// hive's worker, and every client sees one unbroken stream.
func TestGenerationSurvivesItsWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	catalog := slowCatalog(t)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	for _, id := range []string{"a", "b"} {
		mustHive(t, base, ns.ClientURL(), id, func(c *agent.Config) { c.ConfigFile = catalog; c.InferSlots = 2 * survivors })
	}
	wa := spawnSlow(t, base, "a")
	spawnSlow(t, base, "b")
	if _, byQueen := survive(t, base, wa.WorkerID, func() {
		if err := syscall.Kill(wa.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}); byQueen == 0 {
		t.Fatal("no generation moved to hive b")
	}
}

// A hive killed with kill -9 mid-answer: once the queens see it lost, its
// generations continue on the other hive.
func TestGenerationSurvivesItsHive(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes")
	}
	catalog := slowCatalog(t)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	a := hiveProcess(t, base, ns.ClientURL(), "a", "--config", catalog, "--infer-slots", fmt.Sprint(2*survivors))
	mustHive(t, base, ns.ClientURL(), "b", func(c *agent.Config) { c.ConfigFile = catalog; c.InferSlots = 2 * survivors })
	wa := spawnSlow(t, base, "a")
	spawnSlow(t, base, "b")
	if _, byQueen := survive(t, base, wa.WorkerID, func() {
		_ = a.Process.Kill()
		// Its worker goes too, as it would with its machine.
		_ = syscall.Kill(wa.PID, syscall.SIGKILL)
	}); byQueen == 0 {
		t.Fatal("no generation moved to hive b")
	}
}

// A worker killed mid-answer on a hive with another worker of the model:
// its generations continue on that worker, without a queen's move.
func TestGenerationSurvivesOnItsHive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	catalog := slowCatalog(t)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "a", func(c *agent.Config) { c.ConfigFile = catalog; c.InferSlots = 2 * survivors })
	w1 := spawnSlow(t, base, "a")
	spawn := submit(t, base, api.JobRequest{Operation: api.OpWorkerSpawn, Hive: "a", Payload: &api.WorkerSpawn{ModelID: "demo", Backend: "slow", MaxConcurrent: survivors}})
	if frames, done, _ := sse(t, context.Background(), base, spawn, 0, 0); checkComplete(t, frames, done).State != api.StateDone {
		t.Fatal("second worker spawn failed")
	}
	waitFor(t, 10*time.Second, func() bool {
		var h api.Hive
		do(t, "GET", base+"/v1/hives/a", nil, &h)
		return len(h.Workers) == 2 && h.Workers[0].State == api.WorkerReady && h.Workers[1].State == api.WorkerReady
	})
	if _, byQueen := survive(t, base, w1.WorkerID, func() {
		if err := syscall.Kill(w1.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}); byQueen != 0 {
		t.Fatalf("%d generations left the hive that had another worker", byQueen)
	}
}

// wholeAnswerChunks are a worker's chunks of a whole JSON answer, up to
// its finish reason: no usage, no [DONE].
var wholeAnswerChunks = func() []string {
	head := `{"id":"chatcmpl-cut","object":"chat.completion.chunk","created":1,"model":"demo",`
	return []string{
		head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
		head + `"choices":[{"index":0,"delta":{"content":"{\"bees\":"},"finish_reason":null}]}`,
		head + `"choices":[{"index":0,"delta":{"content":"3}"},"finish_reason":null}]}`,
		head + `"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
	}
}()

// A worker that cuts its stream after the client had the last token and
// the finish reason, before the usage and [DONE]: the answer is whole, so
// the hive ends the stream itself, the usage counted from what the client
// has, and nothing is generated again, even for a request that may not
// continue elsewhere (JSON output).
func TestStreamCutAfterFinish(t *testing.T) {
	base, record, _ := cannedCluster(t, `{"/v1/chat/completions": {"break": true, "chunks": [`+strings.Join(wholeAnswerChunks, ",")+`]}}`)
	for i, strict := range []bool{true, false} {
		s := readChat(t.Context(), base, "count the bees", strict, func() {})
		if s.status != 200 || !s.done || s.finish != "stop" || len(s.problems) > 0 || s.text != `{"bees":3}` {
			t.Fatalf("JSON output %v: status %d, done %v, finish %q, text %q, problems %v", strict, s.status, s.done, s.finish, s.text, s.problems)
		}
		if s.usage == nil || s.usage.CompletionTokens != 2 {
			t.Errorf("JSON output %v: usage %+v, want the 2 tokens the client has", strict, s.usage)
		}
		var j api.Job
		do(t, "GET", base+"/v1/jobs/"+s.job, nil, &j)
		if j.State != api.StateDone || j.Attempt != 1 {
			t.Errorf("JSON output %v: job %s, attempt %d; want done on its first", strict, j.State, j.Attempt)
		}
		data, err := os.ReadFile(record)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(data), `"path":"/v1/chat/completions"`); n != i+1 {
			t.Errorf("after %d requests the worker was asked %d times: want nothing generated again", i+1, n)
		}
	}
}

// A hive lost after a client had the whole answer and its finish reason,
// before the end: the generation moves, and the next hive sends only what
// the client lacks (the usage) and ends it, asking no worker, even for a
// request that may not continue elsewhere (JSON output).
func TestHiveLostAfterFinish(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes")
	}
	dir := t.TempDir()
	record, canned, catalog := filepath.Join(dir, "record.jsonl"), filepath.Join(dir, "canned.json"), filepath.Join(dir, "hive.json")
	files := map[string]string{
		canned: `{"/v1/chat/completions": {"hold": true, "chunks": [` + strings.Join(wholeAnswerChunks, ",") + `]}}`,
		catalog: fmt.Sprintf(`{"backends": [{"name": "canned", "kind": "reference", "command": ["rbee-worker", "--host", "{host}", "--port", "{port}",
			"--model", "{model}", "--model-id", "{model_id}", "--token-rate", "0", "--record", %q, "--canned", %q]}]}`, record, canned),
	}
	for name, data := range files {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	hives := map[string]*exec.Cmd{}
	workers := map[string]api.Worker{}
	for _, id := range []string{"a", "b"} {
		hives[id] = hiveProcess(t, base, ns.ClientURL(), id, "--config", catalog)
		workers[id] = spawnDemo(t, base, id, "canned")
	}
	var lost string
	s := readChat(t.Context(), base, "count the bees", true, func() {}, func(job string) {
		var j api.Job
		do(t, "GET", base+"/v1/jobs/"+job, nil, &j)
		lost = j.Hive
		_ = hives[lost].Process.Kill()
		_ = syscall.Kill(workers[lost].PID, syscall.SIGKILL)
	})
	if lost == "" || s.status != 200 || !s.done || s.finish != "stop" || len(s.problems) > 0 || s.text != `{"bees":3}` {
		t.Fatalf("hive %q killed: status %d, done %v, finish %q, text %q, problems %v", lost, s.status, s.done, s.finish, s.text, s.problems)
	}
	if s.usage == nil || s.usage.CompletionTokens != 2 {
		t.Errorf("usage %+v, want the 2 tokens the client has", s.usage)
	}
	var j api.Job
	do(t, "GET", base+"/v1/jobs/"+s.job, nil, &j)
	if j.State != api.StateDone || j.Attempt != 2 || j.Hive == lost {
		t.Errorf("job %s, attempt %d on %s; want done on its second, away from %s", j.State, j.Attempt, j.Hive, lost)
	}
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `"path":"/v1/chat/completions"`); n != 1 {
		t.Errorf("the workers were asked %d times: want nothing generated again", n)
	}
}
