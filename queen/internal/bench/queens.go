package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/bus"
)

var queensScenario = scenario{
	name:  "queens",
	title: "what a second and third queen cost NATS per event",
	how: func(c Config) string {
		return fmt.Sprintf("One cluster, measured three times over: with the usual queen (which embeds NATS), then "+
			"with a second and then a third `queen --nats-url` on the same NATS, each started and given %s to "+
			"settle before its phase. Each phase runs the same narration load: %d `hive_check` jobs with `events: "+
			"%d` and `payload_bytes: %d`, %d at a time, each followed by one SSE client on the first queen and "+
			"verified. Before and after each phase the bench reads every queen's `/metrics`: "+
			"`rbee_nats_received_bytes_total` and `_messages_total` count what the NATS server sent that queen's "+
			"connection (message headers and payload, not protocol lines); after the last stream ends it waits "+
			"until no queen's count moves for %s, so tails that lag are counted. Egress per event is the sum over "+
			"the queens ÷ the phase's events (check events plus job_created, started and end). One copy is the "+
			"narration read once: at the end the bench reads the whole `NARR` stream (all phases' jobs) with an "+
			"ordered consumer on a connection of its own and counts it the same way (`nats.Conn.Stats`), ÷ all "+
			"phases' events. An added queen's increment is (phase k − phase k−1) ÷ one copy: 1 means every "+
			"queen receives all narration whether or not it has a client. The goal is judged on an added queen's "+
			"own bytes in its phase ÷ one copy, which has no client: the sum's increment also carries the first "+
			"queen's share, which moves from phase to phase with its clients' catch-ups "+
			"(`rbee_sse_client_overflows_total`, each a read of history on its connection). CPU per event is the first queen's "+
			"(its embedded NATS server included) and all queens' together, from /proc: noisy on a shared machine, "+
			"where the byte counts are exact.",
			c.Settle, c.QueensJobs, c.QueensEvents, c.Payload, queensParallel, queensQuiet)
	},
	cluster: func(Config) ClusterOptions { return ClusterOptions{Slots: queensParallel} },
	metrics: append([]Metric{
		metric("q1_bytes_per_event", "1 queen: NATS → queens bytes per event", 1, nil),
		metric("q2_bytes_per_event", "2 queens: NATS → queens bytes per event", 1, nil),
		metric("q3_bytes_per_event", "3 queens: NATS → queens bytes per event", 1, nil),
		metric("q2_own_copies", "2nd queen's own bytes in its phase (copies of the narration)", 3, lt(1)),
		metric("q3_own_copies", "3rd queen's own bytes in its phase (copies of the narration)", 3, lt(1)),
		metric("q2_added_copies", "2nd queen adds to the sum (copies, bytes)", 3, nil),
		metric("q3_added_copies", "3rd queen adds to the sum (copies, bytes)", 3, nil),
		metric("q2_added_msg_copies", "2nd queen adds to the sum (copies, messages)", 3, nil),
		metric("q3_added_msg_copies", "3rd queen adds to the sum (copies, messages)", 3, nil),
		metric("q1_first_bytes_per_event", "1 queen: first queen's bytes per event", 1, nil),
		metric("q2_first_bytes_per_event", "2 queens: first queen's bytes per event", 1, nil),
		metric("q3_first_bytes_per_event", "3 queens: first queen's bytes per event", 1, nil),
		metric("q1_overflows", "1 queen: SSE clients switched to catching up", 0, nil),
		metric("q2_overflows", "2 queens: SSE clients switched to catching up", 0, nil),
		metric("q3_overflows", "3 queens: SSE clients switched to catching up", 0, nil),
		metric("copy_bytes_per_event", "one copy: the narration read once, bytes per event", 1, nil),
		metric("copy_msgs_per_event", "one copy: the narration read once, messages per event", 3, nil),
		metric("q1_msgs_per_event", "1 queen: NATS → queens messages per event", 3, nil),
		metric("q2_msgs_per_event", "2 queens: NATS → queens messages per event", 3, nil),
		metric("q3_msgs_per_event", "3 queens: NATS → queens messages per event", 3, nil),
		metric("q1_sent_bytes_per_event", "1 queen: queens → NATS bytes per event", 1, nil),
		metric("q3_sent_bytes_per_event", "3 queens: queens → NATS bytes per event", 1, nil),
		metric("q1_nats_queen_cpu_us", "1 queen: first queen (with NATS) CPU per event (µs)", 2, nil),
		metric("q2_nats_queen_cpu_us", "2 queens: first queen (with NATS) CPU per event (µs)", 2, nil),
		metric("q3_nats_queen_cpu_us", "3 queens: first queen (with NATS) CPU per event (µs)", 2, nil),
		metric("q1_queens_cpu_us", "1 queen: all queens' CPU per event (µs)", 2, nil),
		metric("q2_queens_cpu_us", "2 queens: all queens' CPU per event (µs)", 2, nil),
		metric("q3_queens_cpu_us", "3 queens: all queens' CPU per event (µs)", 2, nil),
		metric("q1_events_per_s", "1 queen: events/s, first POST to last [DONE]", 0, nil),
		metric("q3_events_per_s", "3 queens: events/s, first POST to last [DONE]", 0, nil),
	}, verifyMetrics...),
	run: runQueens,
}

const (
	// queensParallel is how many jobs of a phase run at once: the hive's
	// slots.
	queensParallel = 4
	// queensQuiet is how long every queen's received count must stay put
	// before a phase's traffic is read.
	queensQuiet = 500 * time.Millisecond
	// queensMost is the most queens the scenario runs.
	queensMost = 3
)

// natsTraffic is what one queen's NATS connection has received and sent,
// and how often its SSE clients were switched to catching up from the
// stream (each catch-up reads history again, on the same connection).
type natsTraffic struct{ inBytes, inMsgs, outBytes, outMsgs, overflows float64 }

func (a natsTraffic) sub(b natsTraffic) natsTraffic {
	return natsTraffic{a.inBytes - b.inBytes, a.inMsgs - b.inMsgs, a.outBytes - b.outBytes, a.outMsgs - b.outMsgs, a.overflows - b.overflows}
}

func runQueens(ctx context.Context, e *Env) (*Run, error) {
	r := newRun()
	cl := e.Cluster
	urls, pids := []string{cl.URL}, map[string]int{"queen": cl.Queen.Pid}
	c := NewClient(cl.URL, 2*queensParallel)
	defer c.Close()
	var others time.Duration
	var sums []natsTraffic
	// own is what each added queen received per event in its own phase.
	var own []float64
	var total uint64
	for k := 1; k <= queensMost; k++ {
		if k > 1 {
			q, url, err := startExtraQueen(ctx, e, k)
			if err != nil {
				return nil, fmt.Errorf("queen %d: %w", k, err)
			}
			defer q.Stop(5 * time.Second)
			urls, pids["queen"+strconv.Itoa(k)] = append(urls, url), q.Pid
			if err := sleepCtx(ctx, e.Cfg.Settle); err != nil {
				return nil, err
			}
		}
		before, err := settledTraffic(ctx, urls)
		if err != nil {
			return nil, err
		}
		meter := NewMeter(pids)
		t0 := time.Now()
		events, err := queensLoad(ctx, e, c, r)
		wall := time.Since(t0)
		if err != nil {
			return r, err
		}
		after, err := settledTraffic(ctx, urls)
		u, _ := meter.Stop()
		if err != nil {
			return nil, err
		}
		others += u[Others].CPU
		var sum natsTraffic
		var queensCPU time.Duration
		n := float64(events)
		p := "q" + strconv.Itoa(k) + "_"
		for i := range urls {
			d := after[i].sub(before[i])
			sum = natsTraffic{sum.inBytes + d.inBytes, sum.inMsgs + d.inMsgs, sum.outBytes + d.outBytes, sum.outMsgs + d.outMsgs, sum.overflows + d.overflows}
			if i == 0 {
				r.Set(p+"first_bytes_per_event", d.inBytes/n)
				r.Set(p+"overflows", d.overflows)
			}
			if i == k-1 && k > 1 {
				own = append(own, d.inBytes/n)
			}
		}
		for _, us := range u {
			queensCPU += us.CPU
		}
		queensCPU -= u[Others].CPU
		r.Set(p+"bytes_per_event", sum.inBytes/n)
		r.Set(p+"msgs_per_event", sum.inMsgs/n)
		r.Set(p+"sent_bytes_per_event", sum.outBytes/n)
		r.Set(p+"nats_queen_cpu_us", float64(u["queen"].CPU.Microseconds())/n)
		r.Set(p+"queens_cpu_us", float64(queensCPU.Microseconds())/n)
		r.Set(p+"events_per_s", n/wall.Seconds())
		sums, total = append(sums, natsTraffic{inBytes: sum.inBytes / n, inMsgs: sum.inMsgs / n}), total+events
		e.Logf("%d queen(s): %d events, %.1f bytes and %.3f messages per event NATS → queens, first queen %.2f µs CPU per event",
			k, events, sum.inBytes/n, sum.inMsgs/n, float64(u["queen"].CPU.Microseconds())/n)
	}
	r.Set("others_cpu_s", others.Seconds())
	one, err := readNarration(ctx, cl.NATSURL)
	if err != nil {
		return r, fmt.Errorf("read the narration once: %w", err)
	}
	copyBytes, copyMsgs := one.inBytes/float64(total), one.inMsgs/float64(total)
	r.Set("copy_bytes_per_event", copyBytes)
	r.Set("copy_msgs_per_event", copyMsgs)
	for k := 2; k <= queensMost; k++ {
		p := "q" + strconv.Itoa(k) + "_"
		r.Set(p+"added_copies", (sums[k-1].inBytes-sums[k-2].inBytes)/copyBytes)
		r.Set(p+"added_msg_copies", (sums[k-1].inMsgs-sums[k-2].inMsgs)/copyMsgs)
		r.Set(p+"own_copies", own[k-2]/copyBytes)
	}
	e.Logf("one copy: %.1f bytes and %.3f messages per event; added queens: %.3f and %.3f copies (bytes)",
		copyBytes, copyMsgs, r.Values["q2_added_copies"], r.Values["q3_added_copies"])
	return r, nil
}

// readNarration reads the whole narration stream once with an ordered
// consumer, as a queen's tail does, on a connection of its own, and returns
// what that connection received: one copy of the narration, counted as the
// queens' counters count it (flow control and heartbeats included).
func readNarration(ctx context.Context, url string) (natsTraffic, error) {
	nc, err := nats.Connect(url, nats.Name("rbee-bench narration copy"))
	if err != nil {
		return natsTraffic{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return natsTraffic{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	st, err := js.Stream(rctx, bus.NarrStream)
	if err != nil {
		return natsTraffic{}, err
	}
	info, err := st.Info(rctx)
	if err != nil {
		return natsTraffic{}, err
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(rctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return natsTraffic{}, err
	}
	all := make(chan struct{})
	var once sync.Once
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if md, err := m.Metadata(); err == nil && md.Sequence.Stream >= last {
			once.Do(func() { close(all) })
		}
	}, jetstream.PullMaxMessages(2048))
	if err != nil {
		return natsTraffic{}, err
	}
	select {
	case <-all:
	case <-rctx.Done():
		cc.Stop()
		return natsTraffic{}, fmt.Errorf("not all of %d messages read: %w", info.State.Msgs, rctx.Err())
	}
	cc.Stop()
	s := nc.Stats()
	return natsTraffic{inBytes: float64(s.InBytes), inMsgs: float64(s.InMsgs)}, nil
}

// queensLoad runs one phase's jobs, queensParallel at a time, each followed
// and verified by one SSE client on the first queen, and returns the events
// they narrated.
func queensLoad(ctx context.Context, e *Env, c *Client, r *Run) (uint64, error) {
	body := CheckBody(e.Cfg.QueensEvents, e.Cfg.Payload)
	expect := checkExpect(e.Cfg.QueensEvents)
	var next atomic.Int64
	var events atomic.Uint64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range queensParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && next.Add(1) <= int64(e.Cfg.QueensJobs) {
				job, err := c.Create(ctx, body)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				res := FollowJob(ctx, c, job, expect, 256<<10, nil)
				r.Tally.Add(job.JobID, res)
				events.Add(expect)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return events.Load(), firstErr
}

// settledTraffic reads every queen's NATS traffic until no queen's
// received count has moved for queensQuiet, or 30 s have passed.
func settledTraffic(ctx context.Context, urls []string) ([]natsTraffic, error) {
	deadline := time.Now().Add(30 * time.Second)
	var last []natsTraffic
	for {
		now := make([]natsTraffic, len(urls))
		for i, u := range urls {
			t, err := scrapeTraffic(ctx, u)
			if err != nil {
				return nil, fmt.Errorf("queen %d /metrics: %w", i+1, err)
			}
			now[i] = t
		}
		if last != nil {
			still := true
			for i := range now {
				still = still && now[i].inMsgs == last[i].inMsgs
			}
			if still || time.Now().After(deadline) {
				return now, nil
			}
		}
		last = now
		if err := sleepCtx(ctx, queensQuiet); err != nil {
			return nil, err
		}
	}
}

// scrapeTraffic reads a queen's rbee_nats_* traffic counters from its
// /metrics.
func scrapeTraffic(ctx context.Context, base string) (natsTraffic, error) {
	var t natsTraffic
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return t, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("%s", resp.Status)
	}
	want := map[string]*float64{
		"rbee_nats_received_bytes_total": &t.inBytes, "rbee_nats_received_messages_total": &t.inMsgs,
		"rbee_nats_sent_bytes_total": &t.outBytes, "rbee_nats_sent_messages_total": &t.outMsgs,
		"rbee_sse_client_overflows_total": &t.overflows,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			if *p, err = strconv.ParseFloat(strings.TrimSpace(val), 64); err != nil {
				return t, fmt.Errorf("%s: %w", name, err)
			}
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return t, err
	}
	if found != len(want) {
		return t, fmt.Errorf("%d of the %d counters found", found, len(want))
	}
	return t, nil
}
