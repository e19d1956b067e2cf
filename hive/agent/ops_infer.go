package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"rbee.dev/shared/api"
)

// inferClient talks to local workers. No overall timeout: a generation
// lasts as long as the job's deadline allows.
var inferClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}

// usage tracks which workers serve requests, to route each request to the
// least busy one, to hold requests while every worker is at its parallel
// limit and to stop workers that sat idle past their timeout.
type usage struct {
	mu       sync.Mutex
	inflight map[string]int
	lastUsed map[string]time.Time
	idle     map[string]time.Duration
	// freed is closed, and replaced, whenever a request ends, waking the
	// requests that wait for a worker.
	freed chan struct{}
}

func newUsage() *usage {
	return &usage{inflight: map[string]int{}, lastUsed: map[string]time.Time{}, idle: map[string]time.Duration{}, freed: make(chan struct{})}
}

// errNoWorker means no ready worker serves the model on this hive.
var errNoWorker = errors.New("no ready worker serves the model")

// pickWorker chooses the ready worker of the model with the fewest
// requests in flight among those below their parallel limit, and counts
// one more for it; done releases it. While every ready worker of the
// model is full it waits, as the worker itself would queue the request,
// calling waiting once; it gives up when ctx ends or no ready worker is
// left.
func (a *Agent) pickWorker(ctx context.Context, model string, skip map[string]bool, waiting func(busy int)) (api.Worker, func(), error) {
	told := false
	for {
		w, done, ready, freed := a.tryWorker(model, skip)
		if done != nil {
			return w, done, nil
		}
		if ready == 0 {
			return api.Worker{}, nil, errNoWorker
		}
		if !told {
			told = true
			waiting(ready)
		}
		// The workers may change without a request ending (one becomes
		// ready, or dies): look again now and then.
		select {
		case <-ctx.Done():
			return api.Worker{}, nil, context.Cause(ctx)
		case <-freed:
		case <-time.After(time.Second):
		}
	}
}

// tryWorker is one look for a worker with room, other than those in skip:
// done is nil when there is none, ready counts the model's ready workers
// (those in skip left out), and freed is closed when a request ends.
func (a *Agent) tryWorker(model string, skip map[string]bool) (w api.Worker, done func(), ready int, freed <-chan struct{}) {
	u := a.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	found := false
	for _, c := range a.workers.List() {
		if c.ModelID != model || c.State != api.WorkerReady || skip[c.WorkerID] {
			continue
		}
		ready++
		if c.Parallel > 0 && u.inflight[c.WorkerID] >= c.Parallel {
			continue
		}
		if !found || u.inflight[c.WorkerID] < u.inflight[w.WorkerID] {
			w, found = c, true
		}
	}
	if !found {
		return w, nil, ready, u.freed
	}
	u.inflight[w.WorkerID]++
	u.lastUsed[w.WorkerID] = time.Now()
	id := w.WorkerID
	return w, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.inflight[id]--
		u.lastUsed[id] = time.Now()
		close(u.freed)
		u.freed = make(chan struct{})
	}, ready, u.freed
}

// setIdleTimeout makes a worker stop after d without requests.
func (a *Agent) setIdleTimeout(worker string, d time.Duration) {
	a.usage.mu.Lock()
	defer a.usage.mu.Unlock()
	a.usage.idle[worker] = d
	a.usage.lastUsed[worker] = time.Now()
}

// stopIdleWorkers runs until ctx ends, stopping workers past their idle
// timeout so their memory is free for other models.
func (a *Agent) stopIdleWorkers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var idle []string
		a.usage.mu.Lock()
		for id, d := range a.usage.idle {
			if a.usage.inflight[id] == 0 && time.Since(a.usage.lastUsed[id]) > d {
				idle = append(idle, id)
				delete(a.usage.idle, id)
				delete(a.usage.inflight, id)
				delete(a.usage.lastUsed, id)
			}
		}
		a.usage.mu.Unlock()
		for _, id := range idle {
			a.log.Info("stopping idle worker", "worker_id", id)
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := a.workers.Stop(sctx, id); err != nil {
				a.log.Warn("stop idle worker", "worker_id", id, "err", err)
			}
			cancel()
		}
	}
}

// maxWorkerAnswer bounds a worker's non-streamed answer; responsePart is
// the most of it one event carries, well under NATS's message limit.
const (
	maxWorkerAnswer = 64 << 20
	responsePart    = 256 << 10
)

// infer posts the request to a local worker serving the model and narrates
// the answer as the worker gave it: each SSE data payload of a stream as a
// chunk event, a whole body (or an error) as response data events, then
// the usage as a result data event. Cancelling the job closes the request,
// which stops the generation. A stream whose worker breaks mid-answer
// continues on another worker (ops_continue.go) when the request allows.
func (j *job) infer(req *api.Infer) error {
	d := newDelivery(j.d.Continue)
	if d.now.Whole(req) {
		// Its hive was lost after the client had the whole answer: only
		// the end of the stream is missing, and no worker is asked.
		res := api.InferResult{Model: req.Model}
		if err := j.finishOnly(req.Path, d, &res); err != nil {
			return err
		}
		return j.result(res, "(none: the answer was whole)")
	}
	lost := map[string]bool{}
	for {
		err := j.inferOn(req, d, lost)
		if !workerLost(err) || j.ctx.Err() != nil || api.ContinueRefusal(req) != nil {
			return err
		}
		d = d.next()
		// Another worker here, if one is ready now; else another hive's.
		if _, done, _, _ := j.a.tryWorker(req.Model, lost); done != nil {
			done()
			_ = j.p.Emit(api.Event{Actor: "infer", Action: "moved", Level: api.LevelWarn,
				Message: fmt.Sprintf("%v; the generation continues on another worker of hive %s after %d tokens", err, j.a.cfg.ID, d.now.Tokens)})
			continue
		}
		if err := j.p.Emit(api.Event{Actor: "infer", Action: "moved", Level: api.LevelWarn,
			Message: fmt.Sprintf("%v; no other worker of %s on hive %s: handed back to continue on another hive after %d tokens", err, req.Model, j.a.cfg.ID, d.now.Tokens)}); err != nil {
			return err
		}
		return j.a.yield(j)
	}
}

// inferOn runs the request on one worker not in lost, adding the worker
// to lost when its stream breaks.
func (j *job) inferOn(req *api.Infer, d *delivery, lost map[string]bool) error {
	w, done, err := j.a.pickWorker(j.ctx, req.Model, lost, func(busy int) {
		_ = j.p.Emit(api.Event{Actor: "infer", Action: "waiting",
			Message: fmt.Sprintf("every worker of %s is busy (%d); waiting for one", req.Model, busy)})
	})
	if errors.Is(err, errNoWorker) {
		return fmt.Errorf("no ready worker serves model %s on hive %s", req.Model, j.a.cfg.ID)
	}
	if err != nil {
		return err
	}
	defer done()
	path, data, err := workerBody(req, w.ModelID)
	if err != nil {
		return err
	}
	res := api.InferResult{Model: req.Model, WorkerID: w.WorkerID}
	if d.before != nil {
		if !j.a.canContinue(w) {
			return fmt.Errorf("the generation moved mid-stream and worker %s (backend %s) cannot continue it", w.WorkerID, w.Backend)
		}
		data, err = continueBody(path, data, d.before, j.a.backendKind(w))
		if errors.Is(err, errNothingLeft) {
			if err := j.finishOnly(path, d, &res); err != nil {
				return err
			}
			return j.result(res, w.WorkerID)
		}
		if err != nil {
			return fmt.Errorf("continue the generation: %w", err)
		}
	}
	msg := fmt.Sprintf("%s %s on worker %s", path, req.Model, w.WorkerID)
	if d.before != nil {
		msg += fmt.Sprintf(", continuing after %d tokens", d.before.Tokens)
	}
	rctx, rcancel := context.WithCancel(j.ctx)
	defer rcancel()
	hreq, err := http.NewRequestWithContext(rctx, http.MethodPost, w.URL+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	// The worker event is narrated while the request is on its way: the
	// publisher may hold it until the job's start is stored (handle), and
	// the worker need not wait for that. It is stored before anything the
	// worker answers; if it cannot be, the request is called off.
	told := make(chan error, 1)
	go func() {
		err := j.p.Emit(api.Event{Actor: "infer", Action: "worker", Message: msg})
		if err != nil {
			rcancel()
		}
		told <- err
	}()
	resp, err := inferClient.Do(hreq)
	if terr := <-told; terr != nil {
		if err == nil {
			resp.Body.Close()
		}
		return terr
	}
	if err != nil {
		lost[w.WorkerID] = true
		return &brokeError{worker: w.WorkerID, err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		err = j.relayStream(resp.Body, w.WorkerID, &res, d)
	} else {
		err = j.relayBody(resp, w.WorkerID, &res)
	}
	if workerLost(err) {
		lost[w.WorkerID] = true
		if d.now.Whole(req) && j.ctx.Err() == nil {
			// It broke after the client had its finish reason: the
			// answer is whole, only the end of the stream is missing,
			// and nothing is generated again, whatever the request.
			err = j.finishOnly(path, d, &res)
		}
	}
	if err != nil {
		return err
	}
	return j.result(res, w.WorkerID)
}

// result narrates the data event that closes a successful answer.
func (j *job) result(res api.InferResult, worker string) error {
	return j.p.Data(api.Event{Actor: "infer", Action: api.ActionResult, Data: res,
		Message: fmt.Sprintf("%d tokens from worker %s (%s)", res.Usage.CompletionTokens, worker, res.FinishReason)})
}

// workerBody is the path and body to post to a worker whose model name is
// model: the client's body with model renamed, rbee's download field
// dropped and, for a stream, usage asked for so that tokens are counted;
// or, for a job in the rebuilt form (prompt or messages), a streamed
// request made from those fields.
func workerBody(req *api.Infer, model string) (string, []byte, error) {
	if len(req.Body) == 0 {
		return legacyBody(req, model)
	}
	// The client's bytes travel as they came: edits touch only the fields
	// they name, so key order, spacing and numbers stay the client's.
	body := req.Body
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' || !gjson.ValidBytes(body) {
		return "", nil, errors.New("request body: not a JSON object")
	}
	// gjson and sjson edit a key's first occurrence, a worker reads its
	// last: a repeated key would keep the client's value from the edits,
	// and one in another case would escape them.
	if k, twice := api.KeyProblem(body); twice {
		return "", nil, fmt.Errorf("request body: %q appears twice", k)
	} else if k != "" {
		return "", nil, fmt.Errorf("request body: %q is read only as %q", k, strings.ToLower(k))
	}
	var err error
	if gjson.GetBytes(body, "download").Exists() {
		if body, err = sjson.DeleteBytes(body, "download"); err != nil {
			return "", nil, fmt.Errorf("request body: %w", err)
		}
	}
	if m := gjson.GetBytes(body, "model"); m.Type != gjson.String || m.Str != model {
		if body, err = sjson.SetBytes(body, "model", model); err != nil {
			return "", nil, fmt.Errorf("request body: %w", err)
		}
	}
	if streams := req.Path == api.InferChat || req.Path == api.InferCompletions; streams && gjson.GetBytes(body, "stream").Type == gjson.True {
		// Usage is counted from the last chunk, which only this asks for.
		if opts := gjson.GetBytes(body, "stream_options"); opts.IsObject() {
			if opts.Get("include_usage").Type != gjson.True {
				body, err = sjson.SetBytes(body, "stream_options.include_usage", true)
			}
		} else {
			// Absent, or not an object (null, say): replaced by one.
			body, err = sjson.SetRawBytes(body, "stream_options", []byte(`{"include_usage":true}`))
		}
		if err != nil {
			return "", nil, fmt.Errorf("request body: %w", err)
		}
	}
	return req.Path, body, nil
}

// legacyBody builds the worker request of an infer job that carries
// fields rather than a client's body.
func legacyBody(req *api.Infer, model string) (string, []byte, error) {
	body := map[string]any{"model": model, "stream": true, "stream_options": map[string]bool{"include_usage": true}}
	path := api.InferCompletions
	if len(req.Messages) > 0 {
		path, body["messages"] = api.InferChat, req.Messages
	} else {
		body["prompt"] = req.Prompt
	}
	if req.MaxTokens > 0 {
		body["max_tokens"] = req.MaxTokens
	}
	if req.Temperature != nil {
		body["temperature"] = *req.Temperature
	}
	data, err := json.Marshal(body)
	return path, data, err
}

// relayStream narrates the data of each SSE event of a worker's stream as
// a chunk event, byte for byte (but for d's edits when it continues another
// worker's answer), with the text it adds as the message. An event's data
// is its data lines joined by newlines, as the SSE standard reads them;
// its other fields and comments go no further.
func (j *job) relayStream(body io.Reader, worker string, res *api.InferResult, d *delivery) error {
	br := bufio.NewReaderSize(body, 64<<10)
	var data []byte // the data of the event being read
	inEvent := false
	for {
		line, err := readLine(br)
		if err != nil && (len(line) == 0 || !errors.Is(err, io.EOF)) {
			if inEvent && errors.Is(err, io.EOF) && string(data) == api.SSEDone {
				return nil // [DONE] and then the close, without a blank line
			}
			if j.ctx.Err() != nil {
				return j.ctx.Err()
			}
			return &brokeError{worker: worker, err: err, stream: true}
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > 0 {
			if p, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				if inEvent {
					data = append(data, '\n')
				}
				data, inEvent = append(data, bytes.TrimPrefix(p, []byte(" "))...), true
				if len(data) > api.MaxInferBody*8 {
					return &brokeError{worker: worker, err: errors.New("an event over 8 MiB"), stream: true}
				}
			}
			if err == nil {
				continue
			}
		}
		// A blank line, or the close, ends the event.
		if !inEvent {
			continue
		}
		payload := data
		data, inEvent = nil, false
		if string(payload) == api.SSEDone {
			return nil
		}
		if err := j.relayChunk(payload, res, d); err != nil {
			return err
		}
	}
}

// relayChunk narrates one event's data of a worker's stream.
func (j *job) relayChunk(payload []byte, res *api.InferResult, d *delivery) error {
	// The payload goes on as it is; what the hive cannot read only goes
	// uncounted.
	var c chunk
	_ = json.Unmarshal(payload, &c)
	text := clientText(&c)
	payload, ok := d.edit(payload, &c, text)
	if !ok {
		return nil
	}
	if c.Usage != nil {
		res.Usage = *c.Usage
	}
	for _, ch := range c.Choices {
		if ch.FinishReason != "" {
			res.FinishReason = ch.FinishReason
		}
	}
	if err := j.p.Emit(api.Event{Actor: "infer", Action: api.ActionChunk, Message: text, Data: string(payload)}); err != nil {
		return err
	}
	d.sent(&c, text)
	return nil
}

// readLine reads one line of any length up to the event limit.
func readLine(br *bufio.Reader) ([]byte, error) {
	var long []byte
	for {
		part, err := br.ReadSlice('\n')
		if err == nil || !errors.Is(err, bufio.ErrBufferFull) {
			if long != nil {
				return append(long, part...), err
			}
			return part, err
		}
		long = append(long, part...)
		if len(long) > api.MaxInferBody*8 {
			return nil, errors.New("a line over 8 MiB")
		}
	}
}

// relayBody narrates a worker's whole answer, in parts, and fails the job
// when the worker answered an error; the queen answers the client with the
// worker's status and body.
func (j *job) relayBody(resp *http.Response, worker string, res *api.InferResult) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxWorkerAnswer+1))
	if err != nil {
		if j.ctx.Err() != nil {
			return j.ctx.Err()
		}
		return fmt.Errorf("worker %s answer broke: %w", worker, err)
	}
	if len(data) > maxWorkerAnswer {
		return fmt.Errorf("worker %s answered more than %d bytes", worker, maxWorkerAnswer)
	}
	ct := resp.Header.Get("Content-Type")
	for off := 0; ; off += responsePart {
		end := min(off+responsePart, len(data))
		part := api.InferResponse{Status: resp.StatusCode, ContentType: ct, Body: string(data[off:end]), More: end < len(data)}
		if err := j.p.Data(api.Event{Actor: "infer", Action: api.ActionResponse, Data: part}); err != nil {
			return err
		}
		if !part.More {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("worker %s answered %d: %s", worker, resp.StatusCode, clipText(data, 512))
	}
	var c chunk
	if json.Unmarshal(data, &c) == nil {
		if c.Usage != nil {
			res.Usage = *c.Usage
		}
		for _, ch := range c.Choices {
			if ch.FinishReason != "" {
				res.FinishReason = ch.FinishReason
			}
		}
	}
	return nil
}

func clipText(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// chunk is the part of an OpenAI answer or streaming chunk the hive reads.
type chunk struct {
	ID      string `json:"id"`
	Choices []struct {
		Text         string                    `json:"text"`
		Delta        *struct{ Content string } `json:"delta"`
		FinishReason string                    `json:"finish_reason"`
	} `json:"choices"`
	Usage *api.Usage `json:"usage"`
}
