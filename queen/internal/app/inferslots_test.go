package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"rbee.dev/hive/agent"
	"rbee.dev/shared/api"
)

// workerStats is what the reference worker counts on GET /stats.
type workerStats struct {
	Requests   int64 `json:"requests"`
	Active     int64 `json:"active"`
	PeakActive int64 `json:"peak_active"`
}

func statsOf(t testing.TB, url string) workerStats {
	t.Helper()
	resp, err := http.Get(url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st workerStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A hive with one job slot, whose one worker serves two requests at once,
// is sent more generations than both: status, worker and model jobs sent
// meanwhile run while the generations still do, the worker never has more
// than two in hand, and every request waits its turn and completes.
func TestInferenceSlots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("demo model bytes ", 1000)))
	}))
	t.Cleanup(files.Close)
	// A slow reference worker: 20 tokens a second, two requests at once.
	catalog := filepath.Join(t.TempDir(), "hive.json")
	if err := os.WriteFile(catalog, []byte(`{"backends": [{"name": "slow", "kind": "reference", "parallel": 2,
		"command": ["rbee-worker", "--host", "{host}", "--port", "{port}", "--model", "{model}", "--model-id", "{model_id}", "--token-rate", "20"]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1", func(c *agent.Config) { c.Slots, c.ConfigFile = 1, catalog })
	for _, req := range []api.JobRequest{
		{Operation: api.OpModelDownload, Hive: "h1", Payload: &api.ModelDownload{Source: files.URL + "/demo.gguf"}},
		{Operation: api.OpWorkerSpawn, Hive: "h1", Payload: &api.WorkerSpawn{ModelID: "demo", Backend: "slow"}},
	} {
		frames, done, _ := sse(t, context.Background(), base, submit(t, base, req), 0, 0)
		if end := checkComplete(t, frames, done); end.State != api.StateDone {
			t.Fatalf("%s: %+v", req.Operation, end)
		}
	}
	var worker api.Worker
	waitFor(t, 10*time.Second, func() bool {
		var h api.Hive
		do(t, "GET", base+"/v1/hives/h1", nil, &h)
		if len(h.Workers) == 1 && h.Workers[0].State == api.WorkerReady {
			worker = h.Workers[0]
		}
		return worker.URL != "" && h.InferSlots > 0
	})
	if worker.Parallel != 2 {
		t.Fatalf("worker parallel %d, want 2", worker.Parallel)
	}

	// Six answers of 40 tokens, two at a time: three rounds of two seconds.
	const n = 6
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Chat.Completions.New(ctx, ask(40))
			if err == nil && resp.Usage.CompletionTokens != 40 {
				t.Errorf("answer of %d tokens", resp.Usage.CompletionTokens)
			}
			errs <- err
		}()
	}
	waitFor(t, 20*time.Second, func() bool { return statsOf(t, worker.URL).Active >= 2 })

	// The hive's one job slot is free for other work while it generates.
	for _, op := range []string{api.OpHiveStatus, api.OpWorkerList, api.OpModelList} {
		frames, done, _ := sse(t, ctx, base, submit(t, base, api.JobRequest{Operation: op, Hive: "h1"}), 0, 0)
		if end := checkComplete(t, frames, done); end.State != api.StateDone {
			t.Fatalf("%s: %+v", op, end)
		}
	}
	if st := statsOf(t, worker.URL); st.Active == 0 || st.Requests == n {
		t.Fatalf("the other jobs waited for the generations: worker %+v", st)
	}

	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if st := statsOf(t, worker.URL); st.Requests != n || st.PeakActive != 2 {
		t.Fatalf("worker %+v: want %d requests, at most 2 at once", st, n)
	}
}
