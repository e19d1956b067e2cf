package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

var backlogScenario = scenario{
	name:  "backlog",
	title: "jobs accepted while the queue grows, then drained by hives that join",
	how: func(c Config) string {
		return fmt.Sprintf("Baseline, same run: the `sustained` scenario's method (%d submitters, `POST` a "+
			"`hive_check` job with `events: 1` and read its stream, for %s) on a fresh queen and one hive with "+
			"`--slots %d`, stopped before the rest begins. Then, on another fresh queen, %d submitters `POST` "+
			"%d `hive_check` jobs whose label (`pool=later`) no hive carries, so every job stays queued; "+
			"nothing reads their streams. Jobs/s accepted is measured over the whole backlog and over its "+
			"last tenth, where the queue is longest. RSS is the queen's peak until the backlog is queued. "+
			"Cancel: one more job is queued behind them, its stream opened, and the time taken from "+
			"`DELETE /v1/jobs/<id>` to the `end` event with state `cancelled` on that stream. Drain: one "+
			"`hive --simulate %d` process starts %d hives carrying the label (`--slots 4`, every job's work "+
			"a %s pause); drained is the time from starting it until the bench, subscribed to the narration "+
			"stream's republished ends, has seen every job's end; drain jobs/s = jobs ÷ that time, against "+
			"the baseline. Then every job's record is read from the jobs bucket: done, attempt 1, no earlier "+
			"hive, one stored end each, and the queen's `rbee_jobs_finished_total` counts each once.",
			c.SustainedWorkers, c.SustainedFor, c.SustainedSlots, c.SustainedWorkers, c.BacklogJobs,
			c.DrainHives, c.DrainHives, c.HiveWork)
	},
	cluster: func(c Config) ClusterOptions { return ClusterOptions{Slots: 4} },
	metrics: append([]Metric{
		metric("jobs_per_s", "jobs/s accepted, whole backlog", 0, ge(1000)),
		metric("last_jobs_per_s", "jobs/s accepted, last tenth of the backlog", 0, ge(1000)),
		metric("first_jobs_per_s", "jobs/s accepted, first tenth of the backlog", 0, nil),
		metric("post_p99_ms", "POST p99 (ms)", 2, nil),
		metric("post_failed", "POSTs that failed", 0, zero()),
		metric("queen_cpu_ms_per_job", "queen CPU per job accepted (ms)", 3, nil),
		metric("queued_queen_mb", "queen peak RSS with the backlog queued (MB, 10⁶ bytes)", 1, le(300)),
		metric("cancel_ms", "cancel of a queued job: DELETE to its cancelled end event (ms)", 2, le(1000)),
		metric("drain_s", "drain: hives started → every job's end seen (s)", 2, nil),
		metric("drain_jobs_per_s", "drain: jobs/s", 0, nil),
		metric("base_jobs_per_s", "baseline: one-hive sustained jobs/s, same run", 0, nil),
		metric("drain_ratio", "drain jobs/s ÷ one-hive sustained jobs/s", 2, ge(1)),
		metric("drain_first_end_s", "drain: hives started → first end seen (s)", 2, nil),
		metric("drain_hives_used", "drain: hives that ran a job", 0, nil),
		metric("drain_queen_cpu_ms_per_job", "drain: queen CPU per job (ms)", 3, nil),
		metric("drain_sim_cpu_ms_per_job", "drain: simulated hives' CPU per job (ms)", 3, nil),
		metric("drain_lost", "drain: jobs not ended (record not terminal or missing)", 0, zero()),
		metric("drain_not_first", "drain: jobs ended other than done on attempt 1 with no earlier hive", 0, zero()),
		metric("drain_extra_ends", "drain: ends stored beyond one per job", 0, zero()),
		metric("drain_counted_diff", "drain: queen's done count − jobs", 0, zero()),
		metric("drain_others_cpu_s", "drain: other processes' CPU meanwhile (s)", 2, nil),
		metric("base_queen_cpu_ms_per_job", "baseline: queen CPU per job (ms)", 3, nil),
		metric("queen_peak_mib", "queen peak RSS, whole run (MiB)", 1, nil),
	}, verifyMetrics...),
	run: runBacklog,
}

// backlogLabel is the label the backlog's jobs need; only the drain's
// simulated hives carry it.
const backlogLabel = "pool=later"

func runBacklog(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()

	// The baseline first, on a queen and hive of its own, gone before the
	// backlog's queen is measured.
	base, err := sustainedBaseline(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	r.Tally.Merge(base.Tally)
	r.Set("base_jobs_per_s", base.Values["jobs_per_s"])
	r.Set("base_queen_cpu_ms_per_job", base.Values["queen_cpu_ms_per_job"])
	_ = ResetPeak(e.Cluster.Queen.Pid)

	ids, err := queueBacklog(ctx, e, r)
	if err != nil {
		return nil, err
	}
	if qm, err := ReadMem(e.Cluster.Queen.Pid); err == nil {
		r.Set("queued_queen_mb", float64(qm.Peak)/1e6)
	}
	if err := timeCancel(ctx, e, r); err != nil {
		return nil, fmt.Errorf("cancel: %w", err)
	}
	if err := drain(ctx, e, r, ids); err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	if b := r.Values["base_jobs_per_s"]; b > 0 {
		r.Set("drain_ratio", r.Values["drain_jobs_per_s"]/b)
	}
	return r, nil
}

// sustainedBaseline runs the sustained scenario on a fresh cluster of its
// own and stops it.
func sustainedBaseline(ctx context.Context, e *Env) (*Run, error) {
	co := sustainedScenario.cluster(e.Cfg)
	// The backlog's queen, already up, holds a profiler address given in
	// -queen-flags: the baseline's queen goes without one.
	co.QueenFlags = append(co.QueenFlags, withoutFlag(e.Cfg.QueenFlags, "--pprof-addr")...)
	co.HiveFlags = append(co.HiveFlags, e.Cfg.HiveFlags...)
	cl, err := StartCluster(ctx, e.Cfg.Bin, co, e.Cfg.Settle, e.Cfg.Keep)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	sctx, stop := cl.Watch(ctx)
	defer stop()
	be := &Env{Cfg: e.Cfg, Cluster: cl, Run: e.Run, log: func(format string, args ...any) {
		e.Logf("baseline: "+format, args...)
	}}
	run, err := runSustained(sctx, be)
	if cerr := cl.Check(); cerr != nil {
		err = cerr
	}
	return run, err
}

// withoutFlag is flags less the flag name and its value, in either of the
// forms "--name value" and "--name=value".
func withoutFlag(flags []string, name string) []string {
	var out []string
	for i := 0; i < len(flags); i++ {
		switch {
		case flags[i] == name:
			i++ // and its value
		case strings.HasPrefix(flags[i], name+"="):
		default:
			out = append(out, flags[i])
		}
	}
	return out
}

// queueBacklog posts the backlog and returns the ids of the jobs accepted.
func queueBacklog(ctx context.Context, e *Env, r *Run) ([]string, error) {
	w, n := e.Cfg.SustainedWorkers, e.Cfg.BacklogJobs
	c := NewClient(e.Cluster.URL, 4*w)
	defer c.Close()
	body := backlogBody()
	// done[i] is when the i-th accepted job was answered, ids[i] its id.
	done := make([]time.Time, n)
	ids := make([]string, n)
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
				job, err := c.Create(ctx, body)
				if err != nil {
					failed.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
				k := accepted.Add(1) - 1
				done[k], ids[k] = time.Now(), job.JobID
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
	r.Set("others_cpu_s", u[Others].CPU.Seconds())
	got := int(accepted.Load())
	r.Set("post_failed", float64(failed.Load()))
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
	return ids[:got], nil
}

func backlogBody() []byte {
	k, v, _ := strings.Cut(backlogLabel, "=")
	return []byte(`{"operation":"hive_check","labels":{"` + k + `":"` + v + `"},"events":1}`)
}

// timeCancel queues one more job behind the backlog, opens its stream and
// times DELETE → the cancelled end event on it.
func timeCancel(ctx context.Context, e *Env, r *Run) error {
	c := NewClient(e.Cluster.URL, 2)
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	job, err := c.Create(cctx, backlogBody())
	if err != nil {
		return err
	}
	st, err := c.Open(cctx, job.StreamURL, 0, false, 4096)
	if err != nil {
		return err
	}
	defer st.Close()
	v := &Verifier{JobID: job.JobID, WantState: api.StateCancelled}
	asked := time.Now()
	if err := c.Cancel(cctx, job.JobID); err != nil {
		return err
	}
	var ended time.Time
	err = st.Follow(v, func(f Frame) error {
		if f.Kind == KindEnd && ended.IsZero() {
			ended = time.Now()
		}
		return nil
	})
	res := v.Result()
	if err != nil {
		res.Problems = append(res.Problems, "read stream: "+err.Error())
	}
	r.Tally.Add(job.JobID, res)
	if ended.IsZero() || res.State != api.StateCancelled {
		return fmt.Errorf("job %s: no cancelled end (state %q, %v)", job.JobID, res.State, res.Problems)
	}
	took := ended.Sub(asked)
	r.Set("cancel_ms", ms(took))
	e.Logf("a queued job cancelled behind %d others: its end came %s after the DELETE", e.Cfg.BacklogJobs, took.Round(time.Microsecond))
	return nil
}

// drain starts the simulated hives that carry the backlog's label and
// waits until every job's end is stored, then checks every record.
func drain(ctx context.Context, e *Env, r *Run, ids []string) error {
	n := len(ids)
	want := make(map[string]bool, n)
	for _, id := range ids {
		want[id] = true
	}
	nc, err := nats.Connect(e.Cluster.NATSURL, nats.Name("rbee-bench drain"))
	if err != nil {
		return err
	}
	defer nc.Close()
	// Each stored end is republished once on live.narr.<job>.<writer>.end.<attempt>.
	var mu sync.Mutex
	ends := make(map[string]int, n)
	var seen, extra int
	var first, last time.Time
	all := make(chan struct{})
	sub, err := nc.Subscribe("live."+bus.NarrEndAll, func(m *nats.Msg) {
		job, _, _, ok := bus.ParseNarr(strings.TrimPrefix(m.Subject, "live."))
		if !ok {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if !want[job] {
			return
		}
		if ends[job]++; ends[job] > 1 {
			extra++
			return
		}
		seen++
		if first.IsZero() {
			first = now
		}
		last = now
		if seen == n {
			close(all)
		}
	})
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}

	t0 := time.Now()
	sim, err := startProc("drain hives", filepath.Join(e.Cfg.Bin, "hive"), []string{
		"--id", "drain", "--nats-url", e.Cluster.NATSURL, "--data-dir", filepath.Join(e.Cluster.Dir, "drain"),
		"--slots", "4", "--labels", backlogLabel, "--simulate", strconv.Itoa(e.Cfg.DrainHives),
		"--simulate-work", e.Cfg.HiveWork.String(),
	}, filepath.Join(e.Cluster.Dir, "drain.log"))
	if err != nil {
		return err
	}
	defer sim.Stop(10 * time.Second)
	meter := NewMeter(map[string]int{"queen": e.Cluster.Queen.Pid, "hive": e.Cluster.Hive.Pid, "sim": sim.Pid, "bench": 0})
	// A generous bound: a tenth of the one-hive rate would still finish.
	limit := 2*time.Minute + time.Duration(n)*10*time.Millisecond
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
wait:
	for {
		select {
		case <-all:
			break wait
		case <-ctx.Done():
			return ctx.Err()
		case <-sim.exited:
			return fmt.Errorf("the simulated hives stopped: %v", sim.exitError())
		case <-progress.C:
			mu.Lock()
			s := seen
			mu.Unlock()
			e.Logf("drain: %d of %d jobs ended after %s", s, n, time.Since(t0).Round(time.Second))
			if time.Since(t0) > limit {
				return fmt.Errorf("only %d of %d jobs ended after %s", s, n, limit)
			}
		}
	}
	u, _ := meter.Stop()
	mu.Lock()
	took, firstAt := last.Sub(t0), first.Sub(t0)
	mu.Unlock()
	r.Set("drain_s", took.Seconds())
	r.Set("drain_first_end_s", firstAt.Seconds())
	r.Set("drain_jobs_per_s", float64(n)/took.Seconds())
	r.Set("drain_queen_cpu_ms_per_job", ms(u["queen"].CPU)/float64(n))
	r.Set("drain_sim_cpu_ms_per_job", ms(u["sim"].CPU)/float64(n))
	r.Set("drain_others_cpu_s", u[Others].CPU.Seconds())
	r.Set("others_cpu_s", r.Values["others_cpu_s"]+u[Others].CPU.Seconds())
	e.Logf("%d jobs drained by %d hives in %s: %.0f jobs/s (first end after %s; baseline %.0f jobs/s)", n, e.Cfg.DrainHives,
		took.Round(time.Millisecond), float64(n)/took.Seconds(), firstAt.Round(time.Millisecond), r.Values["base_jobs_per_s"])

	// Ends are stored before the records say so: give the applier a moment.
	var v drainVerdict
	for stop := time.Now().Add(30 * time.Second); ; {
		if v, err = checkRecords(ctx, e.Cluster.NATSURL, ids); err != nil {
			return err
		}
		if v.open == 0 || time.Now().After(stop) {
			break
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
	mu.Lock()
	r.Set("drain_extra_ends", float64(extra))
	mu.Unlock()
	r.Set("drain_lost", float64(v.open+v.missing))
	r.Set("drain_not_first", float64(v.notFirst))
	r.Set("drain_hives_used", float64(len(v.hives)))
	for _, p := range v.problems {
		r.Note("drain: %s", p)
	}
	counted, err := finishedCount(ctx, e.Cluster.URL, api.OpHiveCheck, api.StateDone)
	if err != nil {
		r.Note("drain: could not read the queen's metrics: %v", err)
	} else {
		r.Set("drain_counted_diff", counted-float64(n))
	}
	e.Logf("records: %d not ended, %d missing, %d not done on attempt 1, %d extra ends; %d hives used",
		v.open, v.missing, v.notFirst, extra, len(v.hives))
	return nil
}

// drainVerdict is what the jobs bucket says of the drained jobs.
type drainVerdict struct {
	open, missing, notFirst int
	hives                   map[string]bool
	problems                []string
}

// checkRecords reads every record of the jobs bucket once and judges the
// records of ids: ended done, on attempt 1, with no earlier hive.
func checkRecords(ctx context.Context, natsURL string, ids []string) (drainVerdict, error) {
	v := drainVerdict{hives: map[string]bool{}}
	nc, err := nats.Connect(natsURL, nats.Name("rbee-bench records"))
	if err != nil {
		return v, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return v, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	kv, err := js.KeyValue(rctx, bus.JobsBucket)
	if err != nil {
		return v, err
	}
	w, err := kv.WatchAll(rctx, jetstream.IgnoreDeletes())
	if err != nil {
		return v, err
	}
	defer w.Stop()
	// Only what the verdict needs, so 100,000 records stay small.
	type rec struct {
		State     string            `json:"state"`
		Hive      string            `json:"hive"`
		Attempt   int               `json:"attempt"`
		PastHives []json.RawMessage `json:"past_hives"`
		Error     string            `json:"error"`
	}
	recs := make(map[string]rec, len(ids))
	for ent := range w.Updates() {
		if ent == nil {
			break
		}
		var j rec
		if err := json.Unmarshal(ent.Value(), &j); err != nil {
			return v, fmt.Errorf("record %s: %w", ent.Key(), err)
		}
		recs[ent.Key()] = j
	}
	if rctx.Err() != nil {
		return v, fmt.Errorf("read the jobs bucket: %w", rctx.Err())
	}
	note := func(format string, args ...any) {
		if len(v.problems) < 5 {
			v.problems = append(v.problems, fmt.Sprintf(format, args...))
		}
	}
	for _, id := range ids {
		j, ok := recs[id]
		switch {
		case !ok:
			v.missing++
			note("job %s: no record", id)
		case !api.Terminal(j.State):
			v.open++
			note("job %s: still %s", id, j.State)
		case j.State != api.StateDone || j.Attempt != 1 || len(j.PastHives) > 0:
			v.notFirst++
			note("job %s: %s on attempt %d, %d earlier hives, error %q", id, j.State, j.Attempt, len(j.PastHives), j.Error)
		default:
			v.hives[j.Hive] = true
		}
	}
	return v, nil
}

// finishedCount reads rbee_jobs_finished_total for one operation and end
// state from the queen's /metrics.
func finishedCount(ctx context.Context, base, op, state string) (float64, error) {
	c := NewClient(base, 1)
	defer c.Close()
	return scrape(ctx, c, `rbee_jobs_finished_total{operation="`+op+`",state="`+state+`"}`)
}

// scrape reads the value of one series of the queen's /metrics, named and
// labelled exactly as the queen writes it.
func scrape(ctx context.Context, c *Client, series string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	prefix := series + " "
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s in /metrics", series)
}
