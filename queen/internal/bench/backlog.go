package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

var backlogScenario = scenario{
	name:  "backlog",
	title: "jobs accepted while the queue grows",
	how: func(c Config) string {
		return fmt.Sprintf("%d submitters `POST` %d `hive_check` jobs whose labels no hive carries, so every job "+
			"stays queued; nothing reads their streams. Jobs/s is measured over the whole backlog and over its "+
			"last tenth, where the queue is longest: a queen whose work per job grows with the queue slows down "+
			"there.", c.SustainedWorkers, c.BacklogJobs)
	},
	cluster: func(c Config) ClusterOptions { return ClusterOptions{Slots: 4} },
	metrics: []Metric{
		metric("jobs_per_s", "jobs/s accepted, whole backlog", 0, ge(1000)),
		metric("last_jobs_per_s", "jobs/s accepted, last tenth of the backlog", 0, ge(1000)),
		metric("first_jobs_per_s", "jobs/s accepted, first tenth of the backlog", 0, nil),
		metric("post_p99_ms", "POST p99 (ms)", 2, nil),
		metric("failed", "POSTs that failed", 0, nil),
		metric("queen_cpu_ms_per_job", "queen CPU per job (ms)", 3, nil),
		metric("queen_peak_mib", "queen peak RSS (MiB)", 1, nil),
	},
	run: runBacklog,
}

func runBacklog(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	w, n := e.Cfg.SustainedWorkers, e.Cfg.BacklogJobs
	c := NewClient(e.Cluster.URL, 4*w)
	defer c.Close()
	body := []byte(`{"operation":"hive_check","labels":{"pool":"nowhere"},"events":1}`)
	// done[i] is when the i-th accepted job was answered.
	done := make([]time.Time, n)
	lat := make([][]time.Duration, w)
	var next, accepted, failed atomic.Int64
	meter := NewMeter(e.Cluster.Pids())
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && next.Add(1) <= int64(n) {
				t0 := time.Now()
				if _, err := c.Create(ctx, body); err != nil {
					failed.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
				done[accepted.Add(1)-1] = time.Now()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	wall := time.Since(start)
	u, _ := meter.Stop()
	r.SetUsage("", u)
	got := int(accepted.Load())
	r.Set("failed", float64(failed.Load()))
	r.Set("jobs_per_s", float64(got)/wall.Seconds())
	if tenth := got / 10; tenth > 1 {
		r.Set("first_jobs_per_s", float64(tenth)/done[tenth-1].Sub(start).Seconds())
		r.Set("last_jobs_per_s", float64(tenth)/done[got-1].Sub(done[got-1-tenth]).Seconds())
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	r.Set("post_p99_ms", ms(Percentile(all, 0.99)))
	if got > 0 {
		r.Set("queen_cpu_ms_per_job", ms(u["queen"].CPU)/float64(got))
	}
	e.Logf("%d jobs queued in %s: %.0f jobs/s, last tenth %.0f jobs/s", got, wall.Round(time.Millisecond),
		r.Values["jobs_per_s"], r.Values["last_jobs_per_s"])
	return r, nil
}
