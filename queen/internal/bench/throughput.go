package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var throughputScenario = scenario{
	name:  "throughput",
	title: "one job's narration, hive to SSE client, against raw JetStream",
	how: func(c Config) string {
		return fmt.Sprintf("One `hive_check` job with `events: %d` and `payload_bytes: %d`; one SSE client connects "+
			"as soon as the POST answers. Rate = events (check events plus job_created, started and end) from "+
			"the start of the POST to `[DONE]`, every event verified. Baseline in the same run, on the same "+
			"queen's embedded NATS over TCP: a temporary file-storage stream on `bench.raw.>`, %d messages of the "+
			"job's mean stored event size, published with nats.go `jetstream.PublishAsync` "+
			"(`WithPublishAsyncMaxPending(4096)`) while an ordered consumer (`PullMaxMessages(2048)`, as the "+
			"queen's tail) consumes them; rate = messages / (first publish → last consumed). The stream is "+
			"deleted afterwards. Goal: the job reaches at least half of the baseline.",
			c.ThroughputEvents, c.Payload, c.BaselineMsgs)
	},
	cluster: func(Config) ClusterOptions { return ClusterOptions{Slots: 4} },
	metrics: append([]Metric{
		metric("ratio", "job events/s ÷ raw JetStream msgs/s", 2, ge(0.5)),
		metric("sse_events_per_s", "job: events/s, POST to [DONE]", 0, nil),
		metric("sse_mib_per_s", "job: SSE MiB/s received", 1, nil),
		metric("event_bytes", "job: mean stored event size (bytes)", 0, nil),
		metric("first_event_ms", "job: POST to first check event (ms)", 1, nil),
		metric("sse_seconds", "job: POST to [DONE] (s)", 2, nil),
		metric("raw_msgs_per_s", "raw JetStream: msgs/s", 0, nil),
		metric("raw_publish_per_s", "raw JetStream: publish loop msgs/s", 0, nil),
		metric("raw_seconds", "raw JetStream: first publish to last consumed (s)", 2, nil),
		metric("job_queen_cpu_s", "job: queen CPU (s)", 2, nil),
		metric("job_hive_cpu_s", "job: hive CPU (s)", 2, nil),
		metric("job_bench_cpu_s", "job: bench CPU (s)", 2, nil),
		metric("raw_queen_cpu_s", "raw: queen CPU (s)", 2, nil),
		metric("raw_bench_cpu_s", "raw: bench CPU (s)", 2, nil),
		metric("queen_peak_mib", "queen peak RSS (MiB)", 1, nil),
		metric("hive_peak_mib", "hive peak RSS (MiB)", 1, nil),
	}, verifyMetrics...),
	run: runThroughput,
}

func runThroughput(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	c := NewClient(e.Cluster.URL, 4)
	defer c.Close()
	n := e.Cfg.ThroughputEvents
	jctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()

	meter := NewMeter(e.Cluster.Pids())
	t0 := time.Now()
	job, err := c.Create(jctx, CheckBody(n, e.Cfg.Payload))
	if err != nil {
		return nil, err
	}
	var sizeSum, sizeN uint64
	var first, done time.Time
	v := &Verifier{JobID: job.JobID, Expect: checkExpect(n)}
	st, err := c.Open(jctx, job.StreamURL, 0, false, 256<<10)
	if err != nil {
		return nil, err
	}
	err = st.Follow(v, func(f Frame) error {
		switch {
		case f.Done:
			done = time.Now()
		case f.Kind == KindNarration && bytes.Contains(f.Data, []byte(`"action":"event"`)):
			if first.IsZero() {
				first = time.Now()
			}
			sizeSum += uint64(len(f.Data))
			sizeN++
		}
		return nil
	})
	_ = st.Close()
	res := v.Result()
	if err != nil {
		res.Problems = append(res.Problems, "read stream: "+err.Error())
	}
	r.Tally.Add(job.JobID, res)
	u, _ := meter.Stop()
	r.SetUsage("job_", u)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if done.IsZero() || sizeN == 0 {
		return r, fmt.Errorf("the job's stream did not complete: %s", strings.Join(res.Problems, "; "))
	}
	wall := done.Sub(t0)
	rate := float64(checkExpect(n)) / wall.Seconds()
	size := int(sizeSum / sizeN)
	r.Set("sse_events_per_s", rate)
	r.Set("sse_seconds", wall.Seconds())
	r.Set("event_bytes", float64(size))
	r.Set("first_event_ms", ms(first.Sub(t0)))
	r.Set("sse_mib_per_s", float64(st.Bytes)/(1<<20)/wall.Seconds())
	e.Logf("job: %d events in %s: %.0f events/s (mean event %d bytes)", checkExpect(n), wall.Round(time.Millisecond), rate, size)

	meter = NewMeter(e.Cluster.Pids())
	raw, err := rawJetStream(ctx, e.Cluster.NATSURL, e.Cfg.BaselineMsgs, size)
	u, _ = meter.Stop()
	r.SetUsage("raw_", u)
	if err != nil {
		return r, fmt.Errorf("raw JetStream baseline: %w", err)
	}
	r.Set("raw_msgs_per_s", raw.rate)
	r.Set("raw_publish_per_s", raw.publishRate)
	r.Set("raw_seconds", raw.wall.Seconds())
	r.Set("ratio", rate/raw.rate)
	e.Logf("raw JetStream: %d msgs in %s: %.0f msgs/s; ratio %.2f", e.Cfg.BaselineMsgs, raw.wall.Round(time.Millisecond), raw.rate, rate/raw.rate)
	return r, nil
}

type rawResult struct {
	rate        float64 // consumed msgs/s, first publish to last consumed
	publishRate float64 // msgs/s of the publish loop alone
	wall        time.Duration
}

// rawStream is the temporary stream of the baseline.
const rawStream = "BENCH_RAW"

// rawJetStream publishes n messages of size bytes asynchronously into a
// temporary file-storage stream while an ordered consumer reads them, the
// best case for narration: no HTTP, no JSON, no fan-out.
func rawJetStream(ctx context.Context, url string, n, size int) (rawResult, error) {
	var out rawResult
	var pubErrs atomic.Int64
	nc, err := nats.Connect(url, nats.Name("rbee-bench raw"))
	if err != nil {
		return out, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { pubErrs.Add(1) }))
	if err != nil {
		return out, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(sctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{"bench.raw.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		return out, fmt.Errorf("create stream: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer dcancel()
		_ = js.DeleteStream(dctx, rawStream)
	}()
	cons, err := js.OrderedConsumer(sctx, rawStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"bench.raw.>"}, InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return out, fmt.Errorf("ordered consumer: %w", err)
	}
	var got atomic.Int64
	var last atomic.Int64
	all := make(chan struct{})
	cc, err := cons.Consume(func(jetstream.Msg) {
		if got.Add(1) == int64(n) {
			last.Store(time.Now().UnixNano())
			close(all)
		}
	}, jetstream.PullMaxMessages(2048))
	if err != nil {
		return out, fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()

	payload := bytes.Repeat([]byte("x"), size)
	// A subject as long as a narration subject: narr.<28-char job>.<hive>.ev.
	subj := "bench.raw.0123456789abcdef0123456789ab.bench.ev"
	start := time.Now()
	for i := 0; i < n; i++ {
		for {
			_, err := js.PublishAsync(subj, payload)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return out, fmt.Errorf("publish: %w", err)
			}
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
		}
	}
	out.publishRate = float64(n) / time.Since(start).Seconds()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		return out, errors.New("acks did not arrive within 2 minutes")
	case <-ctx.Done():
		return out, ctx.Err()
	}
	if e := pubErrs.Load(); e > 0 {
		return out, fmt.Errorf("%d publishes failed", e)
	}
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		return out, fmt.Errorf("consumed %d of %d within 2 minutes", got.Load(), n)
	case <-ctx.Done():
		return out, ctx.Err()
	}
	out.wall = time.Unix(0, last.Load()).Sub(start)
	out.rate = float64(n) / out.wall.Seconds()
	return out, nil
}
