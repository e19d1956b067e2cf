//go:build e2e

package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/shared/api"
)

// lostWithin is how soon a job on a vanished hive must end: the hive TTL,
// the reaper's one-second pass and some slack for a loaded machine.
const lostWithin = 30 * time.Second

// TestCluster runs every scenario on one cluster, in order: bringing a
// three-node NATS cluster, two queens and two hives up costs more than all
// the scenarios together. Each scenario leaves the cluster whole again.
func TestCluster(t *testing.T) {
	c := startCluster(t)
	scenarios := []struct {
		name string
		run  func(*testing.T, *cluster)
	}{
		{"jobs through both queens", testBothQueens},
		{"stream resumed on the other queen", testResume},
		{"hive killed mid-job", testHiveKilled},
		{"NATS server killed mid-job", testNATSKilled},
		{"NATS server killed under a client that stays", testNATSKilledUnderClient},
		{"queen restarted during a stream", testQueenRestart},
		{"hive cut off the network", testHivePartition},
		{"audit", testAudit},
	}
	for _, s := range scenarios {
		start := time.Now()
		ok := t.Run(s.name, func(t *testing.T) { s.run(t, c) })
		t.Logf("%s: %s", s.name, time.Since(start).Round(100*time.Millisecond))
		if !ok && s.name != "audit" {
			// The cluster may be left broken; the audit still says what
			// became of every job so far.
			t.Run("audit after failure", func(t *testing.T) { testAudit(t, c) })
			return
		}
	}
}

// testBothQueens submits jobs through one queen and reads each through the
// other: pinned to each hive, placed by the queen, narration-heavy and slow.
func testBothQueens(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ids []string
	var readers [][]queen
	for i := range 16 {
		in, out := c.queens[i%2], c.queens[(i+1)%2]
		var req api.JobRequest
		switch i % 4 {
		case 0:
			req = hiveCheck("hive1", 500)
		case 1:
			req = hiveCheck("hive2", 500)
		case 2:
			req = hiveCheck("", 100)
		case 3:
			req = tick("", 20, 10*time.Millisecond)
		}
		ids = append(ids, c.submit(t, in, req))
		readers = append(readers, []queen{out})
	}
	c.followAll(t, ctx, ids, readers, api.StateDone, "")
	recs := c.waitRecords(t, ids)
	hives := map[string]bool{}
	for _, r := range recs {
		hives[r.Hive] = true
	}
	if !hives["hive1"] || !hives["hive2"] {
		t.Errorf("jobs ran on hives %v, want both", hives)
	}
}

// testResume reads part of a running job's stream through q1 and the rest
// through q2 with Last-Event-ID; late readers on either queen then replay
// exactly the same story, and a reader resuming after the end is closed.
func testResume(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q1, q2 := c.queens[0], c.queens[1]
	id := c.submit(t, q1, tick("hive1", 40, 50*time.Millisecond))
	first, err := c.follow(ctx, id, []queen{q1}, 0, false, frames(10))
	if err != nil || len(first.frames) != 10 || first.done {
		t.Fatalf("first part through q1: %d frames, done %v, err %v", len(first.frames), first.done, err)
	}
	rest, err := c.follow(ctx, id, []queen{q2}, first.last(), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	whole := join(first, rest)
	end := check(t, whole)
	if end.State != api.StateDone {
		t.Fatalf("end %s (%s), want done", end.State, end.Error)
	}
	c.jobs.ended(id, end.State)
	for _, q := range c.queens {
		replay, err := c.follow(ctx, id, []queen{q}, 0, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := diff(whole, replay); d != "" {
			t.Errorf("replay through %s differs from the live story: %s", q.name, d)
		}
		after, err := c.follow(ctx, id, []queen{q}, whole.last(), false, nil)
		if err != nil || len(after.frames) != 0 || !after.done {
			t.Errorf("resuming after the end through %s: %d frames, done %v, err %v", q.name, len(after.frames), after.done, err)
		}
	}
}

// testHiveKilled kills a hive's container while it runs a job. The job
// must end failed with "hive hive1 lost" and its stream must be whole. The
// hive then comes back and takes work again.
func testHiveKilled(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := c.submit(t, c.queens[0], tick("hive1", 600, 100*time.Millisecond))
	running, err := c.follow(ctx, id, c.queens, 0, true, upTo(output))
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.docker(t, "kill", c.ids["hive1"])
	rest, err := c.follow(ctx, id, c.queens, running.last(), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(killed)
	end := check(t, join(running, rest))
	c.jobs.ended(id, end.State)
	t.Logf("job ended %s (%q) %s after the kill", end.State, end.Error, took.Round(100*time.Millisecond))
	if end.State != api.StateFailed || !strings.Contains(end.Error, "hive hive1 lost") {
		t.Errorf("end %s %q, want failed with hive hive1 lost", end.State, end.Error)
	}
	if took > lostWithin {
		t.Errorf("the job ended %s after its hive died, want within %s", took, lostWithin)
	}
	c.hiveGone(t, 30*time.Second, "hive1")

	c.docker(t, "start", c.ids["hive1"])
	c.waitReady(t, time.Minute, "hive1", "hive2")
	after := c.submit(t, c.queens[1], tick("hive1", 5, 10*time.Millisecond))
	c.followAll(t, ctx, []string{after}, [][]queen{c.queens}, api.StateDone, "")
}

// testNATSKilled kills the NATS server that leads the narration stream
// while jobs run on both hives and are read through both queens. Every job
// must end and every stream be whole; the server then rejoins.
func testNATSKilled(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leader := c.streamLeader(t, "NARR")
	t.Logf("NARR is led by %s", leader)

	var ids []string
	var readers [][]queen
	for i := range 6 {
		hive := []string{"hive1", "hive2"}[i%2]
		ids = append(ids, c.submit(t, c.queens[i%2], tick(hive, 40, 100*time.Millisecond)))
		readers = append(readers, []queen{c.queens[(i+1)%2], c.queens[i%2]})
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(1500 * time.Millisecond)
		c.docker(t, "kill", c.ids[leader])
	}()
	ends := c.followAll(t, ctx, ids, readers, "", "")
	wg.Wait()
	states := map[string]int{}
	for _, e := range ends {
		states[e.State]++
	}
	t.Logf("with %s killed: jobs ended %v", leader, states)
	if states[api.StateDone] != len(ids) {
		// Terminal and whole is the promise; done is the hope.
		t.Logf("not every job survived the loss of %s: %v", leader, states)
	}
	c.waitRecords(t, ids)

	c.docker(t, "start", c.ids[leader])
	c.waitHealthy(t, time.Minute, leader)
	c.waitReady(t, time.Minute, "hive1", "hive2")
	var after []string
	for i := range 4 {
		after = append(after, c.submit(t, c.queens[i%2], tick([]string{"hive1", "hive2"}[i%2], 5, 10*time.Millisecond)))
	}
	c.followAll(t, ctx, after, [][]queen{c.queens}, api.StateDone, "")
}

// testQueenRestart restarts q1 while two clients read a job's stream
// through it: one comes back to q1 once it is up again, the other moves on
// to q2. Both must read the whole story.
func testQueenRestart(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	q1, q2 := c.queens[0], c.queens[1]
	id := c.submit(t, q2, tick("hive2", 100, 100*time.Millisecond))
	var stay, move *story
	var stayErr, moveErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); stay, stayErr = c.follow(ctx, id, []queen{q1}, 0, false, nil) }()
	go func() { defer wg.Done(); move, moveErr = c.follow(ctx, id, []queen{q1, q2}, 0, true, nil) }()
	time.Sleep(2 * time.Second)
	restarted := time.Now()
	c.docker(t, "restart", "-t", "5", c.ids["q1"])
	t.Logf("q1 restarted in %s", time.Since(restarted).Round(100*time.Millisecond))
	wg.Wait()
	if stayErr != nil || moveErr != nil {
		t.Fatalf("readers: %v; %v", stayErr, moveErr)
	}
	end := check(t, stay)
	check(t, move)
	c.jobs.ended(id, end.State)
	if end.State != api.StateDone {
		t.Errorf("end %s (%s), want done", end.State, end.Error)
	}
	if d := diff(stay, move); d != "" {
		t.Errorf("the two readers saw different stories: %s", d)
	}
	t.Logf("reader staying on q1 used connections %v; reader moving on used %v", stay.conns, move.conns)
	if !slices.Contains(move.conns, "q2") {
		t.Errorf("the moving reader never reached q2: %v", move.conns)
	}
	if len(stay.conns) < 2 {
		t.Errorf("the staying reader was never cut off: %v", stay.conns)
	}
	c.waitReady(t, time.Minute, "hive1", "hive2")
}

// testHivePartition takes a hive off the network while it runs a job. The
// job must end failed with "hive hive2 lost"; once the hive is back it
// registers again, stops the orphaned command and runs new jobs.
func testHivePartition(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	network := c.network(t, "hive2")
	id := c.submit(t, c.queens[0], tick("hive2", 600, 100*time.Millisecond))
	running, err := c.follow(ctx, id, c.queens, 0, true, upTo(output))
	if err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	c.docker(t, "network", "disconnect", network, c.ids["hive2"])
	rest, err := c.follow(ctx, id, c.queens, running.last(), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(cut)
	end := check(t, join(running, rest))
	c.jobs.ended(id, end.State)
	t.Logf("job ended %s (%q) %s after the cut", end.State, end.Error, took.Round(100*time.Millisecond))
	if end.State != api.StateFailed || !strings.Contains(end.Error, "hive hive2 lost") {
		t.Errorf("end %s %q, want failed with hive hive2 lost", end.State, end.Error)
	}
	if took > lostWithin {
		t.Errorf("the job ended %s after its hive was cut off, want within %s", took, lostWithin)
	}

	c.docker(t, "network", "connect", "--alias", "hive2", network, c.ids["hive2"])
	back := time.Now()
	c.waitReady(t, 2*time.Minute, "hive1", "hive2")
	t.Logf("hive2 registered again %s after it was reconnected", time.Since(back).Round(100*time.Millisecond))
	waitFor(t, 30*time.Second, "hive2 to stop the orphaned job", func() error {
		for _, q := range c.queens {
			hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
			h, err := q.cl.GetHive(hctx, "hive2")
			hcancel()
			if err != nil {
				return err
			}
			if slices.Contains(h.Running, id) {
				return fmt.Errorf("%s: hive2 still runs %s", q.name, id)
			}
		}
		return nil
	})
	after := c.submit(t, c.queens[1], tick("hive2", 5, 10*time.Millisecond))
	c.followAll(t, ctx, []string{after}, [][]queen{c.queens}, api.StateDone, "")
}

// testAudit replays every job the suite created through both queens: each
// stream whole and ending as it did live, each record terminal and
// agreeing with its stream, and every job listed by both queens.
func testAudit(t *testing.T, c *cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.jobs.mu.Lock()
	seen := map[string]string{}
	var ids []string
	for id, state := range c.jobs.jobs {
		ids = append(ids, id)
		seen[id] = state
	}
	c.jobs.mu.Unlock()
	slices.Sort(ids)
	for _, q := range c.queens {
		for _, id := range ids {
			s, err := c.follow(ctx, id, []queen{q}, 0, false, nil)
			if err != nil {
				t.Errorf("%s: replay %s: %v", q.name, id, err)
				continue
			}
			end := check(t, s)
			if seen[id] != "" && end.State != seen[id] {
				t.Errorf("%s: job %s replays ending %s, but ended %s live", q.name, id, end.State, seen[id])
			}
		}
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		list, err := q.cl.ListJobs(lctx, clientFilter(1000))
		lcancel()
		if err != nil {
			t.Fatalf("%s: list jobs: %v", q.name, err)
		}
		listed := map[string]bool{}
		for _, j := range list.Jobs {
			listed[j.JobID] = true
		}
		for _, id := range ids {
			if !listed[id] {
				t.Errorf("%s does not list job %s", q.name, id)
			}
		}
	}
	c.waitRecords(t, ids)
	t.Logf("audited %d jobs through %d queens", len(ids), len(c.queens))
}

// output is a line of a command's output.
func output(e api.Event) bool { return e.Stream == "stdout" }

// join is one reader's story told over two reads.
func join(a, b *story) *story {
	return &story{job: a.job, frames: append(slices.Clone(a.frames), b.frames...), conns: append(slices.Clone(a.conns), b.conns...), done: b.done}
}

// diff says how two stories of one job differ, "" when they do not.
func diff(a, b *story) string {
	if len(a.frames) != len(b.frames) {
		return fmt.Sprintf("%d frames against %d", len(a.frames), len(b.frames))
	}
	for i := range a.frames {
		fa, fb := a.frames[i], b.frames[i]
		if fa.ID != fb.ID || fa.Event != fb.Event || string(fa.Data) != string(fb.Data) {
			return fmt.Sprintf("frame %d: id %d %s %s against id %d %s %s", i, fa.ID, fa.Event, fa.Data, fb.ID, fb.Event, fb.Data)
		}
	}
	return ""
}

// followAll reads every job's stream at once, each through its own list of
// queens (moving on to the next after a broken connection), checks each
// story and records its end. A non-empty want is the end state every job
// must reach; wantErr a text its error must hold.
func (c *cluster) followAll(t *testing.T, ctx context.Context, ids []string, readers [][]queen, want, wantErr string) []api.Event {
	t.Helper()
	stories := make([]*story, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		read := readers[min(i, len(readers)-1)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			stories[i], errs[i] = c.follow(ctx, id, read, 0, true, nil)
		}()
	}
	wg.Wait()
	ends := make([]api.Event, len(ids))
	for i, id := range ids {
		if errs[i] != nil {
			t.Errorf("job %s: %v", id, errs[i])
			continue
		}
		ends[i] = check(t, stories[i])
		c.jobs.ended(id, ends[i].State)
		if want != "" && ends[i].State != want {
			t.Errorf("job %s ended %s (%q), want %s", id, ends[i].State, ends[i].Error, want)
		}
		if wantErr != "" && !strings.Contains(ends[i].Error, wantErr) {
			t.Errorf("job %s ended with error %q, want %q", id, ends[i].Error, wantErr)
		}
	}
	return ends
}

// waitRecords waits until both queens hold a terminal record of every job
// that agrees with the end its stream showed, and returns q1's records.
func (c *cluster) waitRecords(t *testing.T, ids []string) []api.Job {
	t.Helper()
	var recs []api.Job
	waitFor(t, 30*time.Second, "job records to match their streams", func() error {
		recs = recs[:0]
		for _, q := range c.queens {
			for _, id := range ids {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				j, err := q.cl.GetJob(ctx, id)
				cancel()
				if err != nil {
					return fmt.Errorf("%s: job %s: %w", q.name, id, err)
				}
				c.jobs.mu.Lock()
				want := c.jobs.jobs[id]
				c.jobs.mu.Unlock()
				if !api.Terminal(j.State) || (want != "" && j.State != want) {
					return fmt.Errorf("%s: job %s is %s, its stream ended %q", q.name, id, j.State, want)
				}
				if q.name == "q1" {
					recs = append(recs, j)
				}
			}
		}
		return nil
	})
	return recs
}

// streamLeader names the NATS server (n1, n2 or n3) that leads a stream,
// from the monitoring endpoint of the first server that answers.
func (c *cluster) streamLeader(t *testing.T, stream string) string {
	t.Helper()
	var leader string
	waitFor(t, 30*time.Second, "a leader of stream "+stream, func() error {
		for _, n := range []string{"n1", "n2", "n3"} {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.ip(t, n)+":8222/jsz?accounts=true&streams=true", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				continue
			}
			var jsz struct {
				Accounts []struct {
					Streams []struct {
						Name    string `json:"name"`
						Cluster struct {
							Leader string `json:"leader"`
						} `json:"cluster"`
					} `json:"stream_detail"`
				} `json:"account_details"`
			}
			err = json.NewDecoder(resp.Body).Decode(&jsz)
			resp.Body.Close()
			cancel()
			if err != nil {
				continue
			}
			for _, a := range jsz.Accounts {
				for _, s := range a.Streams {
					if s.Name == stream && s.Cluster.Leader != "" {
						leader = s.Cluster.Leader
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no server names a leader of %s", stream)
	})
	if _, ok := c.ids[leader]; !ok {
		t.Fatalf("stream %s is led by %q, which is not a service", stream, leader)
	}
	return leader
}

// waitHealthy waits until Docker reports a service's container healthy.
func (c *cluster) waitHealthy(t *testing.T, within time.Duration, service string) {
	t.Helper()
	waitFor(t, within, service+" healthy", func() error {
		if s := c.docker(t, "inspect", "--format", "{{.State.Health.Status}}", c.ids[service]); s != "healthy" {
			return fmt.Errorf("%s is %s", service, s)
		}
		return nil
	})
}
