package agent

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"rbee.dev/hive/internal/workers"
	"rbee.dev/shared/api"
)

// A streamed generation survives its worker: when the worker's stream
// breaks, the generation continues on another worker of the model from
// what the client already has (api.Continuation), on this hive when it has
// one, else on another hive, which the queen picks once this hive hands
// the job back (yield). The client sees one stream.

// canContinue reports whether a worker of the backend continues a chat
// whose last message is the assistant's instead of answering it anew.
// llama-server prefills it by default (unless started with
// --no-prefill-assistant); vLLM does when asked (continueBody); a
// command's server is not known to.
func (a *Agent) canContinue(w api.Worker) bool {
	switch a.backendKind(w) {
	case workers.KindReference, workers.KindLlamaServer, workers.KindVLLM:
		return true
	}
	return false
}

// backendKind is the kind of the worker's backend, "" if the catalog no
// longer names it.
func (a *Agent) backendKind(w api.Worker) string {
	for _, b := range a.workers.Catalog() {
		if b.Name == w.Backend {
			return b.Kind
		}
	}
	return ""
}

// errNothingLeft means the client already has every token it asked for:
// only the end of the stream is missing.
var errNothingLeft = errors.New("no tokens left to generate")

// continueBody edits a worker's request body (from workerBody) so the
// worker continues from c: for a chat, the text becomes the assistant's
// last message, which the worker continues; for a completion it is added
// to the prompt. The token limits shrink by the tokens the client has.
func continueBody(path string, body []byte, c *api.Continuation, kind string) ([]byte, error) {
	var err error
	for _, k := range []string{"max_tokens", "max_completion_tokens"} {
		v := gjson.GetBytes(body, k)
		if v.Type != gjson.Number {
			continue
		}
		left := v.Int() - int64(c.Tokens)
		if left < 1 {
			return nil, errNothingLeft
		}
		if body, err = sjson.SetBytes(body, k, left); err != nil {
			return nil, err
		}
	}
	if c.Text == "" {
		return body, nil
	}
	switch path {
	case api.InferChat:
		msg, _ := json.Marshal(map[string]string{"role": "assistant", "content": c.Text})
		if body, err = sjson.SetRawBytes(body, "messages.-1", msg); err != nil {
			return nil, err
		}
		if kind == workers.KindVLLM {
			body, _ = sjson.SetBytes(body, "continue_final_message", true)
			body, err = sjson.SetBytes(body, "add_generation_prompt", false)
		}
	case api.InferCompletions:
		p := gjson.GetBytes(body, "prompt")
		if p.Type != gjson.String {
			return nil, errors.New("only a string prompt can continue")
		}
		body, err = sjson.SetBytes(body, "prompt", p.Str+c.Text)
	default:
		return nil, fmt.Errorf("%s cannot continue", path)
	}
	return body, err
}

// delivery is what the client of one generation has: before is what
// earlier workers gave it (nil: nothing), now adds what this worker gave.
type delivery struct {
	before  *api.Continuation
	now     api.Continuation
	started bool // a chunk of this worker reached the client
}

func newDelivery(before *api.Continuation) *delivery {
	d := &delivery{before: before}
	if before != nil {
		d.now = *before
	}
	return d
}

// next is the delivery for the next worker, nil when the client has
// nothing yet.
func (d *delivery) next() *delivery {
	if !d.started && d.before == nil {
		return newDelivery(nil)
	}
	c := d.now
	return newDelivery(&c)
}

// edit makes a chunk of a continuing worker part of the client's one
// stream, and reports false for a chunk the client must not see: the
// leading chunks that only open the answer (the role), which it had.
// The chunks take the id the client knows, and the usage counts the whole
// generation: the tokens the client had are completion tokens, not part
// of the prompt the continuing worker was given.
func (d *delivery) edit(payload []byte, c *chunk, text string) ([]byte, bool) {
	if d.before == nil {
		return payload, true
	}
	finish := false
	for _, ch := range c.Choices {
		finish = finish || ch.FinishReason != ""
	}
	if !d.started && text == "" && !finish && c.Usage == nil {
		return payload, false
	}
	if d.before.ID != "" && c.ID != "" && c.ID != d.before.ID {
		payload, _ = sjson.SetBytes(payload, "id", d.before.ID)
	}
	if c.Usage != nil {
		c.Usage.PromptTokens = max(c.Usage.PromptTokens-d.before.Tokens, 0)
		c.Usage.CompletionTokens += d.before.Tokens
		c.Usage.TotalTokens = c.Usage.PromptTokens + c.Usage.CompletionTokens
		payload, _ = sjson.SetBytes(payload, "usage.prompt_tokens", c.Usage.PromptTokens)
		payload, _ = sjson.SetBytes(payload, "usage.completion_tokens", c.Usage.CompletionTokens)
		payload, _ = sjson.SetBytes(payload, "usage.total_tokens", c.Usage.TotalTokens)
	}
	return payload, true
}

// sent notes a chunk the client was sent.
func (d *delivery) sent(c *chunk, text string) {
	d.started = true
	for _, ch := range c.Choices {
		d.now.FinishReason = cmp.Or(ch.FinishReason, d.now.FinishReason)
	}
	if c.Usage != nil {
		d.now.Usage = c.Usage
	}
	if d.now.ID == "" {
		d.now.ID = c.ID
	}
	if text != "" {
		d.now.Text += text
		d.now.Tokens++
	}
}

// finishOnly ends, for a client that has every token it asked for, the
// stream a worker broke before its last chunk: what the client lacks of a
// stream's end is sent, the finish reason ("length" when it has every
// token, not a finish) and the usage, counting what the client has (the
// prompt's tokens are unknown without a worker).
func (j *job) finishOnly(path string, d *delivery, res *api.InferResult) error {
	c := d.now
	object, choice := "chat.completion.chunk", `{"index":0,"delta":{},"finish_reason":"length"}`
	if path == api.InferCompletions {
		object, choice = "text_completion", `{"index":0,"text":"","finish_reason":"length"}`
	}
	id, _ := json.Marshal(c.ID)
	var chunks []string
	if res.FinishReason = c.FinishReason; c.FinishReason == "" {
		res.FinishReason = "length"
		chunks = append(chunks, fmt.Sprintf(`{"id":%s,"object":%q,"choices":[%s]}`, id, object, choice))
	}
	// The result counts a usage this delivery's worker reported; one that
	// came with what the client had before (from an earlier attempt's
	// hive, which may be lost or lying) only the client keeps.
	res.Usage = api.Usage{CompletionTokens: c.Tokens, TotalTokens: c.Tokens}
	if c.Usage != nil && (d.before == nil || c.Usage != d.before.Usage) {
		res.Usage = *c.Usage
	}
	if c.Usage == nil {
		usage, _ := json.Marshal(res.Usage)
		chunks = append(chunks, fmt.Sprintf(`{"id":%s,"object":%q,"choices":[],"usage":%s}`, id, object, usage))
	}
	for _, p := range chunks {
		if err := j.p.Emit(api.Event{Actor: "infer", Action: api.ActionChunk, Data: p}); err != nil {
			return err
		}
	}
	return nil
}

// errYielded ends a job's run on this hive without an end: the hive handed
// the job back for the queen to move (see yield).
var errYielded = errors.New("generation handed back to the queen")

// yielded lists the jobs this hive handed back, by job id, with their
// attempt; the heartbeat carries them until the queens had time to move
// them.
type yielded struct {
	mu   sync.Mutex
	jobs map[string]yieldedJob
}

type yieldedJob struct {
	attempt int
	at      time.Time
}

// yieldKeep is how long a handed-back job stays in the heartbeat.
const yieldKeep = time.Minute

// yield hands a generation whose worker broke back to the queens, with no
// other worker here to continue it: the heartbeat lists it, and a queen
// moves it to another hive, which continues from what its narration
// delivered.
func (a *Agent) yield(j *job) error {
	// The queen reads what the client has from the stored narration.
	if err := j.p.Finish(); err != nil {
		return err
	}
	a.yieldedJobs.mu.Lock()
	if a.yieldedJobs.jobs == nil {
		a.yieldedJobs.jobs = map[string]yieldedJob{}
	}
	a.yieldedJobs.jobs[j.d.JobID] = yieldedJob{attempt: j.d.Attempt, at: time.Now()}
	a.yieldedJobs.mu.Unlock()
	a.beatSoon()
	return errYielded
}

// yieldedList is the heartbeat's list of handed-back jobs.
func (a *Agent) yieldedList() []api.Yielded {
	a.yieldedJobs.mu.Lock()
	defer a.yieldedJobs.mu.Unlock()
	var out []api.Yielded
	for id, y := range a.yieldedJobs.jobs {
		if time.Since(y.at) > yieldKeep {
			delete(a.yieldedJobs.jobs, id)
			continue
		}
		out = append(out, api.Yielded{JobID: id, Attempt: y.attempt})
	}
	return out
}

// workerLost says whether err is a worker's stream breaking, not the job
// ending.
func workerLost(err error) bool {
	var b *brokeError
	return errors.As(err, &b)
}

// brokeError is a worker that could not be reached, or whose stream broke
// mid-answer.
type brokeError struct {
	worker string
	err    error
	stream bool // the stream broke, rather than the request
}

func (e *brokeError) Error() string {
	if e.stream {
		return fmt.Sprintf("worker %s stream broke: %v", e.worker, e.err)
	}
	return fmt.Sprintf("worker %s: %v", e.worker, e.err)
}

func (e *brokeError) Unwrap() error { return e.err }

// clientText is the text a chunk adds.
func clientText(c *chunk) string {
	var text strings.Builder
	for _, ch := range c.Choices {
		text.WriteString(ch.Text)
		if ch.Delta != nil {
			text.WriteString(ch.Delta.Content)
		}
	}
	return text.String()
}
