package app_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/queen/internal/cli"
	"rbee.dev/shared/api"
)

// queuedStream is what one streaming client saw: the places the queue
// told it, when its first token came, and how it ended.
type queuedStream struct {
	job       string
	status    int
	places    []int
	etas      []int
	first     time.Time
	done      bool
	errorBody string
}

// streamChat sends a streaming chat request of max tokens to base and
// reads the answer to its end.
func streamChat(ctx context.Context, base string, max int) queuedStream {
	var s queuedStream
	body := fmt.Sprintf(`{"model":"demo","stream":true,"max_tokens":%d,"messages":[{"role":"user","content":"tell me about bees"}]}`, max)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.errorBody = err.Error()
		return s
	}
	defer resp.Body.Close()
	s.status, s.job = resp.StatusCode, resp.Header.Get("X-Rbee-Job")
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		var pos, eta int
		switch {
		case strings.HasPrefix(line, ": queued "):
			if _, err := fmt.Sscanf(line, ": queued position=%d eta_ms=%d", &pos, &eta); err == nil {
				s.places, s.etas = append(s.places, pos), append(s.etas, eta)
			}
		case line == "data: [DONE]":
			s.done = true
		case strings.HasPrefix(line, "data: "):
			if strings.Contains(line, `"error"`) {
				s.errorBody = line
			}
			if s.first.IsZero() {
				s.first = time.Now()
			}
		}
	}
	return s
}

// streamMany sends n streaming chat requests of max tokens to queens in
// turn, gap apart, and fails the test unless every one completes.
func streamMany(t *testing.T, ctx context.Context, queens []string, n, max int, gap time.Duration) []queuedStream {
	t.Helper()
	streams := make([]queuedStream, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); streams[i] = streamChat(ctx, queens[i%len(queens)], max) }()
		time.Sleep(gap)
	}
	wg.Wait()
	for i, s := range streams {
		if s.status != 200 || !s.done || s.errorBody != "" || s.first.IsZero() {
			t.Fatalf("request %d: status %d, done %v, error %q", i, s.status, s.done, s.errorBody)
		}
	}
	return streams
}

// Two queens share one hive whose one worker takes one request at a time.
// Twenty streaming requests sent to both in turn all complete, served in
// the order they arrived; each waiting stream is told its place as it
// changes, never higher, down to 1; and a third queen with a queue depth
// of 3 refuses a request while three wait, though it took none of them.
func TestClusterInferenceQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	ns := mustNATS(t)
	q1, _ := mustQueen(t, ns.ClientURL())
	q2, _ := mustQueen(t, ns.ClientURL())
	oneSlotWorker(t, q1, ns.ClientURL(), 100)
	for _, q := range []string{q1, q2} {
		waitFor(t, 10*time.Second, func() bool {
			var h api.Hive
			do(t, "GET", q+"/v1/hives/h1", nil, &h)
			return len(h.Workers) == 1 && h.Workers[0].State == api.WorkerReady && h.Workers[0].Parallel == 1
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 20
	// Far enough apart that the order of arrival is the order sent.
	streams := streamMany(t, ctx, []string{q1, q2}, n, 8, 40*time.Millisecond)
	waited := 0
	for i, s := range streams {
		if i > 0 && !s.first.After(streams[i-1].first) {
			t.Errorf("request %d's first token came before request %d's: not served in arrival order", i, i-1)
		}
		if len(s.places) == 0 {
			continue
		}
		waited++
		if !slices.IsSortedFunc(s.places, func(a, b int) int { return b - a }) || s.places[len(s.places)-1] != 1 {
			t.Errorf("request %d was told places %v: want them never rising, down to 1", i, s.places)
		}
	}
	if last := streams[n-1]; len(last.etas) == 0 || last.etas[0] <= 0 {
		t.Errorf("the last request's first estimate %v: want a wait estimated from the pace of those before", last.etas)
	}
	if waited < n/2 {
		t.Fatalf("only %d of %d requests waited in the queue; the test did not fill it", waited, n)
	}
	t.Logf("%d of %d requests waited; places told to the last: %v", waited, n, streams[n-1].places)

	// The queue's depth is the cluster's: q3 took none of the waiting
	// requests, yet refuses once three wait.
	q3, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.Infer.QueueDepth = 3 })
	busy, stop := context.WithCancel(ctx)
	defer stop()
	go streamChat(busy, q1, 400)
	waitFor(t, 20*time.Second, func() bool {
		var list api.JobList
		do(t, "GET", q3+"/v1/jobs?state=running", nil, &list)
		return len(list.Jobs) == 1
	})
	for i := range 3 {
		go streamChat(busy, []string{q1, q2}[i%2], 8)
	}
	waitFor(t, 20*time.Second, func() bool {
		var list api.JobList
		do(t, "GET", q3+"/v1/jobs?state=queued", nil, &list)
		return len(list.Jobs) == 3
	})
	// Every queen lists the same queue.
	for _, q := range []string{q1, q3} {
		var ql api.QueueList
		do(t, "GET", q+"/v1/queue", nil, &ql)
		if len(ql.Queues) != 1 || ql.Queues[0].Model != "demo" || ql.Queues[0].Capacity != 1 || ql.Queues[0].Running != 1 || len(ql.Queues[0].Waiting) != 3 {
			t.Fatalf("queue on %s: %+v", q, ql)
		}
		for i, w := range ql.Queues[0].Waiting {
			if w.Position != i+1 || w.JobID == "" {
				t.Fatalf("queue on %s: waiting %d is %+v", q, i, w)
			}
		}
	}
	// rbee queue prints it.
	var out, errb bytes.Buffer
	if code := cli.Run(ctx, []string{"queue"}, func(k string) string { return map[string]string{"RBEE_QUEEN": q2}[k] }, strings.NewReader(""), &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "demo") || strings.Count(out.String(), "\n") != 5 {
		t.Fatalf("rbee queue: %d\n%s%s", code, out.String(), errb.String())
	}
	refused := streamChat(ctx, q3, 8)
	if refused.status != http.StatusTooManyRequests {
		t.Fatalf("q3 answered %d with three requests waiting, want 429", refused.status)
	}

}

// Requests for a model with no worker reach two queens at once: one
// worker is started for the cluster, and every request is served by it.
func TestOneWorkerStartForTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	q1, q2 := twoQueensOneModel(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	streamMany(t, ctx, []string{q1, q2}, 6, 4, 0)
	var spawns api.JobList
	do(t, "GET", q1+"/v1/jobs?operation=worker_spawn", nil, &spawns)
	var h api.Hive
	do(t, "GET", q1+"/v1/hives/h1", nil, &h)
	if len(spawns.Jobs) != 1 || len(h.Workers) != 1 {
		t.Fatalf("%d worker_spawn jobs and %d workers for two queens' requests, want one of each", len(spawns.Jobs), len(h.Workers))
	}
}

// A worker start that fails, asked for by requests on two queens, fails
// them all at once: the queen that lost the claim to start it does not
// wait out the spawn timeout for a worker that will not come.
func TestFailedWorkerStartFailsEveryQueen(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hives")
	}
	q1, q2 := twoQueensOneModel(t, func(c *app.Config) { c.Infer.Backend = "no-such-backend" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	answers := make(chan queuedStream, 4)
	for i := range 4 {
		go func() { answers <- streamChat(ctx, []string{q1, q2}[i%2], 4) }()
	}
	for range 4 {
		if a := <-answers; a.status != http.StatusServiceUnavailable {
			t.Errorf("answer %d (%s), want 503 at once", a.status, a.errorBody)
		}
	}
}

// Requests that come together count together against the queue's depth:
// with the worker busy and a depth of two, two of six requests sent at
// once wait and four are refused, though all six read the queue empty.
func TestQueueDepthCountsRequestsTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	ns := mustNATS(t)
	q, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.Infer.QueueDepth = 2 })
	// Two tokens a second: an answer of at least eight tokens holds the
	// one place for seconds.
	oneSlotWorker(t, q, ns.ClientURL(), 2)
	waitFor(t, 10*time.Second, func() bool {
		var h api.Hive
		do(t, "GET", q+"/v1/hives/h1", nil, &h)
		return len(h.Workers) == 1 && h.Workers[0].State == api.WorkerReady
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel() // the streams' clients leave: their jobs are cancelled
	go streamChat(ctx, q, 64)
	waitFor(t, 10*time.Second, func() bool {
		var list api.JobList
		do(t, "GET", q+"/v1/jobs?operation=infer&state=running", nil, &list)
		return len(list.Jobs) == 1
	})
	answers := make(chan int, 6)
	for range 6 {
		go func() { answers <- streamChat(ctx, q, 8).status }()
	}
	for range 4 {
		select {
		case code := <-answers:
			if code != http.StatusTooManyRequests {
				t.Fatalf("a request past the queue's depth was answered %d, want 429", code)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("fewer than four of six requests refused: the queue took more than its depth")
		}
	}
	waitFor(t, 5*time.Second, func() bool {
		var list api.JobList
		do(t, "GET", q+"/v1/jobs?operation=infer&state=queued", nil, &list)
		return len(list.Jobs) == 2
	})
	select {
	case code := <-answers:
		t.Fatalf("a fifth answer (%d) while two wait behind a busy worker", code)
	case <-time.After(300 * time.Millisecond):
	}
}

// oneSlotWorker starts hive h1 with model demo and one worker for it that
// serves one request at a time at rate tokens a second.
func oneSlotWorker(t *testing.T, q, natsURL string, rate int) {
	t.Helper()
	catalog := filepath.Join(t.TempDir(), "hive.json")
	if err := os.WriteFile(catalog, []byte(`{"backends": [{"name": "slow", "kind": "reference",
		"command": ["rbee-worker", "--host", "{host}", "--port", "{port}", "--model", "{model}", "--model-id", "{model_id}", "--token-rate", "`+strconv.Itoa(rate)+`"]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	mustHive(t, q, natsURL, "h1", func(c *agent.Config) { c.ConfigFile = catalog })
	downloadDemo(t, q, "h1")
	spawn := submit(t, q, api.JobRequest{Operation: api.OpWorkerSpawn, Hive: "h1", Payload: &api.WorkerSpawn{ModelID: "demo", Backend: "slow", MaxConcurrent: 1}})
	if frames, done, _ := sse(t, context.Background(), q, spawn, 0, 0); checkComplete(t, frames, done).State != api.StateDone {
		t.Fatal("worker spawn failed")
	}
}

// twoQueensOneModel starts two queens configured by edit and a hive h1
// holding model demo, with no worker, and waits until both queens list it.
func twoQueensOneModel(t *testing.T, edit ...func(*app.Config)) (q1, q2 string) {
	t.Helper()
	ns := mustNATS(t)
	q1, _ = mustQueen(t, ns.ClientURL(), edit...)
	q2, _ = mustQueen(t, ns.ClientURL(), edit...)
	mustHive(t, q1, ns.ClientURL(), "h1")
	downloadDemo(t, q1, "h1")
	waitFor(t, 10*time.Second, func() bool {
		var ml api.ModelEntryList
		do(t, "GET", q2+"/v1/models", nil, &ml)
		return len(ml.Data) > 0
	})
	return q1, q2
}
