package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"rbee.dev/shared/api"
)

var fanoutScenario = scenario{
	name:  "fanout",
	title: "many SSE clients per job",
	how: func(c Config) string {
		return fmt.Sprintf("The hive (`--slots %d --allow-run`) is first filled with %d blocker jobs "+
			"(`run` `sleep 120`), so that the %d `hive_check` jobs (`events: %d`) created next all stay queued. "+
			"Then %d SSE clients per job connect, at most %d connecting at a time; a client counts as connected "+
			"when it has received the job's first event (so the queen has subscribed it). With all %d connected "+
			"and idle, the queen's VmRSS is read; KiB per client = (that − the RSS before the clients) ÷ clients; "+
			"the same for VmData shows what the Go heap reserved, touched or not. "+
			"Then the blockers are cancelled, the jobs run, and every client must receive every event of its job.",
			c.FanoutSlots, c.FanoutSlots, c.FanoutJobs, c.FanoutEvents, c.FanoutClients, c.ConnectParallel,
			c.FanoutJobs*c.FanoutClients)
	},
	cluster: func(c Config) ClusterOptions { return ClusterOptions{Slots: c.FanoutSlots, AllowRun: true} },
	metrics: append([]Metric{
		metric("kib_per_client", "queen KiB per connected client", 1, le(32)),
		metric("data_kib_per_client", "queen VmData KiB per connected client", 1, nil),
		metric("clients", "SSE clients connected at once", 0, nil),
		metric("queen_before_clients_mib", "queen RSS before the clients (MiB)", 1, nil),
		metric("queen_connected_mib", "queen RSS with all clients connected (MiB)", 1, nil),
		metric("queen_idle_mib", "queen idle RSS at start (MiB)", 1, nil),
		metric("connect_s", "time to connect all clients (s)", 2, nil),
		metric("connect_queen_cpu_s", "queen CPU while connecting (s)", 2, nil),
		metric("deliver_s", "unblock to last stream done (s)", 2, nil),
		metric("delivered", "events delivered", 0, nil),
		metric("delivered_per_s", "events delivered/s", 0, nil),
		metric("deliver_queen_cpu_s", "queen CPU while delivering (s)", 2, nil),
		metric("deliver_hive_cpu_s", "hive CPU while delivering (s)", 2, nil),
		metric("deliver_bench_cpu_s", "bench CPU while delivering (s)", 2, nil),
		metric("queen_peak_mib", "queen peak RSS (MiB)", 1, nil),
		metric("hive_peak_mib", "hive peak RSS (MiB)", 1, nil),
	}, verifyMetrics...),
	run: runFanout,
}

func runFanout(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	cfg := e.Cfg
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	c := NewClient(e.Cluster.URL, 64)
	defer c.Close()

	blockers, err := startBlockers(ctx, c, cfg.FanoutSlots)
	if err != nil {
		return nil, err
	}
	unblocked := false
	defer func() {
		if !unblocked {
			for _, b := range blockers {
				_ = c.Cancel(context.Background(), b)
			}
		}
	}()

	jobs, err := createJobs(ctx, c, CheckBody(cfg.FanoutEvents, 0), cfg.FanoutJobs, 8)
	if err != nil {
		return nil, err
	}
	e.Logf("%d blockers running, %d jobs queued", len(blockers), len(jobs))
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	before, _ := ReadMem(e.Cluster.Queen.Pid)

	clients := len(jobs) * cfg.FanoutClients
	sem := make(chan struct{}, cfg.ConnectParallel)
	var connected, finished sync.WaitGroup
	var connectFailed atomic.Int64
	connected.Add(clients)
	finished.Add(clients)
	meter := NewMeter(e.Cluster.Pids())
	t0 := time.Now()
	for _, job := range jobs {
		for k := 0; k < cfg.FanoutClients; k++ {
			go func() {
				defer finished.Done()
				sem <- struct{}{}
				var once sync.Once
				release := func() { once.Do(func() { <-sem; connected.Done() }) }
				defer release()
				v := &Verifier{JobID: job.JobID, Expect: checkExpect(cfg.FanoutEvents)}
				s, err := c.Open(ctx, job.StreamURL, 0, false, 4096)
				if err != nil {
					connectFailed.Add(1)
					release()
					res := v.Result()
					res.Problems = append(res.Problems, err.Error())
					r.Tally.Add(job.JobID, res)
					return
				}
				err = s.Follow(v, func(Frame) error { release(); return nil })
				_ = s.Close()
				res := v.Result()
				if err != nil {
					res.Problems = append(res.Problems, "read stream: "+err.Error())
				}
				r.Tally.Add(job.JobID, res)
			}()
		}
	}
	if err := waitGroup(ctx, &connected); err != nil {
		return nil, err
	}
	connectWall := time.Since(t0)
	u, _ := meter.Stop()
	r.Set("connect_s", connectWall.Seconds())
	r.SetUsage("connect_", u)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	conn, _ := ReadMem(e.Cluster.Queen.Pid)
	ok := clients - int(connectFailed.Load())
	r.Set("clients", float64(ok))
	r.Set("queen_before_clients_mib", mib(before.RSS))
	r.Set("queen_connected_mib", mib(conn.RSS))
	if ok > 0 {
		r.Set("kib_per_client", (float64(conn.RSS)-float64(before.RSS))/1024/float64(ok))
		r.Set("data_kib_per_client", (float64(conn.Data)-float64(before.Data))/1024/float64(ok))
	}
	for _, b := range blockers {
		if st, err := c.JobState(ctx, b); err != nil || st != api.StateRunning {
			r.Note("blocker %s was %q when all clients were connected: jobs may have run early", b, st)
		}
	}
	e.Logf("%d clients connected in %s; queen RSS %.1f → %.1f MiB (%.1f KiB per client)", ok,
		connectWall.Round(time.Millisecond), mib(before.RSS), mib(conn.RSS), r.Values["kib_per_client"])

	meter = NewMeter(e.Cluster.Pids())
	t1 := time.Now()
	unblocked = true
	for _, b := range blockers {
		if err := c.Cancel(ctx, b); err != nil {
			r.Note("cancel blocker: %v", err)
		}
	}
	if err := waitGroup(ctx, &finished); err != nil {
		return nil, err
	}
	deliver := time.Since(t1)
	u, _ = meter.Stop()
	r.SetUsage("deliver_", u)
	r.Set("deliver_s", deliver.Seconds())
	r.Tally.mu.Lock()
	delivered := float64(r.Tally.Frames)
	r.Tally.mu.Unlock()
	r.Set("delivered", delivered)
	r.Set("delivered_per_s", delivered/deliver.Seconds())
	e.Logf("%.0f events delivered in %s", delivered, deliver.Round(time.Millisecond))
	return r, nil
}

// startBlockers fills the hive's slots with jobs that sleep until cancelled,
// and waits until each one runs.
func startBlockers(ctx context.Context, c *Client, n int) ([]string, error) {
	body, _ := json.Marshal(api.JobRequest{Operation: api.OpRun, Hive: HiveID, TimeoutS: 600, Payload: &api.Run{Command: []string{"sleep", "120"}}})
	var ids []string
	for i := 0; i < n; i++ {
		job, err := c.Create(ctx, body)
		if err != nil {
			return ids, fmt.Errorf("blocker: %w", err)
		}
		ids = append(ids, job.JobID)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range ids {
		for {
			st, err := c.JobState(ctx, id)
			if err == nil && st == api.StateRunning {
				break
			}
			if err == nil && api.Terminal(st) {
				return ids, fmt.Errorf("blocker %s ended (%s) instead of running", id, st)
			}
			if time.Now().After(deadline) {
				return ids, fmt.Errorf("blocker %s not running after 30s (state %q, %v)", id, st, err)
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return ids, err
			}
		}
	}
	return ids, nil
}

// createJobs posts n jobs with body from par goroutines.
func createJobs(ctx context.Context, c *Client, body []byte, n, par int) ([]api.CreateJobResponse, error) {
	jobs := make([]api.CreateJobResponse, n)
	errs := make(chan error, par)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				job, err := c.Create(ctx, body)
				if err != nil {
					errs <- err
					return
				}
				jobs[i] = job
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return jobs, ctx.Err()
}

// waitGroup waits for wg or ctx.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
