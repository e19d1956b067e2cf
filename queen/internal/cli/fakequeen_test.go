package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/queen/internal/cli"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// baseTime is when every fake job happens; event n is n ms after it.
var baseTime = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// fakeQueen speaks the queen's HTTP contract from memory: job records, an
// SSE stream per job that replays, resumes after Last-Event-ID and follows
// live, hives, cancel and the JSON error shape.
type fakeQueen struct {
	tb  testing.TB
	srv *httptest.Server
	// token, when set, is required as a bearer token.
	token string
	// script narrates each new job in a goroutine of its own; nil ends
	// every job done at once.
	script func(j *fakeJob)
	// dropAfter > 0 cuts each job's first stream connection in the middle
	// of the event after the first dropAfter, as a dying proxy would.
	dropAfter int

	done chan struct{} // closed at cleanup, so scripts stop waiting
	wg   sync.WaitGroup

	mu        sync.Mutex
	seq       uint64 // last stream sequence, global like the NARR stream's
	jobs      map[string]*fakeJob
	order     []string
	hives     []api.Hive
	creates   []fakeCreate
	cancels   []string
	lastIDs   []string // Last-Event-ID of every stream connection
	listQuery []string
}

type fakeCreate struct {
	req  api.JobRequest
	key  string
	auth string
}

type fakeJob struct {
	q         *fakeQueen
	rec       api.Job
	frames    []fakeFrame
	ended     bool
	drops     int
	wake      chan struct{} // closed and replaced whenever frames change
	cancelled chan struct{} // closed by DELETE
	streaming chan struct{} // closed when a client first opens the stream
}

type fakeFrame struct {
	id    uint64
	event string
	data  []byte
}

func newFakeQueen(tb testing.TB) *fakeQueen {
	tb.Helper()
	q := &fakeQueen{tb: tb, jobs: map[string]*fakeJob{}, done: make(chan struct{}), seq: 100}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/jobs", q.create)
	mux.HandleFunc("GET /v1/jobs", q.list)
	mux.HandleFunc("GET /v1/jobs/{id}", q.get)
	mux.HandleFunc("DELETE /v1/jobs/{id}", q.cancel)
	mux.HandleFunc("GET /v1/jobs/{id}/stream", q.stream)
	mux.HandleFunc("GET /v1/hives", func(w http.ResponseWriter, r *http.Request) {
		q.mu.Lock()
		defer q.mu.Unlock()
		writeJSON(w, 200, api.HiveList{Hives: q.hives})
	})
	q.srv = httptest.NewServer(q.auth(mux))
	tb.Cleanup(func() {
		close(q.done)
		q.srv.CloseClientConnections()
		q.srv.Close()
		q.wg.Wait()
	})
	return q
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: msg}})
}

func (q *fakeQueen) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if q.token != "" && r.Header.Get("Authorization") != "Bearer "+q.token {
			writeError(w, 401, api.CodeUnauthorized, "a valid token is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (q *fakeQueen) create(w http.ResponseWriter, r *http.Request) {
	req, err := api.DecodeJobRequest(r.Body)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		writeError(w, 400, api.CodeValidation, err.Error())
		return
	}
	j := q.newJob(req)
	q.mu.Lock()
	q.creates = append(q.creates, fakeCreate{req: req, key: r.Header.Get("Idempotency-Key"), auth: r.Header.Get("Authorization")})
	script := q.script
	q.mu.Unlock()
	if script == nil {
		script = func(j *fakeJob) { j.end(api.StateDone, nil, "") }
	}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		script(j)
	}()
	writeJSON(w, 201, api.CreateJobResponse{JobID: j.rec.JobID, StreamURL: "/v1/jobs/" + j.rec.JobID + "/stream", JobURL: "/v1/jobs/" + j.rec.JobID})
}

// newJob records a job and narrates its creation, so the stream is
// readable before the answer leaves, as the contract says.
func (q *fakeQueen) newJob(req api.JobRequest) *fakeJob {
	q.mu.Lock()
	id := fmt.Sprintf("job-%d", len(q.order)+1)
	j := &fakeJob{q: q, wake: make(chan struct{}), cancelled: make(chan struct{}), streaming: make(chan struct{}), rec: api.Job{
		JobID: id, Operation: req.Operation, Hive: req.Hive, State: api.StateQueued,
		CreatedAt: baseTime, DeadlineAt: baseTime.Add(req.Timeout()), Attempt: 1, Request: req,
	}}
	q.jobs[id] = j
	q.order = append(q.order, id)
	q.mu.Unlock()
	j.emit(api.SSENarration, api.Event{Actor: "queen", Action: "job_created", Message: "job created"})
	return j
}

// seedJob makes a job that already narrated what script says, without a
// request over HTTP.
func (q *fakeQueen) seedJob(req api.JobRequest, script func(j *fakeJob)) *fakeJob {
	j := q.newJob(req)
	script(j)
	return j
}

func (q *fakeQueen) list(w http.ResponseWriter, r *http.Request) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.listQuery = append(q.listQuery, r.URL.RawQuery)
	out := api.JobList{Jobs: []api.Job{}}
	for i := len(q.order) - 1; i >= 0; i-- {
		out.Jobs = append(out.Jobs, q.jobs[q.order[i]].rec)
	}
	writeJSON(w, 200, out)
}

func (q *fakeQueen) job(w http.ResponseWriter, r *http.Request) *fakeJob {
	q.mu.Lock()
	defer q.mu.Unlock()
	j := q.jobs[r.PathValue("id")]
	if j == nil {
		writeError(w, 404, api.CodeNotFound, "job "+r.PathValue("id")+" not found")
	}
	return j
}

func (q *fakeQueen) get(w http.ResponseWriter, r *http.Request) {
	if j := q.job(w, r); j != nil {
		q.mu.Lock()
		defer q.mu.Unlock()
		writeJSON(w, 200, j.rec)
	}
}

func (q *fakeQueen) cancel(w http.ResponseWriter, r *http.Request) {
	j := q.job(w, r)
	if j == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cancels = append(q.cancels, j.rec.JobID)
	if api.Terminal(j.rec.State) {
		writeError(w, 409, api.CodeConflict, "job "+j.rec.JobID+" already "+j.rec.State)
		return
	}
	if j.rec.State != api.StateCancelling {
		j.rec.State = api.StateCancelling
		close(j.cancelled)
	}
	writeJSON(w, 202, api.CancelResponse{JobID: j.rec.JobID, State: api.StateCancelling})
}

func (q *fakeQueen) stream(w http.ResponseWriter, r *http.Request) {
	j := q.job(w, r)
	if j == nil {
		return
	}
	last, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	q.mu.Lock()
	q.lastIDs = append(q.lastIDs, r.Header.Get("Last-Event-ID"))
	drop := q.dropAfter > 0 && j.drops == 0
	if drop {
		j.drops++
	}
	select {
	case <-j.streaming:
	default:
		close(j.streaming)
	}
	q.mu.Unlock()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(200)
	rc := http.NewResponseController(w)
	_, _ = io.WriteString(w, ": ping\n\n")
	sent := 0
	for {
		q.mu.Lock()
		var pending []fakeFrame
		for _, f := range j.frames {
			if f.id > last {
				pending = append(pending, f)
			}
		}
		ended, wake := j.ended, j.wake
		q.mu.Unlock()
		for _, f := range pending {
			text := fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", f.id, f.event, f.data)
			if drop && sent == q.dropAfter {
				_, _ = io.WriteString(w, text[:len(text)/2])
				_ = rc.Flush()
				panic(http.ErrAbortHandler)
			}
			_, _ = io.WriteString(w, text)
			sent++
			last = f.id
		}
		if ended || r.URL.Query().Get("follow") == "false" {
			_, _ = io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		_ = rc.Flush()
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		}
	}
}

// emit appends one event to the job's stream and wakes its readers.
func (j *fakeJob) emit(event string, ev api.Event) {
	q := j.q
	q.mu.Lock()
	defer q.mu.Unlock()
	q.seq++
	ev.JobID = j.rec.JobID
	n := uint64(len(j.frames) + 1)
	if ev.Seq == 0 {
		ev.Seq = n
	}
	ev.Time = baseTime.Add(time.Duration(n) * time.Millisecond)
	if ev.Level == "" {
		ev.Level = api.LevelInfo
	}
	data, err := json.Marshal(ev)
	if err != nil {
		q.tb.Errorf("encode event: %v", err)
	}
	j.frames = append(j.frames, fakeFrame{id: q.seq, event: event, data: data})
	switch {
	case event == api.SSEEnd:
		j.ended = true
		j.rec.State, j.rec.Error, j.rec.ExitCode = ev.State, ev.Error, ev.ExitCode
		fin := ev.Time
		j.rec.FinishedAt = &fin
	case ev.Action == "started":
		j.rec.State = api.StateRunning
		start := ev.Time
		j.rec.StartedAt = &start
	}
	close(j.wake)
	j.wake = make(chan struct{})
}

func (j *fakeJob) narrate(action, msg string) {
	j.emit(api.SSENarration, api.Event{Actor: "hive-a", Action: action, Message: msg})
}

func (j *fakeJob) output(stream, line string) {
	j.emit(api.SSENarration, api.Event{Actor: "hive-a", Action: "output", Stream: stream, Message: line})
}

func (j *fakeJob) end(state string, exitCode *int, errMsg string) {
	j.emit(api.SSEEnd, api.Event{Actor: "hive-a", Action: "end", State: state, ExitCode: exitCode, Error: errMsg})
}

// waitStream blocks until a client follows the job or the test ends.
func (j *fakeJob) waitStream() {
	select {
	case <-j.streaming:
	case <-j.q.done:
	}
}

// waitCancel blocks until the job is cancelled or the test ends.
func (j *fakeJob) waitCancel() bool {
	select {
	case <-j.cancelled:
		return true
	case <-j.q.done:
		return false
	}
}

func (q *fakeQueen) snapshot() (creates []fakeCreate, cancels, lastIDs []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]fakeCreate(nil), q.creates...), append([]string(nil), q.cancels...), append([]string(nil), q.lastIDs...)
}

// frameIDs lists the stream ids of a job's events.
func (q *fakeQueen) frameIDs(jobID string) []uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var ids []uint64
	for _, f := range q.jobs[jobID].frames {
		ids = append(ids, f.id)
	}
	return ids
}

type result struct {
	code           int
	stdout, stderr string
}

// invocation is one run of the command line against a fake queen.
type invocation struct {
	ctx   context.Context
	env   map[string]string
	stdin string
}

func (q *fakeQueen) run(tb testing.TB, args ...string) result {
	tb.Helper()
	return q.runWith(tb, invocation{}, args...)
}

func (q *fakeQueen) runWith(tb testing.TB, inv invocation, args ...string) result {
	tb.Helper()
	env := map[string]string{"RBEE_QUEEN": q.srv.URL}
	for k, v := range inv.env {
		env[k] = v
	}
	ctx := inv.ctx
	if ctx == nil {
		ctx = tb.Context()
	}
	var stdout, stderr testkit.SyncBuffer
	code := cli.Run(ctx, args, func(k string) string { return env[k] }, strings.NewReader(inv.stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (r result) want(tb testing.TB, code int) {
	tb.Helper()
	if r.code != code {
		tb.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}
