//go:build e2e

package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// story is everything one reader received of one job's stream, across all
// its connections, exactly as the queens sent it: the suite reads SSE
// itself rather than through client.Stream, which drops repeated ids and
// would hide a queen that sent an event twice.
type story struct {
	job    string
	frames []client.Frame
	// conns names the queen of each connection, in order.
	conns []string
	done  bool // [DONE] arrived
}

func (s *story) last() uint64 {
	if len(s.frames) == 0 {
		return 0
	}
	return s.frames[len(s.frames)-1].ID
}

// follow reads job's stream from after the given event id until [DONE],
// reconnecting with Last-Event-ID after every broken connection: to the
// next queen in order when rotate, else to the same one. A non-nil stop
// ends the read early, without error, once it returns true.
func (c *cluster) follow(ctx context.Context, job string, queens []queen, after uint64, rotate bool, stop func(*story) bool) (*story, error) {
	s := &story{job: job}
	i := 0
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		q := queens[i%len(queens)]
		from := after
		if l := s.last(); l > 0 {
			from = l
		}
		s.conns = append(s.conns, q.name)
		n := len(s.frames)
		err := c.readOnce(ctx, q, job, from, s, stop)
		switch {
		case err == nil:
			return s, nil
		case errors.Is(err, errStop):
			return s, nil
		case ctx.Err() != nil:
			return s, fmt.Errorf("job %s: %w after %d frames over connections %v (last error %v)", job, ctx.Err(), len(s.frames), s.conns, err)
		case isPermanent(err):
			return s, err
		}
		if len(s.frames) > n {
			wait = 100 * time.Millisecond
		}
		if rotate {
			i++
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

type permanentErr struct{ error }

func isPermanent(err error) bool {
	var p permanentErr
	return errors.As(err, &p)
}

// readOnce reads one connection. nil means [DONE] arrived; errStop that
// stop asked to end the read.
func (c *cluster) readOnce(ctx context.Context, q queen, job string, after uint64, s *story, stop func(*story) bool) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A connection silent for longer than three heartbeats is dead.
	idle := time.AfterFunc(50*time.Second, cancel)
	defer idle.Stop()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, q.url+"/v1/jobs/"+job+"/stream", nil)
	if err != nil {
		return permanentErr{err}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "text/event-stream")
	if after > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(after, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		// Resumed at or past the end: nothing follows.
		s.done = true
		return nil
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("%s: stream %s: %d %s", q.name, job, resp.StatusCode, strings.TrimSpace(string(b)))
		if resp.StatusCode < 500 {
			return permanentErr{err}
		}
		return err
	}
	fr := client.NewFrameReader(resp.Body)
	for {
		f, err := fr.Next()
		if err != nil {
			return fmt.Errorf("%s: %w", q.name, err)
		}
		idle.Reset(50 * time.Second)
		if f.Done() {
			s.done = true
			return nil
		}
		if f.Event == "" && f.ID == 0 && len(f.Data) == 0 {
			continue
		}
		s.frames = append(s.frames, f)
		if stop != nil && stop(s) {
			return errStop
		}
	}
}

// check verifies a complete story: every frame has an id above the one
// before (nothing repeated, nothing out of order), the job's own sequence
// numbers run 1, 2, 3... with no gap, exactly one end arrives, last, and
// [DONE] follows it. It returns the end event.
func check(t testing.TB, s *story) api.Event {
	t.Helper()
	end, err := verify(s)
	if err != nil {
		t.Errorf("job %s (connections %v): %v", s.job, s.conns, err)
	}
	return end
}

func verify(s *story) (api.Event, error) {
	var end api.Event
	var prevID uint64
	ends := 0
	for i, f := range s.frames {
		if f.ID <= prevID {
			return end, fmt.Errorf("frame %d: id %d after id %d: repeated or out of order", i, f.ID, prevID)
		}
		prevID = f.ID
		var e api.Event
		if err := json.Unmarshal(f.Data, &e); err != nil {
			return end, fmt.Errorf("frame %d (id %d, event %q): %v: %s", i, f.ID, f.Event, err, f.Data)
		}
		if e.JobID != s.job {
			return end, fmt.Errorf("frame %d: job %q in the stream of %s", i, e.JobID, s.job)
		}
		if e.Seq != uint64(i+1) {
			return end, fmt.Errorf("frame %d (id %d, %s %s): seq %d, want %d: an event was lost or repeated\n%s", i, f.ID, f.Event, e.Action, e.Seq, i+1, dump(s))
		}
		switch f.Event {
		case api.SSEEnd:
			ends++
			end = e
			if i != len(s.frames)-1 {
				return end, fmt.Errorf("end at frame %d of %d", i, len(s.frames))
			}
			if !api.Terminal(e.State) {
				return end, fmt.Errorf("end with state %q", e.State)
			}
		case api.SSENarration, api.SSEData:
		default:
			return end, fmt.Errorf("frame %d: unknown event %q", i, f.Event)
		}
	}
	if ends != 1 {
		return end, fmt.Errorf("%d end events in %d frames", ends, len(s.frames))
	}
	if !s.done {
		return end, errors.New("no [DONE] after the end")
	}
	return end, nil
}

// dump is a short account of a story for a failure message.
func dump(s *story) string {
	var b strings.Builder
	for i, f := range s.frames {
		if len(s.frames) > 40 && i > 10 && i < len(s.frames)-20 {
			if i == 11 {
				b.WriteString("  ...\n")
			}
			continue
		}
		fmt.Fprintf(&b, "  id %d %s %s\n", f.ID, f.Event, f.Data)
	}
	return b.String()
}

// submit creates a job through queen q and returns its id.
func (c *cluster) submit(t testing.TB, q queen, req api.JobRequest) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := q.cl.CreateJob(ctx, req, "")
	if err != nil {
		t.Fatalf("%s: create %s job: %v", q.name, req.Operation, err)
	}
	c.jobs.add(res.JobID)
	return res.JobID
}

// tick is a run job of n lines, one every interval, on hive.
func tick(hive string, n int, every time.Duration) api.JobRequest {
	return api.JobRequest{Operation: api.OpRun, Hive: hive, Payload: &api.Run{Command: []string{"ticker", "-n", strconv.Itoa(n), "-every", every.String()}}}
}

func hiveCheck(hive string, events int) api.JobRequest {
	return api.JobRequest{Operation: api.OpHiveCheck, Hive: hive, Payload: &api.HiveCheck{Events: &events}}
}

// ledger records every job the suite created and the end each reader saw,
// for the final audit.
type ledger struct {
	mu   sync.Mutex
	jobs map[string]string // job id -> end state seen in its stream ("" until then)
}

func (l *ledger) add(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.jobs == nil {
		l.jobs = map[string]string{}
	}
	l.jobs[id] = ""
}

func (l *ledger) ended(id, state string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.jobs[id] = state
}

// frames stops a read once n frames arrived in all.
func frames(n int) func(*story) bool {
	return func(s *story) bool { return len(s.frames) >= n }
}

// upTo stops a read at the first event that satisfies pred, for a test
// that must act at a known point of a running job.
func upTo(pred func(api.Event) bool) func(*story) bool {
	return func(s *story) bool {
		var e api.Event
		return json.Unmarshal(s.frames[len(s.frames)-1].Data, &e) == nil && pred(e)
	}
}
