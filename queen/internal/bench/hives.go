package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"rbee.dev/shared/api"
)

var hivesScenario = scenario{
	name:  "hives",
	title: "a thousand hives",
	how: func(c Config) string {
		return fmt.Sprintf("Beside the usual hive, one `hive --simulate %d` process runs %d simulated hives: the real "+
			"agent, each with its own NATS connection, heartbeat, work-queue consumer and pull loops, every "+
			"job's work a %s pause. Listed: from starting that process until `GET /v1/hives` lists them all. "+
			"Idle: after %s more, the CPU of the queen (which embeds NATS) and of the simulating process over %s, "+
			"as a percentage of one core. Then %d `hive_check` jobs for the simulated hives' label go to the "+
			"cluster from %d submitters, placed by the queen across them, and jobs/s counts whole jobs.",
			c.Hives, c.Hives, c.HiveWork, c.Settle, c.IdleFor, c.HiveJobs, c.SustainedWorkers)
	},
	cluster: func(Config) ClusterOptions { return ClusterOptions{Slots: 4} },
	metrics: append([]Metric{
		metric("listed_s", "all hives listed by GET /v1/hives (s)", 2, le(10)),
		metric("idle_queen_cpu_pct", "idle: queen and its NATS, % of a core", 1, le(10)),
		metric("idle_sim_cpu_pct", "idle: the simulated hives' process, % of a core", 1, nil),
		metric("queen_idle_mib", "idle: queen RSS (MiB)", 1, nil),
		metric("sim_mib", "idle: simulated hives' process RSS (MiB)", 1, nil),
		metric("jobs_per_s", "jobs/s across the hives", 0, nil),
		metric("hives_used", "hives that ran a job", 0, nil),
	}, verifyMetrics...),
	run: runHives,
}

func runHives(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	n := e.Cfg.Hives
	t0 := time.Now()
	sim, err := startProc("simulated hives", filepath.Join(e.Cfg.Bin, "hive"), []string{
		"--id", "sim", "--nats-url", e.Cluster.NATSURL, "--data-dir", filepath.Join(e.Cluster.Dir, "sim"),
		"--slots", "4", "--labels", "simulated=yes", "--simulate", strconv.Itoa(n), "--simulate-work", e.Cfg.HiveWork.String(),
	}, filepath.Join(e.Cluster.Dir, "sim.log"))
	if err != nil {
		return nil, err
	}
	defer sim.Stop(10 * time.Second)
	c := NewClient(e.Cluster.URL, 4*e.Cfg.SustainedWorkers)
	defer c.Close()
	for {
		if sim.Exited() {
			return nil, fmt.Errorf("the simulated hives stopped: %v\n%s", sim.exitError(), sim.LogTail())
		}
		if got, err := countHives(ctx, c); err == nil && got >= n+1 {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			return nil, fmt.Errorf("not all %d hives listed after 5 minutes", n)
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return nil, err
		}
	}
	r.Set("listed_s", time.Since(t0).Seconds())
	e.Logf("%d hives listed in %s", n, time.Since(t0).Round(time.Millisecond))

	if err := sleepCtx(ctx, e.Cfg.Settle); err != nil {
		return nil, err
	}
	meter := NewMeter(map[string]int{"queen": e.Cluster.Queen.Pid, "sim": sim.Pid})
	if err := sleepCtx(ctx, e.Cfg.IdleFor); err != nil {
		return nil, err
	}
	u, wall := meter.Stop()
	r.Set("idle_queen_cpu_pct", 100*u["queen"].CPU.Seconds()/wall.Seconds())
	r.Set("idle_sim_cpu_pct", 100*u["sim"].CPU.Seconds()/wall.Seconds())
	r.Set("queen_idle_mib", mib(u["queen"].Mem.RSS))
	r.Set("sim_mib", mib(u["sim"].Mem.RSS))
	r.Set("others_cpu_s", u[Others].CPU.Seconds())
	e.Logf("idle: queen %.1f%%, simulated hives %.1f%% of a core", r.Values["idle_queen_cpu_pct"], r.Values["idle_sim_cpu_pct"])

	// Jobs across the hives: the queen places them, each hive pulls its own.
	jobs := make(chan struct{}, e.Cfg.HiveJobs)
	for range e.Cfg.HiveJobs {
		jobs <- struct{}{}
	}
	close(jobs)
	hives := make([]map[string]bool, e.Cfg.SustainedWorkers)
	done := make(chan int, e.Cfg.SustainedWorkers)
	// Only the simulated hives carry the label. Their work is a pause, so
	// a job's story is job_created, started and end: no check events.
	body := []byte(`{"operation":"hive_check","events":1,"labels":{"simulated":"yes"}}`)
	start := time.Now()
	for w := range e.Cfg.SustainedWorkers {
		hives[w] = map[string]bool{}
		go func() {
			ok := 0
			for range jobs {
				if ctx.Err() != nil {
					break
				}
				job, err := c.Create(ctx, body)
				if err != nil {
					r.Tally.Fail("(not created)", err)
					continue
				}
				var hive string
				res := FollowJob(ctx, c, job, checkExpect(0), 4096, func(f Frame) error {
					var e struct{ Hive string }
					if hive == "" && json.Unmarshal(f.Data, &e) == nil {
						hive = e.Hive
					}
					return nil
				})
				r.Tally.Add(job.JobID, res)
				if res.OK() {
					ok++
				}
				hives[w][hive] = true
			}
			done <- ok
		}()
	}
	total := 0
	for range e.Cfg.SustainedWorkers {
		total += <-done
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	r.Set("jobs_per_s", float64(total)/time.Since(start).Seconds())
	used := map[string]bool{}
	for _, h := range hives {
		for id := range h {
			used[id] = true
		}
	}
	r.Set("hives_used", float64(len(used)))
	e.Logf("%d jobs at %.0f jobs/s on %d hives", total, r.Values["jobs_per_s"], len(used))
	return r, nil
}

// countHives is how many hives the queen lists.
func countHives(ctx context.Context, c *Client) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/hives", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var list api.HiveList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return 0, err
	}
	return len(list.Hives), nil
}
