package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// syncPolicies are the embedded server's --nats-sync settings the
// durability scenario compares; ratios are against the first.
var syncPolicies = []string{"default", "always", "100ms", "1s"}

var durabilityScenario = scenario{
	name:  "durability",
	title: "what forcing JetStream's writes to disk costs",
	how: func(c Config) string {
		return fmt.Sprintf("One fresh queen and hive for each `--nats-sync` setting (%s), measured one after another "+
			"in the same run, each run starting at the next setting: %d sequential `hive_check` jobs with `events: 1` (round trip p50, as in roundtrip), "+
			"%d submitters for %s (jobs/s, as in sustained), and one job of %d events of %d bytes "+
			"(narration events/s, as in throughput). `default` is nats-server's own setting, a sync every two "+
			"minutes; ratios are against it.",
			joinQuoted(syncPolicies), durabilitySeq(c), c.SustainedWorkers, durabilityFor(c), durabilityEvents(c), c.Payload)
	},
	cluster: func(c Config) ClusterOptions {
		// The scenario's own cluster only idles: each setting gets a queen
		// of its own.
		return ClusterOptions{Slots: 1}
	},
	metrics: durabilityMetrics(),
	run:     runDurability,
}

func durabilitySeq(c Config) int           { return max(c.RoundtripJobs/4, 10) }
func durabilityFor(c Config) time.Duration { return max(c.SustainedFor/3, time.Second) }
func durabilityEvents(c Config) int        { return max(c.ThroughputEvents/10, 1000) }
func joinQuoted(s []string) (out string) {
	for i, v := range s {
		if i > 0 {
			out += ", "
		}
		out += "`" + v + "`"
	}
	return out
}

func durabilityMetrics() []Metric {
	var m []Metric
	for _, p := range syncPolicies {
		m = append(m,
			metric("rt_p50_ms_"+p, p+": round trip p50 (ms)", 2, nil),
			metric("jobs_per_s_"+p, p+": jobs/s", 0, nil),
			metric("events_per_s_"+p, p+": narration events/s", 0, nil))
		if p != syncPolicies[0] {
			m = append(m,
				metric("jobs_ratio_"+p, p+": jobs/s against default", 3, nil),
				metric("events_ratio_"+p, p+": events/s against default", 3, nil))
		}
	}
	return append(m, verifyMetrics...)
}

func runDurability(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	// Each run starts at another setting, so that none is always measured
	// first, on a machine still settling; every setting gets a fresh queen.
	for i := range syncPolicies {
		p := syncPolicies[(i+e.Run-1)%len(syncPolicies)]
		co := ClusterOptions{Slots: e.Cfg.SustainedSlots, QueenFlags: append(append([]string{}, e.Cfg.QueenFlags...), "--nats-sync", p), HiveFlags: e.Cfg.HiveFlags}
		cl, err := StartCluster(ctx, e.Cfg.Bin, co, e.Cfg.Settle, e.Cfg.Keep)
		if err != nil {
			return nil, fmt.Errorf("start cluster with --nats-sync %s: %w", p, err)
		}
		err = measureSync(ctx, e, cl, p, r)
		cl.Close()
		if err != nil {
			return nil, err
		}
	}
	base := syncPolicies[0]
	for _, p := range syncPolicies[1:] {
		if b := r.Values["jobs_per_s_"+base]; b > 0 {
			r.Set("jobs_ratio_"+p, r.Values["jobs_per_s_"+p]/b)
		}
		if b := r.Values["events_per_s_"+base]; b > 0 {
			r.Set("events_ratio_"+p, r.Values["events_per_s_"+p]/b)
		}
	}
	return r, nil
}

// measureSync runs the three measurements against one cluster.
func measureSync(ctx context.Context, e *Env, cl *Cluster, policy string, r *Run) error {
	c := NewClient(cl.URL, 4*e.Cfg.SustainedWorkers)
	defer c.Close()
	meter := NewMeter(cl.Pids())
	defer func() {
		u, _ := meter.Stop()
		r.Set("others_cpu_s", r.Values["others_cpu_s"]+u[Others].CPU.Seconds())
	}()
	one := CheckBody(1, 0)

	n := durabilitySeq(e.Cfg)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n+20; i++ {
		d, ok := roundtrip(ctx, c, one, 1, r.Tally, time.Now(), nil)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ok && i >= 20 {
			lat = append(lat, d)
		}
	}
	if len(lat) > 0 {
		r.Set("rt_p50_ms_"+policy, ms(Percentile(lat, 0.5)))
	}

	var mu sync.Mutex
	jobs := 0
	start := time.Now()
	deadline := start.Add(durabilityFor(e.Cfg))
	var wg sync.WaitGroup
	for i := 0; i < e.Cfg.SustainedWorkers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if _, ok := roundtrip(ctx, c, one, 1, r.Tally, time.Now(), nil); ok {
					mu.Lock()
					jobs++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.Set("jobs_per_s_"+policy, float64(jobs)/time.Since(start).Seconds())

	events := durabilityEvents(e.Cfg)
	d, ok := roundtrip(ctx, c, CheckBody(events, e.Cfg.Payload), events, r.Tally, time.Now(), nil)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ok {
		r.Set("events_per_s_"+policy, float64(events)/d.Seconds())
	}
	e.Logf("--nats-sync %s: round trip p50 %.2f ms, %.0f jobs/s, %.0f events/s", policy,
		r.Values["rt_p50_ms_"+policy], r.Values["jobs_per_s_"+policy], r.Values["events_per_s_"+policy])
	return nil
}
