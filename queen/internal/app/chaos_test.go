package app_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// readAll reads a job's whole stream, resuming with Last-Event-ID on the
// given queens in turn whenever a connection breaks.
func readAll(ctx context.Context, queens func() []string, job string) ([]frame, error) {
	var got []frame
	var last uint64
	for try := 0; ctx.Err() == nil; try++ {
		qs := queens()
		fr, done := sseQuiet(ctx, qs[try%len(qs)], job, last, 0)
		got = append(got, fr...)
		if len(fr) > 0 {
			last = fr[len(fr)-1].ID
		}
		if done {
			return got, complete(got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return got, fmt.Errorf("job %s: stream not finished: %v", job, ctx.Err())
}

// Killing a queen mid-stream loses nothing: the client resumes on another
// queen with Last-Event-ID.
func TestQueenKilledMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes")
	}
	ns := mustNATS(t)
	a, qa := queenProcess(t, ns.ClientURL())
	b, _ := queenProcess(t, ns.ClientURL())
	hiveProcess(t, a, ns.ClientURL(), "h1", "--allow-run")
	job := submit(t, a, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "i=0; while [ $i -lt 60 ]; do echo line $i; i=$((i+1)); sleep 0.03; done"}}})
	head, _, _ := sse(t, context.Background(), a, job, 0, 10)
	_ = qa.Process.Kill()
	ctx, cancel := contextTimeout(20 * time.Second)
	defer cancel()
	rest, done, _ := sse(t, ctx, b, job, head[len(head)-1].ID, 0)
	if end := checkComplete(t, append(head, rest...), done); end.State != api.StateDone {
		t.Fatalf("end %+v", end)
	}
}

// Killing one node of a three-node NATS cluster mid-job: the job finishes
// and its stream is whole.
func TestNATSNodeKilledMidJob(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS cluster")
	}
	urls, nodes := natsCluster(t)
	all := strings.Join(urls, ",")
	base, _ := mustQueen(t, all, func(c *app.Config) { c.Replicas = 3 })
	hiveProcess(t, base, all, "h1", "--allow-run")
	var jobs []string
	for range 3 {
		jobs = append(jobs, submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "i=0; while [ $i -lt 80 ]; do echo line $i; i=$((i+1)); sleep 0.05; done"}}}))
	}
	head, _, _ := sse(t, context.Background(), base, jobs[0], 0, 5)
	// The server that leads the narration stream: the hive's publishes
	// in flight are lost with it, and a new leader is elected while the
	// hive keeps writing.
	nc, err := nats.Connect(all)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	narr, err := js.Stream(context.Background(), "NARR")
	nc.Close()
	if err != nil {
		t.Fatal(err)
	}
	leader := narr.CachedInfo().Cluster.Leader
	killed := false
	for i := range urls {
		if fmt.Sprintf("n%d", i+1) == leader {
			_ = nodes[i].Process.Kill()
			killed = true
		}
	}
	if !killed {
		t.Fatalf("no node named %q leads NARR", leader)
	}

	ctx, cancel := contextTimeout(45 * time.Second)
	defer cancel()
	for i, job := range jobs {
		rest, err := readAll(ctx, func() []string { return []string{base} }, job)
		if err == nil && i == 0 {
			err = complete(append(head, dropThrough(rest, head[len(head)-1].ID)...))
		} else if err == nil {
			err = complete(rest)
		}
		if err != nil {
			for _, f := range rest[:min(8, len(rest))] {
				t.Logf("rest %d %s", f.ID, f.Data[:60])
			}
			t.Fatalf("job %d with the stream's leader %s killed: %v", i, leader, err)
		}
	}
	// The cluster still takes new work.
	next := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(20)}})
	frames, err := readAll(ctx, func() []string { return []string{base} }, next)
	if err != nil || len(frames) != 23 {
		t.Fatalf("job after the node loss: %d frames, %v", len(frames), err)
	}
}

// Killing the NATS server a queen is connected to under a client reading a
// job of 3,000 lines on one connection that it never reopens: the queen
// moves to another server of the cluster and the client gets every event
// stored, the end and [DONE]. The client reads slowly, so the queen is
// reading the job's history for it from the stream when the server dies.
func TestNATSServerKilledUnderClient(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS cluster")
	}
	urls, nodes := natsCluster(t)
	// The queen is given n1 alone and learns the others from it; the hive
	// stays on n2. A long hive TTL: the job should outlive any election
	// the kill sets off.
	base, _ := mustQueen(t, urls[0], func(c *app.Config) { c.Replicas, c.HiveTTL = 3, time.Minute })
	hiveProcess(t, base, urls[1], "h1", "--allow-run")
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c",
		"b=0; while [ $b -lt 60 ]; do i=0; while [ $i -lt 50 ]; do echo line $b.$i; i=$((i+1)); done; b=$((b+1)); sleep 0.1; done"}}})
	ctx, cancel := contextTimeout(90 * time.Second)
	defer cancel()
	type result struct {
		frames []frame
		done   bool
		err    error
	}
	read := make(chan result, 1)
	go func() {
		frames, done, _, err := readSSEWith(ctx, slowClient(), base, job, 0, 0, 0)
		read <- result{frames, done, err}
	}()
	time.Sleep(3 * time.Second)
	killed := time.Now()
	_ = nodes[0].Process.Kill()
	r := <-read
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("the stream ended %s after n1 was killed, %d frames", time.Since(killed).Round(100*time.Millisecond), len(r.frames))
	if end := checkComplete(t, r.frames, r.done); end.State != api.StateDone {
		t.Fatalf("end %+v", end)
	}
	// Every event stored: a replay afterwards reads the same story.
	again, done, _ := sse(t, ctx, base, job, 0, 0)
	if !done || len(again) != len(r.frames) {
		t.Fatalf("a replay reads %d frames (done %v), the client %d", len(again), done, len(r.frames))
	}
	for i := range again {
		if again[i] != r.frames[i] {
			t.Fatalf("frame %d: replay %d %s, client %d %s", i, again[i].ID, again[i].Data, r.frames[i].ID, r.frames[i].Data)
		}
	}
	lines := 0
	for _, f := range r.frames {
		if f.event(t).Stream == "stdout" {
			lines++
		}
	}
	// The hive's publishes stall while the stream elects a leader, and
	// the command, whose output fits in its pipe, exits meanwhile: the
	// hive still reads and stores every line before the end.
	if lines != 3000 {
		t.Fatalf("the command's %d lines of 3000 reached the stream", lines)
	}
}

// slowClient reads answers at about 40 KB/s through a small socket buffer,
// like a client on a poor link: a queen writing to it falls behind its
// live feed and reads the rest from the stream.
func slowClient() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	return &http.Client{Transport: slowTransport{&http.Transport{DialContext: d.DialContext}}}
}

type slowTransport struct{ http.RoundTripper }

func (t slowTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(req)
	if err == nil {
		resp.Body = slowBody{resp.Body}
	}
	return resp, err
}

type slowBody struct{ io.ReadCloser }

func (b slowBody) Read(p []byte) (int, error) {
	time.Sleep(25 * time.Millisecond)
	return b.ReadCloser.Read(p[:min(len(p), 1024)])
}

func dropThrough(frames []frame, id uint64) []frame {
	for i, f := range frames {
		if f.ID > id {
			return frames[i:]
		}
	}
	return nil
}

// A randomised soak: jobs keep coming through two queens while hives and
// queens are killed and restarted. Afterwards every job is terminal and
// every stream, read with resumes across queens, is whole.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	ns := mustNATS(t)
	var mu sync.Mutex
	queens := map[int]string{}
	queenCmds := map[int]*exec.Cmd{}
	startQueen := func(i int) {
		base, cmd := queenProcess(t, ns.ClientURL())
		mu.Lock()
		queens[i], queenCmds[i] = base, cmd
		mu.Unlock()
	}
	live := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, q := range queens {
			out = append(out, q)
		}
		return out
	}
	startQueen(0)
	startQueen(1)
	hiveDirs := []string{t.TempDir(), t.TempDir()}
	hives := make([]*exec.Cmd, 2)
	startHive := func(i int) {
		id := fmt.Sprintf("h%d", i)
		hives[i] = exec.Command(hiveBin, "--id", id, "--nats-url", ns.ClientURL(), "--data-dir", hiveDirs[i], "--allow-run", "--slots", "4")
		if err := hives[i].Start(); err != nil {
			t.Fatal(err)
		}
		cmd := hives[i]
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	startHive(0)
	startHive(1)
	waitHive(t, live()[0], "h0")
	waitHive(t, live()[0], "h1")

	duration := 30 * time.Second
	rng := rand.New(rand.NewPCG(1, 2))
	var jobs []string
	deadline := time.Now().Add(duration)
	nextChaos := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		qs := live()
		req := api.JobRequest{Operation: api.OpHiveCheck, Payload: &api.HiveCheck{Events: intp(1 + rng.IntN(300))}}
		if rng.IntN(3) == 0 {
			req = api.JobRequest{Operation: api.OpRun, Payload: &api.Run{Command: []string{"sh", "-c", "echo a; sleep 0.3; echo b"}}}
		}
		var out api.CreateJobResponse
		if code := doQuiet(qs[rng.IntN(len(qs))]+"/v1/jobs", req, &out); code == 201 {
			jobs = append(jobs, out.JobID)
		}
		if time.Now().After(nextChaos) {
			nextChaos = time.Now().Add(3 * time.Second)
			switch rng.IntN(2) {
			case 0:
				i := rng.IntN(2)
				_ = hives[i].Process.Kill()
				_ = hives[i].Wait()
				time.Sleep(500 * time.Millisecond)
				startHive(i)
			case 1:
				i := rng.IntN(2)
				mu.Lock()
				cmd := queenCmds[i]
				delete(queens, i)
				mu.Unlock()
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				startQueen(i)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(jobs) < 100 {
		t.Fatalf("only %d jobs submitted", len(jobs))
	}

	ctx, cancel := contextTimeout(60 * time.Second)
	defer cancel()
	states := map[string]int{}
	for _, id := range jobs {
		var rec api.Job
		for {
			if doQuiet(live()[0]+"/v1/jobs/"+id, nil, &rec) == 200 && api.Terminal(rec.State) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("job %s still %s after the soak", id, rec.State)
			}
			time.Sleep(100 * time.Millisecond)
		}
		states[rec.State]++
		if _, err := readAll(ctx, live, id); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d jobs: %v", len(jobs), states)
}
