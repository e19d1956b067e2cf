package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// inferModel is the model id the infer scenario downloads and serves.
const inferModel = "bench-model"

var inferScenario = scenario{
	name:  "infer",
	title: "inference through the queen against the same worker called directly",
	how: func(c Config) string {
		return fmt.Sprintf("The hive downloads a small file from a local HTTP server as model `%s` (`model_download`) and "+
			"starts one reference worker for it (`worker_spawn`, `rbee-worker --token-rate %g`, i.e. %g tokens/s per stream, "+
			"about what a fast GPU streams). Then, for %d and for %d concurrent clients, each client loops streaming "+
			"`POST /v1/chat/completions` (`max_tokens: %d`) for %s, first against the worker's own port (the baseline), "+
			"then against the queen, which makes each request an `infer` job, sends it over NATS to the hive, and turns "+
			"the narrated tokens back into OpenAI chunks. Throughput is completion tokens (from each stream's usage chunk) per "+
			"second over all clients; time to first token is from sending the request to the first content chunk.",
			inferModel, c.InferTokenRate, c.InferTokenRate, 1, c.InferClients, c.InferTokens, c.InferFor)
	},
	cluster: func(c Config) ClusterOptions {
		return ClusterOptions{Slots: c.InferClients + 8, HiveFlags: []string{"--config", inferCatalog(c, c.InferTokenRate)}}
	},
	metrics: []Metric{
		metric("c1_direct_tps", "1 stream: direct tokens/s", 0, nil),
		metric("c1_queen_tps", "1 stream: through the queen tokens/s", 0, nil),
		metric("c1_tps_ratio", "1 stream: queen / direct throughput", 3, ge(0.9)),
		metric("c1_direct_ttft_p50_ms", "1 stream: direct TTFT p50 (ms)", 2, nil),
		metric("c1_queen_ttft_p50_ms", "1 stream: queen TTFT p50 (ms)", 2, nil),
		metric("c1_added_ttft_ms", "1 stream: TTFT added by the queen, p50 (ms)", 2, le(2)),
		metric("cn_direct_tps", "N streams: direct tokens/s", 0, nil),
		metric("cn_queen_tps", "N streams: through the queen tokens/s", 0, nil),
		metric("cn_tps_ratio", "N streams: queen / direct throughput", 3, ge(0.9)),
		metric("cn_direct_ttft_p50_ms", "N streams: direct TTFT p50 (ms)", 2, nil),
		metric("cn_queen_ttft_p50_ms", "N streams: queen TTFT p50 (ms)", 2, nil),
		metric("cn_queen_ttft_p99_ms", "N streams: queen TTFT p99 (ms)", 2, nil),
		metric("cn_added_ttft_ms", "N streams: TTFT added by the queen, p50 (ms)", 2, le(2)),
		metric("idle_rtt_p50_ms", "baseline: one HTTP round trip to the queen after 20 ms idle, p50 (ms)", 2, nil),
		metric("busy_rtt_p50_ms", "baseline: one HTTP round trip to the queen back to back, p50 (ms)", 3, nil),
		metric("infer_failed", "requests that failed", 0, zero()),
		metric("cn_queen_cpu_s", "queen CPU, N streams through the queen (s)", 2, nil),
		metric("cn_hive_cpu_s", "hive CPU, N streams through the queen (s)", 2, nil),
		metric("queen_peak_mib", "queen peak RSS (MiB)", 1, nil),
		metric("hive_peak_mib", "hive peak RSS (MiB)", 1, nil),
	},
	run: runInfer,
}

// inferCatalog writes the hive config whose reference worker streams rate
// tokens/s per request, and returns its path.
func inferCatalog(c Config, rate float64) string {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("rbee-bench-infer-%d-%g.json", os.Getpid(), rate))
	cfg := map[string]any{"backends": []map[string]any{{
		"name": "reference", "kind": "reference",
		// Every client's stream at once, as the direct baseline has them.
		"parallel": -1,
		"command": []string{filepath.Join(c.Bin, "rbee-worker"), "--host", "{host}", "--port", "{port}", "--model", "{model}",
			"--model-id", "{model_id}", "--ctx-size", "{ctx}", "--token-rate", strconv.FormatFloat(rate, 'g', -1, 64)},
	}}}
	data, _ := json.Marshal(cfg)
	_ = os.WriteFile(path, data, 0o644)
	return path
}

func runInfer(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	c := NewClient(e.Cluster.URL, 1024)
	defer c.Close()
	worker, err := startInferWorker(ctx, e, c, 0)
	if err != nil {
		return nil, err
	}
	e.Logf("worker %s on port %d", worker.WorkerID, worker.Port)
	direct := fmt.Sprintf("http://127.0.0.1:%d", worker.Port)
	// What one hop between processes costs on this machine when it has
	// been idle, as between a sparse client's requests, and when busy. A
	// first token through the queen crosses six one-way hops between
	// processes (client, queen, hive, worker and back) where the direct
	// call crosses two: two round trips more.
	idle, busy := roundTrips(ctx, c, e.Cluster.URL+"/healthz")
	r.Set("idle_rtt_p50_ms", ms(idle))
	r.Set("busy_rtt_p50_ms", ms(busy))
	failed := 0
	for _, n := range []struct {
		prefix  string
		clients int
	}{{"c1_", 1}, {"cn_", e.Cfg.InferClients}} {
		d := chatLoad(ctx, c, direct, n.clients, e.Cfg)
		meter := NewMeter(e.Cluster.Pids())
		q := chatLoad(ctx, c, e.Cluster.URL, n.clients, e.Cfg)
		u, _ := meter.Stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		failed += d.failed + q.failed
		for _, p := range q.problems {
			r.Note("%s", p)
		}
		r.Set(n.prefix+"direct_tps", d.tps())
		r.Set(n.prefix+"queen_tps", q.tps())
		if d.tps() > 0 {
			r.Set(n.prefix+"tps_ratio", q.tps()/d.tps())
		}
		dp, qp := Percentile(d.ttft, 0.5), Percentile(q.ttft, 0.5)
		r.Set(n.prefix+"direct_ttft_p50_ms", ms(dp))
		r.Set(n.prefix+"queen_ttft_p50_ms", ms(qp))
		r.Set(n.prefix+"queen_ttft_p99_ms", ms(Percentile(q.ttft, 0.99)))
		r.Set(n.prefix+"added_ttft_ms", ms(qp-dp))
		if n.prefix == "cn_" {
			r.Set("cn_queen_cpu_s", u["queen"].CPU.Seconds())
			r.Set("cn_hive_cpu_s", u["hive"].CPU.Seconds())
			r.Set("cn_others_cpu_s", u[Others].CPU.Seconds())
		}
	}
	r.Set("infer_failed", float64(failed))
	return r, nil
}

// startInferWorker downloads the bench model onto the hive and starts a
// worker for it that takes maxConcurrent requests at once (0: the
// backend's), and returns the worker as the hive reports it.
func startInferWorker(ctx context.Context, e *Env, c *Client, maxConcurrent int) (api.Worker, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return api.Worker{}, err
	}
	files := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("rbee bench model "), 4096))
	})}
	go func() { _ = files.Serve(ln) }()
	defer files.Close()

	for _, req := range []api.JobRequest{
		{Operation: api.OpModelDownload, Hive: HiveID, Payload: &api.ModelDownload{Source: "http://" + ln.Addr().String() + "/" + inferModel + ".gguf", ModelID: inferModel}},
		{Operation: api.OpWorkerSpawn, Hive: HiveID, Payload: &api.WorkerSpawn{ModelID: inferModel, Backend: "reference", MaxConcurrent: maxConcurrent}},
	} {
		body, _ := json.Marshal(req)
		job, err := c.Create(ctx, body)
		if err != nil {
			return api.Worker{}, fmt.Errorf("%s: %w", req.Operation, err)
		}
		if res := FollowJob(ctx, c, job, 0, 0, nil); !res.OK() || res.State != api.StateDone {
			return api.Worker{}, fmt.Errorf("%s job %s ended %q: %v", req.Operation, job.JobID, res.State, res.Problems)
		}
	}
	// The queen routes to workers the hive's heartbeat reports ready.
	for ctx.Err() == nil {
		var h api.Hive
		if err := c.getJSON(ctx, "/v1/hives/"+HiveID, &h); err == nil {
			for _, w := range h.Workers {
				if w.ModelID == inferModel && w.State == api.WorkerReady {
					return w, nil
				}
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return api.Worker{}, err
		}
	}
	return api.Worker{}, ctx.Err()
}

// chatResult is what one load phase measured.
type chatResult struct {
	tokens   int
	elapsed  time.Duration
	ttft     []time.Duration
	failed   int
	problems []string
}

func (r chatResult) tps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.tokens) / r.elapsed.Seconds()
}

// chatLoad runs clients loops of streaming chat completions against base
// for the configured time.
func chatLoad(ctx context.Context, c *Client, base string, clients int, cfg Config) chatResult {
	body := chatBody(cfg.InferTokens)
	var mu sync.Mutex
	var res chatResult
	stop := time.Now().Add(cfg.InferFor)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				tokens, ttft, err := c.chat(ctx, base+"/v1/chat/completions", body)
				mu.Lock()
				if err != nil {
					res.failed++
					if len(res.problems) < 5 {
						res.problems = append(res.problems, fmt.Sprintf("%s: %v", base, err))
					}
				} else {
					res.tokens += tokens
					res.ttft = append(res.ttft, ttft)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// roundTrips times GET url, a route that does next to nothing: the p50 of
// 100 requests each after 20 ms of quiet, then of 1,000 back to back.
func roundTrips(ctx context.Context, c *Client, url string) (idle, busy time.Duration) {
	one := func() (time.Duration, bool) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, false
		}
		t := time.Now()
		resp, err := c.hc.Do(req)
		if err != nil {
			return 0, false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return time.Since(t), resp.StatusCode == http.StatusOK
	}
	var quiet, loaded []time.Duration
	for range 100 {
		if sleepCtx(ctx, 20*time.Millisecond) != nil {
			return 0, 0
		}
		if d, ok := one(); ok {
			quiet = append(quiet, d)
		}
	}
	for range 1000 {
		if d, ok := one(); ok {
			loaded = append(loaded, d)
		}
	}
	return Percentile(quiet, 0.5), Percentile(loaded, 0.5)
}

// chatBody is a streaming chat completion of the bench model of at most
// tokens tokens, with a usage chunk.
func chatBody(tokens int) []byte {
	body, _ := json.Marshal(map[string]any{
		"model": inferModel, "stream": true, "max_tokens": tokens, "stream_options": map[string]bool{"include_usage": true},
		"messages": []map[string]string{{"role": "user", "content": "tell me about bees"}},
	})
	return body
}

// chat sends one streaming chat completion and returns the completion
// tokens its usage chunk reports and the time to its first content chunk.
func (c *Client) chat(ctx context.Context, url string, body []byte) (tokens int, ttft time.Duration, err error) {
	t, err := c.chatTrace(ctx, url, body)
	if err != nil {
		return 0, 0, err
	}
	return t.Tokens, t.First.Sub(t.Sent), nil
}

// chatTrace is when each part of one streamed chat completion arrived,
// all read from the bench's one monotonic clock, and what it said.
type chatTrace struct {
	// Job is the queen's job id of the request (X-Rbee-Job), if any.
	Job   string
	Sent  time.Time // the request went out
	First time.Time // the first content chunk arrived
	Last  time.Time // the last data chunk before [DONE] (content or usage) arrived
	Done  time.Time // [DONE] arrived
	// Tokens is the completion tokens of the usage chunk.
	Tokens int
	// Positions are the queue positions of the `: queued position=N`
	// comments, in the order they came.
	Positions []int
}

// chatTrace sends one streaming chat completion and times its parts. A
// stream without content, usage or [DONE] is an error.
func (c *Client) chatTrace(ctx context.Context, url string, body []byte) (t chatTrace, err error) {
	t.Sent = time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return t, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return t, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	t.Job = resp.Header.Get("X-Rbee-Job")
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if pos, ok := queuedPosition(sc.Bytes()); ok {
			t.Positions = append(t.Positions, pos)
			continue
		}
		line, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		now := time.Now()
		if string(line) == api.SSEDone {
			t.Done = now
			if t.Tokens == 0 || t.First.IsZero() {
				return t, fmt.Errorf("no content or no usage before [DONE]")
			}
			return t, nil
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(line, &chunk) != nil {
			continue
		}
		t.Last = now
		if t.First.IsZero() && len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			t.First = now
		}
		if chunk.Usage != nil {
			t.Tokens = chunk.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		return t, err
	}
	return t, fmt.Errorf("stream ended without [DONE]")
}

// queuedPosition reads the position of a `: queued position=N eta_ms=M`
// comment line.
func queuedPosition(line []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(": queued position="))
	if !ok {
		return 0, false
	}
	if i := bytes.IndexByte(rest, ' '); i >= 0 {
		rest = rest[:i]
	}
	n, err := strconv.Atoi(string(rest))
	return n, err == nil
}
