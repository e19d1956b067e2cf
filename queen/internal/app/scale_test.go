package app_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// 200 clients on 20 jobs, each dropping its connection at random points and
// resuming with Last-Event-ID on either of two queens: every client ends up
// with every event of its job, in order, once.
func TestZeroLossUnderChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("load")
	}
	ns := mustNATS(t)
	small := func(c *app.Config) { c.SSEBuffer = 64 }
	a, _ := mustQueen(t, ns.ClientURL(), small)
	b, _ := mustQueen(t, ns.ClientURL(), small)
	mustHive(t, a, ns.ClientURL(), "h1", allowRun, func(c *agent.Config) { c.Slots = 8 })
	queens := []string{a, b}

	var jobs []string
	for i := 0; i < 20; i++ {
		req := api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(3000), PayloadBytes: 64}}
		if i%2 == 1 {
			req = api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c",
				"i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); if [ $((i % 50)) = 0 ]; then sleep 0.05; fi; done"}}}
		}
		jobs = append(jobs, submit(t, queens[i%2], req))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for c := 0; c < 200; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			job := jobs[c%len(jobs)]
			var got []frame
			var last uint64
			for tries := 0; ; tries++ {
				limit := 0
				if tries < 3 {
					limit = 1 + rng.IntN(400)
				}
				fr, done := sseQuiet(ctx, queens[rng.IntN(2)], job, last, limit)
				got = append(got, fr...)
				if len(fr) > 0 {
					last = fr[len(fr)-1].ID
				}
				if done {
					break
				}
				if ctx.Err() != nil || tries > 50 {
					errs <- fmt.Errorf("client %d: gave up after %d tries", c, tries)
					return
				}
			}
			if err := complete(got); err != nil {
				errs <- fmt.Errorf("client %d job %s: %w", c, job, err)
			}
		}(c)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A client that stops reading while its job floods narration is switched
// to catching up from the stream and still gets every event.
func TestSlowClientLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("load")
	}
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.SSEBuffer = 8 })
	mustHive(t, base, ns.ClientURL(), "h1")
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(40000), PayloadBytes: 200}})
	fr, done := sseSlow(context.Background(), base, job)
	if !done {
		t.Fatal("stream did not finish")
	}
	if err := complete(fr); err != nil {
		t.Fatal(err)
	}
	if len(fr) != 40003 {
		t.Fatalf("%d frames", len(fr))
	}
}
