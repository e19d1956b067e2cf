package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

var queueScenario = scenario{
	name:  "queue",
	title: "the cluster's inference queue: one slot, two queens",
	how: func(c Config) string {
		return fmt.Sprintf("Both queens run with `--admin-key`: the usual one with its embedded NATS, and a second "+
			"`queen --nats-url` on the same NATS. The hive starts one reference worker (`rbee-worker --token-rate %g`) "+
			"with `max_concurrent: 1`, so it serves one request at a time and every other waits in the cluster's queue. "+
			"Two API keys (`POST /v1/keys`, scope infer, same priority) split %d clients: client i uses key i mod 2 and "+
			"queen ⌊i/2⌋ mod 2, so each key has clients on both queens. Each client loops streaming "+
			"`POST /v1/chat/completions` (`max_tokens: %d`) for %s. Handoff: the requests are ordered by the arrival "+
			"of their first content chunk (all times on the bench's one clock); for each one that was already sent "+
			"when the one before it ended, the time from that one's last data chunk (the usage chunk) to its own first "+
			"content chunk. It includes the worker's own time to its first token, measured alone beforehand (%d "+
			"sequential requests to its port). Fairness: Jain's index (Σx)²/(n·Σx²) over the completed requests/s of "+
			"each key (and, for reference, of each queen and each client) in the load window.",
			c.QueueTokenRate, c.QueueClients, c.QueueTokens, c.QueueFor, queueDirect)
	},
	cluster: func(c Config) ClusterOptions {
		return ClusterOptions{Slots: c.QueueClients + 4, AdminKey: randomKey(),
			HiveFlags: []string{"--config", inferCatalog(c, c.QueueTokenRate)}}
	},
	metrics: []Metric{
		metric("handoff_p50_ms", "handoff: slot free → next first token, p50 (ms)", 2, nil),
		metric("handoff_p99_ms", "handoff p99 (ms)", 2, le(20)),
		metric("handoff_max_ms", "handoff max (ms)", 2, nil),
		metric("handoffs", "handoffs measured", 0, nil),
		metric("direct_ttft_p50_ms", "worker alone: time to first token p50 (ms)", 2, nil),
		metric("direct_req_p50_ms", "worker alone: whole request p50 (ms)", 2, nil),
		metric("served_per_s", "requests served/s through the one slot", 1, nil),
		metric("slot_busy", "slot busy share (served/s × request alone)", 3, nil),
		metric("jain_keys", "fairness: Jain's index over the 2 keys", 4, ge(0.95)),
		metric("key_a_per_s", "key A: requests/s", 2, nil),
		metric("key_b_per_s", "key B: requests/s", 2, nil),
		metric("jain_queens", "Jain's index over the 2 queens", 4, nil),
		metric("jain_clients", "Jain's index over the clients", 4, nil),
		metric("worker_peak_active", "most requests the worker ran at once", 0, le(1)),
		metric("overlaps", "next first token before the last chunk (client's view)", 0, nil),
		metric("order_inversions", "served out of send order (sent ≥ 20 ms apart)", 0, nil),
		metric("queued_streams", "streams told a queue position", 0, nil),
		metric("position_rises", "streams whose told position went up", 0, zero()),
		metric("queue_failed", "requests that failed", 0, zero()),
		metric("queen_cpu_s", "first queen (with NATS) CPU (s)", 2, nil),
		metric("queen2_cpu_s", "second queen CPU (s)", 2, nil),
		metric("hive_cpu_s", "hive CPU (s)", 2, nil),
		metric("bench_cpu_s", "bench CPU (s)", 2, nil),
	},
	run: runQueue,
}

// queueDirect is the sequential requests that time the worker alone.
const queueDirect = 20

// randomKey is a fresh admin key for one run's queens.
func randomKey() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "bench-" + hex.EncodeToString(b)
}

// queuedReq is one request of the queue scenario's load.
type queuedReq struct {
	client, key, queen int
	chatTrace
}

func runQueue(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	cl := e.Cluster
	admin := NewClient(cl.URL, 2*e.Cfg.QueueClients+4).WithKey(cl.AdminKey)
	defer admin.Close()
	worker, err := startInferWorker(ctx, e, admin, 1)
	if err != nil {
		return nil, err
	}
	if worker.Parallel != 1 {
		return nil, fmt.Errorf("worker %s takes %d requests at once, not the 1 asked for", worker.WorkerID, worker.Parallel)
	}
	direct := fmt.Sprintf("http://127.0.0.1:%d", worker.Port)
	e.Logf("worker %s on port %d, max_concurrent 1", worker.WorkerID, worker.Port)

	q2, url2, err := startExtraQueen(ctx, e, 2)
	if err != nil {
		return nil, err
	}
	defer q2.Stop(5 * time.Second)
	var keys []string
	for _, name := range []string{"bench-a", "bench-b"} {
		var k api.Key
		if err := admin.postJSON(ctx, "/v1/keys", api.KeyRequest{Name: name, Scopes: []string{api.ScopeInfer}}, &k); err != nil {
			return nil, fmt.Errorf("create key %s: %w", name, err)
		}
		keys = append(keys, k.Key)
	}
	// The second queen must know the keys and see the worker ready, or it
	// would refuse the requests or start a worker of its own.
	for _, k := range keys {
		if err := waitOK(ctx, url2+"/v1/models/"+inferModel, k, q2, 30*time.Second); err != nil {
			return nil, fmt.Errorf("second queen: %w", err)
		}
	}
	if err := waitWorker(ctx, NewClient(url2, 1).WithKey(cl.AdminKey), worker.WorkerID); err != nil {
		return nil, fmt.Errorf("second queen: %w", err)
	}

	body := chatBody(e.Cfg.QueueTokens)
	var alone, aloneTTFT []time.Duration
	for range queueDirect {
		t, err := admin.chatTrace(ctx, direct+"/v1/chat/completions", body)
		if err != nil {
			return nil, fmt.Errorf("worker alone: %w", err)
		}
		alone, aloneTTFT = append(alone, t.Done.Sub(t.Sent)), append(aloneTTFT, t.First.Sub(t.Sent))
	}
	reqAlone := Percentile(alone, 0.5)
	r.Set("direct_req_p50_ms", ms(reqAlone))
	r.Set("direct_ttft_p50_ms", ms(Percentile(aloneTTFT, 0.5)))

	meter := NewMeter(map[string]int{"queen": cl.Queen.Pid, "queen2": q2.Pid, "hive": cl.Hive.Pid, "bench": 0})
	start := time.Now()
	deadline := start.Add(e.Cfg.QueueFor)
	reqs, failed, problems := queueLoad(ctx, e.Cfg, admin, []string{cl.URL, url2}, keys, body, deadline)
	u, _ := meter.Stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, p := range problems {
		r.Note("%s", p)
	}
	r.Set("queue_failed", float64(failed))
	for _, name := range []string{"queen", "queen2", "hive", "bench"} {
		r.Set(name+"_cpu_s", u[name].CPU.Seconds())
	}
	r.Set("others_cpu_s", u[Others].CPU.Seconds())

	spans := make([]Span, len(reqs))
	for i, q := range reqs {
		spans[i] = Span{Sent: q.Sent, First: q.First, Last: q.Last}
	}
	gaps, overlaps := Handoffs(spans)
	r.latencyStats("handoff_", gaps)
	r.Set("handoffs", float64(len(gaps)))
	r.Set("overlaps", float64(overlaps))
	r.Set("order_inversions", float64(inversions(reqs, 20*time.Millisecond)))

	window := deadline.Sub(start).Seconds()
	perKey, perQueen, perClient := make([]float64, 2), make([]float64, 2), make([]float64, e.Cfg.QueueClients)
	served, told, rises := 0, 0, 0
	for _, q := range reqs {
		if len(q.Positions) > 0 {
			told++
		}
		for i := 1; i < len(q.Positions); i++ {
			if q.Positions[i] > q.Positions[i-1] {
				rises++
				break
			}
		}
		if q.Done.After(deadline) {
			continue
		}
		served++
		perKey[q.key] += 1 / window
		perQueen[q.queen] += 1 / window
		perClient[q.client] += 1 / window
	}
	r.Set("served_per_s", float64(served)/window)
	r.Set("slot_busy", float64(served)/window*reqAlone.Seconds())
	r.Set("key_a_per_s", perKey[0])
	r.Set("key_b_per_s", perKey[1])
	r.Set("jain_keys", Jain(perKey))
	r.Set("jain_queens", Jain(perQueen))
	r.Set("jain_clients", Jain(perClient))
	r.Set("queued_streams", float64(told))
	r.Set("position_rises", float64(rises))

	var stats struct {
		PeakActive int64 `json:"peak_active"`
	}
	if err := NewClient(direct, 1).getJSON(ctx, "/stats", &stats); err != nil {
		return nil, fmt.Errorf("worker stats: %w", err)
	}
	r.Set("worker_peak_active", float64(stats.PeakActive))
	if e.Cfg.Verbose {
		logSlowest(ctx, e, admin, reqs)
	}
	e.Logf("%d served (%.1f/s), handoff p50 %.2f ms p99 %.2f ms, Jain over keys %.4f, %d failed",
		served, r.Values["served_per_s"], r.Values["handoff_p50_ms"], r.Values["handoff_p99_ms"], r.Values["jain_keys"], failed)
	return r, nil
}

// queueLoad runs the clients until deadline and returns every request that
// completed, how many failed and the first few failures.
func queueLoad(ctx context.Context, cfg Config, c *Client, urls, keys []string, body []byte, deadline time.Time) ([]queuedReq, int, []string) {
	var mu sync.Mutex
	var reqs []queuedReq
	var problems []string
	failed := 0
	var wg sync.WaitGroup
	for i := range cfg.QueueClients {
		key, queen := i%len(keys), (i/len(keys))%len(urls)
		kc := c.WithKey(keys[key])
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t, err := kc.chatTrace(ctx, urls[queen]+"/v1/chat/completions", body)
				mu.Lock()
				if err != nil {
					failed++
					if len(problems) < 5 {
						problems = append(problems, fmt.Sprintf("client %d on queen %d: %v", i, queen+1, err))
					}
				} else {
					reqs = append(reqs, queuedReq{client: i, key: key, queen: queen, chatTrace: t})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return reqs, failed, problems
}

// Span is when one served request was sent, and when its first content
// chunk and its last data chunk arrived.
type Span struct{ Sent, First, Last time.Time }

// Handoffs orders the requests one slot served by their first token and
// returns, for each that was already sent when the one before it ended,
// the time from that end (its last chunk) to its own first token. A first
// token before the previous one's last chunk is counted in overlaps and
// not as a handoff: either the slot ran two at once, or the previous
// stream's end reached the bench late.
func Handoffs(spans []Span) (gaps []time.Duration, overlaps int) {
	s := slices.Clone(spans)
	slices.SortFunc(s, func(a, b Span) int { return a.First.Compare(b.First) })
	for k := 1; k < len(s); k++ {
		prev, next := s[k-1], s[k]
		if next.Sent.After(prev.Last) {
			continue // it did not wait: the slot was idle
		}
		if d := next.First.Sub(prev.Last); d < 0 {
			overlaps++
		} else {
			gaps = append(gaps, d)
		}
	}
	return gaps, overlaps
}

// Jain is Jain's fairness index (Σx)²/(n·Σx²) of xs: 1 when all are equal,
// 1/n when one has everything; 0 for none or all zero.
func Jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sq)
}

// inversions counts pairs served against the order they were sent in,
// among those sent at least margin apart: how far the queue strays from
// first come, first served, seen from the clients.
func inversions(reqs []queuedReq, margin time.Duration) int {
	n := 0
	for _, a := range reqs {
		for _, b := range reqs {
			if b.Sent.Sub(a.Sent) >= margin && b.First.Before(a.First) {
				n++
			}
		}
	}
	return n
}

// waitWorker waits until the queen c speaks to lists worker ready.
func waitWorker(ctx context.Context, c *Client, id string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var h api.Hive
		if err := c.getJSON(ctx, "/v1/hives/"+HiveID, &h); err == nil {
			for _, w := range h.Workers {
				if w.WorkerID == id && w.State == api.WorkerReady {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("worker %s not listed ready after 30s", id)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// logSlowest logs, for the slowest handoff, the narration of the request
// that freed the slot and of the next one, each event's time from the
// freeing request's last chunk reaching the bench: where the time went.
func logSlowest(ctx context.Context, e *Env, c *Client, reqs []queuedReq) {
	s := slices.Clone(reqs)
	slices.SortFunc(s, func(a, b queuedReq) int { return a.First.Compare(b.First) })
	worst, k := time.Duration(-1), 0
	for i := 1; i < len(s); i++ {
		if d := s[i].First.Sub(s[i-1].Last); !s[i].Sent.After(s[i-1].Last) && d > worst {
			worst, k = d, i
		}
	}
	if k == 0 {
		return
	}
	t0 := s[k-1].Last
	e.Logf("slowest handoff %.2f ms: job %s (queen %d) ended, job %s (queen %d) next", ms(worst),
		s[k-1].Job, s[k-1].queen+1, s[k].Job, s[k].queen+1)
	for _, q := range s[k-1 : k+1] {
		st, err := c.Open(ctx, "/v1/jobs/"+q.Job+"/stream", 0, false, 1<<16)
		if err != nil {
			e.Logf("  %s: %v", q.Job, err)
			continue
		}
		tokens := 0
		for {
			f, err := st.Next()
			if err != nil || f.Done {
				break
			}
			var ev api.Event
			if json.Unmarshal(f.Data, &ev) != nil {
				continue
			}
			if ev.Action == api.ActionChunk {
				if tokens++; tokens > 1 {
					continue
				}
			}
			e.Logf("  %s %+8.2f ms  a%d %s %s %s %s", q.Job[len(q.Job)-6:], ms(ev.Time.Sub(t0)), ev.Attempt, ev.Actor, ev.Action, ev.State, ev.Message)
		}
		_ = st.Close()
	}
	e.Logf("  bench: first token %+.2f ms", ms(worst))
}
