package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"rbee.dev/shared/api"
	"rbee.dev/shared/secret"
)

var hivesScenario = scenario{
	name:  "hives",
	title: "a thousand hives",
	how: func(c Config) string {
		if c.Queen != "" {
			return fmt.Sprintf("Against the cluster at %s (`-queen`; nothing else of it is started or stopped), one `hive --simulate %d` "+
				"process joins %d simulated hives to it over %s: the real agent, each with its own NATS connection, heartbeat, "+
				"work-queue consumer and pull loops, every job's work a %s pause. Listed: from starting that process until "+
				"`GET /v1/hives` lists them all. Idle: after %s more, the CPU and RSS of the queen, from its /metrics (a NATS "+
				"server of its own is not counted), and of the simulating process over %s, as a percentage of one core. Then %d "+
				"`hive_check` jobs for the simulated hives' own label go to the cluster from %d submitters, and jobs/s counts whole jobs.",
				c.Queen, c.Hives, c.Hives, secret.RedactURLs(c.NATS), c.HiveWork, c.Settle, c.IdleFor, c.HiveJobs, c.SustainedWorkers)
		}
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
	// Ids and label of this run's own: an existing cluster may list hives
	// of an earlier run until their heartbeats expire.
	id := fmt.Sprintf("sim%06x", rand.Uint32()&0xffffff)
	t0 := time.Now()
	sim, err := startProc("simulated hives", filepath.Join(e.Cfg.Bin, "hive"), append([]string{
		"--id", id, "--nats-url", e.Cluster.NATSURL, "--data-dir", filepath.Join(e.Cluster.Dir, "sim"),
		"--slots", "4", "--labels", "simulated=" + id, "--simulate", strconv.Itoa(n), "--simulate-work", e.Cfg.HiveWork.String(),
	}, e.Cfg.HiveFlags...), filepath.Join(e.Cluster.Dir, "sim.log"))
	if err != nil {
		return nil, err
	}
	defer sim.Stop(10 * time.Second)
	c := NewClient(e.Cluster.URL, 4*e.Cfg.SustainedWorkers)
	defer c.Close()
	if e.Cluster.AdminKey != "" {
		c = c.WithKey(e.Cluster.AdminKey)
	}
	for {
		if sim.Exited() {
			return nil, fmt.Errorf("the simulated hives stopped: %v\n%s", sim.exitError(), sim.LogTail())
		}
		got, err := countHives(ctx, c, id+"-")
		if err == nil && got >= n {
			break
		}
		if errors.Is(err, errRefused) {
			return nil, err
		}
		if got == 0 && time.Since(t0) > 30*time.Second {
			return nil, fmt.Errorf("no simulated hive listed after 30 s (last error: %v); the simulator's log:\n%s", err, sim.LogTail())
		}
		if time.Since(t0) > 5*time.Minute {
			return nil, fmt.Errorf("%d of %d hives listed after 5 minutes (last error: %v)", got, n, err)
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
	pids := map[string]int{"sim": sim.Pid}
	var queenCPU0 float64
	if e.Cluster.Queen != nil {
		pids["queen"] = e.Cluster.Queen.Pid
	} else if queenCPU0, err = scrape(ctx, c, "process_cpu_seconds_total"); err != nil {
		return nil, fmt.Errorf("the queen's CPU: %w", err)
	}
	meter := NewMeter(pids)
	if err := sleepCtx(ctx, e.Cfg.IdleFor); err != nil {
		return nil, err
	}
	u, wall := meter.Stop()
	queenCPU, queenRSS := u["queen"].CPU.Seconds(), float64(u["queen"].Mem.RSS)
	if e.Cluster.Queen == nil {
		cpu, err := scrape(ctx, c, "process_cpu_seconds_total")
		if err == nil {
			queenRSS, err = scrape(ctx, c, "process_resident_memory_bytes")
		}
		if err != nil {
			return nil, fmt.Errorf("the queen's CPU and memory: %w", err)
		}
		queenCPU = cpu - queenCPU0
	}
	r.Set("idle_queen_cpu_pct", 100*queenCPU/wall.Seconds())
	r.Set("idle_sim_cpu_pct", 100*u["sim"].CPU.Seconds()/wall.Seconds())
	r.Set("queen_idle_mib", queenRSS/(1<<20))
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
	body := []byte(`{"operation":"hive_check","events":1,"labels":{"simulated":"` + id + `"}}`)
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

// errRefused is the queen refusing the bench's key: waiting cannot help.
var errRefused = errors.New("the queen refused the bench")

// countHives is how many hives the queen lists whose id begins with prefix.
func countHives(ctx context.Context, c *Client, prefix string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/hives", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return 0, fmt.Errorf("%w: GET /v1/hives: %s (an existing cluster's queen takes an API key with -token or RBEE_TOKEN)", errRefused, resp.Status)
	default:
		return 0, fmt.Errorf("GET /v1/hives: %s", resp.Status)
	}
	var list api.HiveList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return 0, err
	}
	n := 0
	for _, h := range list.Hives {
		if strings.HasPrefix(h.ID, prefix) {
			n++
		}
	}
	return n, nil
}
