package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// inferClient talks to local workers. No overall timeout: a generation
// lasts as long as the job's deadline allows.
var inferClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}

// usage tracks which workers serve requests, to route each request to the
// least busy one and to stop workers that sat idle past their timeout.
type usage struct {
	mu       sync.Mutex
	inflight map[string]int
	lastUsed map[string]time.Time
	idle     map[string]time.Duration
}

func newUsage() *usage {
	return &usage{inflight: map[string]int{}, lastUsed: map[string]time.Time{}, idle: map[string]time.Duration{}}
}

// pick chooses the ready worker of the model with the fewest requests in
// flight and counts one more for it; done releases it.
func (a *Agent) pickWorker(model string) (api.Worker, func(), bool) {
	u := a.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	var best api.Worker
	found := false
	for _, w := range a.workers.List() {
		if w.ModelID != model || w.State != api.WorkerReady {
			continue
		}
		if !found || u.inflight[w.WorkerID] < u.inflight[best.WorkerID] {
			best, found = w, true
		}
	}
	if !found {
		return best, nil, false
	}
	u.inflight[best.WorkerID]++
	u.lastUsed[best.WorkerID] = time.Now()
	return best, func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.inflight[best.WorkerID]--
		u.lastUsed[best.WorkerID] = time.Now()
	}, true
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

// infer runs the request on a local worker serving the model and narrates
// each piece of text as a token event, then the usage as a data event.
// Cancelling the job closes the request, which stops the generation.
func (j *job) infer() error {
	req := j.d.Request
	w, done, ok := j.a.pickWorker(req.Model)
	if !ok {
		return fmt.Errorf("no ready worker serves model %s on hive %s", req.Model, j.a.cfg.ID)
	}
	defer done()
	path, body := "/v1/completions", map[string]any{"prompt": req.Prompt}
	if len(req.Messages) > 0 {
		path, body = "/v1/chat/completions", map[string]any{"messages": req.Messages}
	}
	body["model"] = w.ModelID
	body["stream"] = true
	body["stream_options"] = map[string]bool{"include_usage": true}
	if req.MaxTokens > 0 {
		body["max_tokens"] = req.MaxTokens
	}
	if req.Temperature != nil {
		body["temperature"] = *req.Temperature
	}
	data, _ := json.Marshal(body)
	hreq, err := http.NewRequestWithContext(j.ctx, http.MethodPost, w.URL+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := inferClient.Do(hreq)
	if err != nil {
		return fmt.Errorf("worker %s: %w", w.WorkerID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("worker %s answered %d: %s", w.WorkerID, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	res := api.InferResult{Model: req.Model, WorkerID: w.WorkerID}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if j.ctx.Err() != nil {
				return j.ctx.Err()
			}
			return fmt.Errorf("worker %s stream broke: %w", w.WorkerID, err)
		}
		payload, ok := bytes.CutPrefix(bytes.TrimRight(line, "\r\n"), []byte("data: "))
		if !ok {
			continue
		}
		if string(payload) == "[DONE]" {
			break
		}
		var c chunk
		if err := json.Unmarshal(payload, &c); err != nil {
			return fmt.Errorf("worker %s sent a bad chunk: %w", w.WorkerID, err)
		}
		if c.Usage != nil {
			res.Usage = *c.Usage
		}
		for _, ch := range c.Choices {
			text := ch.Text
			if ch.Delta != nil {
				text = ch.Delta.Content
			}
			if text != "" {
				if err := j.p.Emit(api.Event{Actor: "infer", Action: "token", Message: text}); err != nil {
					return err
				}
			}
			if ch.FinishReason != "" {
				res.FinishReason = ch.FinishReason
			}
		}
	}
	return j.p.Data(api.Event{Actor: "infer", Action: "result", Data: res,
		Message: fmt.Sprintf("%d tokens from worker %s (%s)", res.Usage.CompletionTokens, w.WorkerID, res.FinishReason)})
}

// chunk is the part of an OpenAI streaming chunk the hive reads.
type chunk struct {
	Choices []struct {
		Text         string                    `json:"text"`
		Delta        *struct{ Content string } `json:"delta"`
		FinishReason string                    `json:"finish_reason"`
	} `json:"choices"`
	Usage *api.Usage `json:"usage"`
}
