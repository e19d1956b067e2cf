package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

var idleScenario = scenario{
	name:  "idle",
	title: "what a queen and a hive cost doing nothing",
	how: func(c Config) string {
		return fmt.Sprintf("A fresh queen (embedded NATS, `--nats-listen`) and a hive (`--slots 4`) start; once `/readyz` "+
			"answers 200 and the queen lists the hive, both settle for %s, then VmRSS is read from /proc. "+
			"Idle CPU is utime+stime over the next %s, as a percentage of one core.", c.Settle, c.IdleFor)
	},
	cluster: func(Config) ClusterOptions { return ClusterOptions{Slots: 4} },
	metrics: []Metric{
		metric("queen_idle_mib", "queen idle RSS (MiB)", 1, le(40)),
		metric("hive_idle_mib", "hive idle RSS (MiB)", 1, le(25)),
		metric("queen_ready_ms", "queen start to /readyz 200 (ms)", 0, nil),
		metric("hive_ready_ms", "hive start to listed by queen (ms)", 0, nil),
		metric("queen_idle_cpu_pct", "queen idle CPU (% of a core)", 2, nil),
		metric("hive_idle_cpu_pct", "hive idle CPU (% of a core)", 2, nil),
	},
	run: func(ctx context.Context, e *Env) (*Run, error) {
		r := newRun()
		r.Set("queen_ready_ms", ms(e.Cluster.QueenReady))
		r.Set("hive_ready_ms", ms(e.Cluster.HiveReady))
		meter := NewMeter(map[string]int{"queen": e.Cluster.Queen.Pid, "hive": e.Cluster.Hive.Pid})
		if err := sleepCtx(ctx, e.Cfg.IdleFor); err != nil {
			return nil, err
		}
		u, wall := meter.Stop()
		r.Set("queen_idle_cpu_pct", 100*u["queen"].CPU.Seconds()/wall.Seconds())
		r.Set("hive_idle_cpu_pct", 100*u["hive"].CPU.Seconds()/wall.Seconds())
		r.Set("others_cpu_s", u[Others].CPU.Seconds())
		return r, nil
	},
}

var roundtripScenario = scenario{
	name:  "roundtrip",
	title: "one job, POST to end event",
	how: func(c Config) string {
		return fmt.Sprintf("Sequential: %d `hive_check` jobs with `events: 1`, one after another (after 20 unmeasured "+
			"warm-up jobs); each is timed from the start of `POST /v1/jobs` to the arrival of its `end` frame on "+
			"`GET /v1/jobs/<id>/stream`, opened as soon as the POST answers. The stream is then read to `[DONE]` and "+
			"verified. Open loop: a job every %s (%d jobs/s) for %s, each in its own goroutine, timed from its "+
			"scheduled start so a stalled bench cannot hide queueing. Hive `--slots %d`, so the open loop "+
			"measures the queen and NATS rather than a queue of jobs waiting for a slot. The sequential "+
			"round trip is split with the hive's own timestamps (the `time` of its `started` and `end` events; "+
			"one clock, one machine): POST → `started` is placement, dispatch and pickup; `started` → `end` is "+
			"the hive's work and its acknowledgements; `end` → frame is storing, the queen's tail and SSE.",
			c.RoundtripJobs, time.Second/time.Duration(c.Rate), c.Rate, c.RateFor, c.RoundtripSlots)
	},
	cluster: func(c Config) ClusterOptions { return ClusterOptions{Slots: c.RoundtripSlots} },
	metrics: append([]Metric{
		metric("seq_p50_ms", "sequential p50 (ms)", 2, le(2)),
		metric("seq_p99_ms", "sequential p99 (ms)", 2, nil),
		metric("seq_max_ms", "sequential max (ms)", 2, nil),
		metric("seq_mean_ms", "sequential mean (ms)", 2, nil),
		metric("seq_post_p50_ms", "…POST alone p50 (ms)", 2, nil),
		metric("seq_dispatch_p50_ms", "…POST start → hive `started` p50 (ms)", 2, nil),
		metric("seq_hive_p50_ms", "…hive `started` → hive `end` p50 (ms)", 2, nil),
		metric("seq_relay_p50_ms", "…hive `end` → `end` frame received p50 (ms)", 2, nil),
		metric("seq_jobs_per_s", "sequential jobs/s", 0, nil),
		metric("seq_queen_cpu_ms_per_job", "queen CPU per job (ms)", 3, nil),
		metric("seq_hive_cpu_ms_per_job", "hive CPU per job (ms)", 3, nil),
		metric("rate_p50_ms", "open loop p50 (ms)", 2, nil),
		metric("rate_p99_ms", "open loop p99 (ms)", 2, nil),
		metric("rate_max_ms", "open loop max (ms)", 2, nil),
		metric("rate_jobs_per_s", "open loop jobs/s achieved", 0, nil),
		metric("rate_max_inflight", "open loop most jobs in flight", 0, nil),
		metric("seq_queen_cpu_s", "queen CPU, sequential part (s)", 2, nil),
		metric("seq_hive_cpu_s", "hive CPU, sequential part (s)", 2, nil),
		metric("seq_bench_cpu_s", "bench CPU, sequential part (s)", 2, nil),
		metric("queen_peak_mib", "queen peak RSS (MiB)", 1, nil),
		metric("hive_peak_mib", "hive peak RSS (MiB)", 1, nil),
	}, verifyMetrics...),
	run: runRoundtrip,
}

func runRoundtrip(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	c := NewClient(e.Cluster.URL, 1024)
	defer c.Close()
	body := CheckBody(1, 0)

	warm := &Tally{}
	for i := 0; i < 20; i++ {
		if _, ok := roundtrip(ctx, c, body, 1, warm, time.Now(), nil); !ok && ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	r.Tally.Merge(warm)

	n := e.Cfg.RoundtripJobs
	lat := make([]time.Duration, 0, n)
	var post, dispatch, hive, relay []time.Duration
	meter := NewMeter(e.Cluster.Pids())
	t0 := time.Now()
	for i := 0; i < n; i++ {
		var ph phases
		d, ok := roundtrip(ctx, c, body, 1, r.Tally, time.Now(), &ph)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if ok {
			lat = append(lat, d)
			post = append(post, ph.posted.Sub(ph.start))
			if !ph.started.IsZero() && !ph.ended.IsZero() {
				dispatch = append(dispatch, ph.started.Sub(ph.start))
				hive = append(hive, ph.ended.Sub(ph.started))
				relay = append(relay, ph.received.Sub(ph.ended))
			}
		}
	}
	wall := time.Since(t0)
	u, _ := meter.Stop()
	r.SetUsage("seq_", u)
	r.Set("seq_jobs_per_s", float64(n)/wall.Seconds())
	r.Set("seq_queen_cpu_ms_per_job", ms(u["queen"].CPU)/float64(n))
	r.Set("seq_hive_cpu_ms_per_job", ms(u["hive"].CPU)/float64(n))
	r.latencyStats("seq_", lat)
	r.Set("seq_post_p50_ms", ms(Percentile(post, 0.5)))
	if len(dispatch) > 0 {
		r.Set("seq_dispatch_p50_ms", ms(Percentile(dispatch, 0.5)))
		r.Set("seq_hive_p50_ms", ms(Percentile(hive, 0.5)))
		r.Set("seq_relay_p50_ms", ms(Percentile(relay, 0.5)))
	}
	e.Logf("sequential: %d jobs in %s, p50 %.2f ms", n, wall.Round(time.Millisecond), r.Values["seq_p50_ms"])

	// Open loop: the schedule does not wait for answers.
	interval := time.Second / time.Duration(e.Cfg.Rate)
	total := int(e.Cfg.RateFor / interval)
	rate := make([]time.Duration, total)
	okAt := make([]bool, total)
	var inflight, most atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < total; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			if err := sleepCtx(ctx, d); err != nil {
				break
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := inflight.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			d, ok := roundtrip(ctx, c, body, 1, r.Tally, at, nil)
			inflight.Add(-1)
			rate[i], okAt[i] = d, ok
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	end := time.Since(start)
	var got []time.Duration
	for i, ok := range okAt {
		if ok {
			got = append(got, rate[i])
		}
	}
	r.latencyStats("rate_", got)
	r.Set("rate_jobs_per_s", float64(len(got))/end.Seconds())
	r.Set("rate_max_inflight", float64(most.Load()))
	e.Logf("open loop: %d jobs at %d/s, p50 %.2f ms p99 %.2f ms", total, e.Cfg.Rate, r.Values["rate_p50_ms"], r.Values["rate_p99_ms"])
	return r, nil
}

// phases are the moments of one round trip: the bench's clock for start,
// posted and received, the hive's event times for started and ended.
type phases struct {
	start, posted, started, ended, received time.Time
}

// roundtrip creates a hive_check job of events events, follows its stream
// to [DONE] and records the verdict. It returns the time from t0 to the end
// frame, and whether the job was whole; ph, when not nil, gets the phases.
func roundtrip(ctx context.Context, c *Client, body []byte, events int, t *Tally, t0 time.Time, ph *phases) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if ph != nil {
		ph.start = time.Now()
	}
	job, err := c.Create(ctx, body)
	if err != nil {
		if ctx.Err() == nil {
			t.Fail("(not created)", err)
		}
		return 0, false
	}
	if ph != nil {
		ph.posted = time.Now()
	}
	var end time.Time
	res := FollowJob(ctx, c, job, checkExpect(events), 4096, func(f Frame) error {
		if f.Kind == KindEnd && end.IsZero() {
			end = time.Now()
			if ph != nil {
				ph.received, ph.ended = end, TimeOf(f.Data)
			}
		}
		if ph != nil && ph.started.IsZero() && bytes.Contains(f.Data, []byte(`"action":"started"`)) {
			ph.started = TimeOf(f.Data)
		}
		return nil
	})
	t.Add(job.JobID, res)
	if end.IsZero() || !res.OK() {
		return 0, false
	}
	return end.Sub(t0), true
}

var sustainedScenario = scenario{
	name:  "sustained",
	title: "as many small jobs as one queen and one hive take",
	how: func(c Config) string {
		return fmt.Sprintf("%d submitters, each in a loop: `POST` a `hive_check` job with `events: 1`, read its "+
			"stream to `[DONE]`, verify it, repeat; for %s through one queen and one hive with `--slots %d`. "+
			"Jobs/s counts whole jobs only, over the time until the last one ended.",
			c.SustainedWorkers, c.SustainedFor, c.SustainedSlots)
	},
	cluster: func(c Config) ClusterOptions { return ClusterOptions{Slots: c.SustainedSlots} },
	metrics: append(append([]Metric{
		metric("jobs_per_s", "jobs/s", 0, ge(2000)),
		metric("jobs", "jobs completed", 0, nil),
		metric("lat_p50_ms", "job p50 (ms)", 2, nil),
		metric("lat_p99_ms", "job p99 (ms)", 2, nil),
		metric("lat_max_ms", "job max (ms)", 2, nil),
		metric("queen_cpu_ms_per_job", "queen CPU per job (ms)", 3, nil),
		metric("hive_cpu_ms_per_job", "hive CPU per job (ms)", 3, nil),
		metric("bench_cpu_ms_per_job", "bench CPU per job (ms)", 3, nil),
	}, perfMetrics("")...), verifyMetrics...),
	run: runSustained,
}

func runSustained(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	w := e.Cfg.SustainedWorkers
	c := NewClient(e.Cluster.URL, 4*w)
	defer c.Close()
	body := CheckBody(1, 0)
	lats := make([][]time.Duration, w)
	meter := NewMeter(e.Cluster.Pids())
	start := time.Now()
	deadline := start.Add(e.Cfg.SustainedFor)
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if d, ok := roundtrip(ctx, c, body, 1, r.Tally, time.Now(), nil); ok {
					lats[i] = append(lats[i], d)
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	wall := time.Since(start)
	u, _ := meter.Stop()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	n := float64(len(all))
	r.Set("jobs", n)
	r.Set("jobs_per_s", n/wall.Seconds())
	r.latencyStats("lat_", all)
	r.SetUsage("", u)
	if n > 0 {
		r.Set("queen_cpu_ms_per_job", ms(u["queen"].CPU)/n)
		r.Set("hive_cpu_ms_per_job", ms(u["hive"].CPU)/n)
		r.Set("bench_cpu_ms_per_job", ms(u["bench"].CPU)/n)
	}
	e.Logf("%d jobs in %s: %.0f jobs/s", len(all), wall.Round(time.Millisecond), n/wall.Seconds())
	return r, nil
}
