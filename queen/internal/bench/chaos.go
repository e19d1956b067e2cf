package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

var chaosScenario = scenario{
	name:  "chaos",
	title: "random disconnects and Last-Event-ID resumes",
	how: func(c Config) string {
		return fmt.Sprintf("%d clients at once, each submitting %d `hive_check` jobs one after another (20 to %d "+
			"events each, hive `--slots %d`) and following each job's stream while hanging up at random: right "+
			"after the response headers (1 in 8 connections), after a random number of frames (4 in 8), or not "+
			"at all (3 in 8; always after 20 connections). Every reconnect resumes with the id of the last frame "+
			"received, half of them with the `Last-Event-ID` header and half with `?last_event_id=`. In %.0f%% of "+
			"the streams the client also hangs up right after the `end` frame, before `[DONE]`, and resumes from "+
			"the end event's id; it must then get `[DONE]` within 3 s. Each job's events, over all its "+
			"connections, must arrive exactly once and in order. Seed %d.",
			c.ChaosClients, c.ChaosJobs, c.ChaosEvents, c.ChaosSlots, 100*c.ChaosResumeAtEnd, c.Seed)
	},
	cluster: func(c Config) ClusterOptions { return ClusterOptions{Slots: c.ChaosSlots} },
	metrics: append([]Metric{
		metric("jobs", "jobs followed", 0, nil),
		metric("connections", "SSE connections", 0, nil),
		metric("reconnects", "resumes after a hang-up", 0, nil),
		metric("resume_at_end", "resumes from the end event", 0, nil),
		metric("resume_at_end_hung", "…of which got no [DONE] within 3 s", 0, zero()),
		metric("frames", "events received", 0, nil),
		metric("seconds", "wall time (s)", 2, nil),
		metric("queen_cpu_s", "queen CPU (s)", 2, nil),
		metric("hive_cpu_s", "hive CPU (s)", 2, nil),
		metric("bench_cpu_s", "bench CPU (s)", 2, nil),
		metric("queen_peak_mib", "queen peak RSS (MiB)", 1, nil),
	}, verifyMetrics...),
	run: runChaos,
}

type chaosCounters struct {
	connections, reconnects, atEnd, atEndHung atomic.Int64
}

func runChaos(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	cfg := e.Cfg
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	c := NewClient(e.Cluster.URL, 2*cfg.ChaosClients)
	defer c.Close()
	var k chaosCounters
	var jobs atomic.Int64
	meter := NewMeter(e.Cluster.Pids())
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < cfg.ChaosClients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
			for j := 0; j < cfg.ChaosJobs && ctx.Err() == nil; j++ {
				events := 20 + rng.IntN(cfg.ChaosEvents-19)
				job, err := c.Create(ctx, CheckBody(events, 0))
				if err != nil {
					r.Tally.Fail("(not created)", err)
					continue
				}
				jobs.Add(1)
				v := &Verifier{JobID: job.JobID, Expect: checkExpect(events)}
				atEnd := rng.Float64() < cfg.ChaosResumeAtEnd
				problems := followChaos(ctx, c, job.StreamURL, v, rng, atEnd, &k)
				res := v.Result()
				res.Problems = append(res.Problems, problems...)
				r.Tally.Add(job.JobID, res)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	wall := time.Since(t0)
	u, _ := meter.Stop()
	r.SetUsage("", u)
	r.Set("seconds", wall.Seconds())
	r.Set("jobs", float64(jobs.Load()))
	r.Set("connections", float64(k.connections.Load()))
	r.Set("reconnects", float64(k.reconnects.Load()))
	r.Set("resume_at_end", float64(k.atEnd.Load()))
	r.Set("resume_at_end_hung", float64(k.atEndHung.Load()))
	r.Tally.mu.Lock()
	r.Set("frames", float64(r.Tally.Frames))
	r.Tally.mu.Unlock()
	e.Logf("%d jobs, %d connections, %d resumes in %s", jobs.Load(), k.connections.Load(), k.reconnects.Load(), wall.Round(time.Millisecond))
	return r, nil
}

// followChaos reads one job's stream to [DONE] over as many connections as
// its random hang-ups take, each resuming from the last frame received. It
// returns problems the verifier cannot see.
func followChaos(ctx context.Context, c *Client, streamURL string, v *Verifier, rng *rand.Rand, atEnd bool, k *chaosCounters) []string {
	const maxConns = 50
	const idle = 30 * time.Second
	var problems []string
	for conn := 1; ; conn++ {
		if conn > maxConns {
			return append(problems, fmt.Sprintf("gave up after %d connections", maxConns))
		}
		resumeAtEnd := v.Ended() && !v.Done()
		if conn > 1 {
			k.reconnects.Add(1)
			if resumeAtEnd {
				k.atEnd.Add(1)
			}
		}
		k.connections.Add(1)
		cctx, cancel := context.WithCancel(ctx)
		s, err := c.Open(cctx, streamURL, v.LastID(), rng.IntN(2) == 0, 4096)
		if err != nil {
			cancel()
			return append(problems, err.Error())
		}
		// How this connection ends: cut after so many frames, 0 for never.
		cut := 0
		hangUpNow := false
		if !resumeAtEnd && conn <= 20 {
			switch d := rng.IntN(8); {
			case d == 0:
				hangUpNow = true
			case d <= 4:
				cut = 1 + rng.IntN(int(v.Expect))
			}
		}
		limit := idle
		if resumeAtEnd {
			limit = 3 * time.Second
		}
		watchdog := time.AfterFunc(limit, cancel)
		var timedOut bool
		if hangUpNow {
			err = ErrStop
		} else {
			n := 0
			err = s.Follow(v, func(f Frame) error {
				n++
				if !resumeAtEnd {
					watchdog.Reset(idle)
				}
				switch {
				case f.Done:
				case atEnd && !resumeAtEnd && f.Kind == KindEnd:
					return ErrStop
				case cut > 0 && n >= cut:
					return ErrStop
				}
				return nil
			})
		}
		timedOut = !watchdog.Stop()
		_ = s.Close()
		cancel()
		switch {
		case errors.Is(err, ErrStop):
			continue
		case err == nil:
			return problems
		case resumeAtEnd && timedOut:
			k.atEndHung.Add(1)
			return append(problems, "resumed from the end event's id: no [DONE] within 3s, the stream stayed open")
		case timedOut:
			return append(problems, fmt.Sprintf("no frame for %s", idle))
		default:
			return append(problems, "read stream: "+err.Error())
		}
	}
}
