package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The endpoints an infer job's body may go to: the worker's paths of the
// same name.
const (
	InferChat        = "/v1/chat/completions"
	InferCompletions = "/v1/completions"
	InferEmbeddings  = "/v1/embeddings"
	InferRerank      = "/v1/rerank"
)

// InferPaths lists the endpoints an infer job may go to.
var InferPaths = []string{InferChat, InferCompletions, InferEmbeddings, InferRerank}

// KeyProblem returns a key that rbee reads or edits in a JSON object body
// (readKeys at its top level, include_usage in its stream_options) that
// is named twice (twice true), or else a key that differs from one of
// those only in case or by a Unicode fold, "Stream" say; "" when there is
// none. Readers disagree about repeated keys (gjson and sjson take the
// first, encoding/json and most workers the last), and encoding/json
// matches keys by fold where rbee's edits and workers match exact names:
// either way a body could mean one thing to the queen or the hive and
// another to the worker. Other keys are the worker's to read, repeated or
// not. Keys compare as decoded: "stre\u0061m" is "stream". One pass over
// the body.
func KeyProblem(body []byte) (key string, twice bool) {
	return keyProblem(body, readKeys)
}

// readKeys are the body's keys that rbee reads or edits, each by its exact
// name, as workers do.
var readKeys = []string{"model", "stream", "stream_options", "download"}

func keyProblem(body []byte, names []string) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	seen := map[string]bool{}
	folded := ""
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		k, _ := t.(string)
		if seen[k] {
			return k, true
		}
		if slices.Contains(names, k) {
			seen[k] = true
		}
		if folded == "" && foldOf(k, names) {
			folded = k
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", false
		}
		if k == "stream_options" && slices.Contains(names, k) {
			if r, twice := keyProblem(v, []string{"include_usage"}); twice {
				return "stream_options." + r, true
			} else if r != "" && folded == "" {
				folded = "stream_options." + r
			}
		}
	}
	return folded, false
}

// foldOf reports whether k is one of names in another case.
func foldOf(k string, names []string) bool {
	for _, name := range names {
		if k != name && strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// RawBody is a client's request body carried by an infer job, its bytes
// exactly as they came: the worker gets them so, whatever re-encodes the
// job's record or dispatch on the way. encoding/json compacts every raw
// value it writes and escapes '<', '>', '&', U+2028 and U+2029 in its
// strings, so in JSON a body is written as itself only when that changes
// none of its bytes, and otherwise as a string holding it; either form
// reads back to the same bytes. Records and dispatches are written with
// Marshal, which leaves '<', '>' and '&' as they are, so a body full of
// them takes its own size there, not six times it.
type RawBody []byte

// Marshal is json.Marshal that leaves '<', '>' and '&' as they are, where
// json.Marshal escapes each for HTML in six bytes.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// MarshalJSON writes the body as itself when it is an object that
// encoding/json keeps byte for byte, else as a string. (Bodies are UTF-8:
// Infer.Validate refuses others, which a string would not keep.)
func (b RawBody) MarshalJSON() ([]byte, error) {
	if len(b) == 0 {
		return []byte("null"), nil
	}
	if b[0] == '{' && keptByEncoder(b) {
		return b, nil
	}
	return Marshal(string(b))
}

// UnmarshalJSON takes a string as the body it holds, and any other value
// as the body itself, byte for byte.
func (b *RawBody) UnmarshalJSON(data []byte) error {
	switch {
	case string(data) == "null":
		*b = nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*b = RawBody(s)
	default:
		*b = append(RawBody(nil), data...)
	}
	return nil
}

// keptByEncoder reports whether encoding/json writes the JSON value b back
// unchanged: valid, compact, and nothing in it that it escapes.
func keptByEncoder(b []byte) bool {
	if bytes.ContainsAny(b, "<>&\u2028\u2029") {
		return false
	}
	var c bytes.Buffer
	return json.Compact(&c, b) == nil && bytes.Equal(c.Bytes(), b)
}

// MaxInferBody bounds the client's body an infer job carries: the queen's
// HTTP body limit.
const MaxInferBody = 1 << 20

// Actions of an infer job's narration.
const (
	// ActionChunk is an event whose Data is one SSE data payload of the
	// worker's streamed answer, as a string holding it byte for byte, and
	// whose Message is the text it adds.
	ActionChunk = "chunk"
	// ActionResponse is a data event with an InferResponse: the worker's
	// whole answer when it does not stream, or its error.
	ActionResponse = "response"
	// ActionResult is the data event with an InferResult that closes a
	// successful answer.
	ActionResult = "result"
	// ActionQueued is the queen's event, on an inference waiting for a
	// worker with room, that tells its place in the model's queue; its
	// Data is a QueuePlace. One comes each time the place changes.
	ActionQueued = "queued"
)

// QueuePlace is where a waiting request stands: Position 1 is served
// next, Waiting counts the model's whole queue, ETAMs estimates the wait
// in milliseconds (0: no estimate yet).
type QueuePlace struct {
	Position int   `json:"position"`
	Waiting  int   `json:"waiting"`
	ETAMs    int64 `json:"eta_ms"`
}

// InferResponse is one part of a worker's non-streamed answer: its status,
// content type and body. A body too large for one event comes in parts in
// order, each but the last with More set.
type InferResponse struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type,omitempty"`
	Body        string `json:"body"`
	More        bool   `json:"more,omitempty"`
}

// InferResult is the data event that closes an infer job's answer.
type InferResult struct {
	Model        string `json:"model"`
	WorkerID     string `json:"worker_id"`
	FinishReason string `json:"finish_reason"`
	Usage        Usage  `json:"usage"`
}

// Usage counts the tokens of one inference, as OpenAI does.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// UnmarshalJSON reads the counts a worker sent leniently and never fails:
// a count that is no whole number (1.5, "7", 1e400) is read as the nearest
// one, and a count below zero or no number at all as none. A worker's
// garbled count must not lose the rest of its answer (its finish reason is
// read beside it), and no count may run a counter backwards.
func (u *Usage) UnmarshalJSON(b []byte) error {
	var raw struct {
		Prompt     tokenCount `json:"prompt_tokens"`
		Completion tokenCount `json:"completion_tokens"`
		Total      tokenCount `json:"total_tokens"`
	}
	if json.Unmarshal(b, &raw) != nil {
		raw.Prompt, raw.Completion, raw.Total = 0, 0, 0
	}
	*u = Usage{PromptTokens: int(raw.Prompt), CompletionTokens: int(raw.Completion), TotalTokens: int(raw.Total)}
	return nil
}

// tokenCount is one count of a Usage as UnmarshalJSON reads it.
type tokenCount int

// maxTokenCount bounds one count: more than any context holds.
const maxTokenCount = math.MaxInt32

func (t *tokenCount) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(strings.Trim(string(b), `"`), 64)
	*t = 0
	if (err == nil || errors.Is(err, strconv.ErrRange)) && f > 0 {
		*t = tokenCount(math.Round(min(f, maxTokenCount)))
	}
	return nil
}

// QueueList is the answer to GET /v1/queue: each model's inference
// queue over the whole cluster.
type QueueList struct {
	Queues []InferQueue `json:"queues"`
}

// InferQueue is one model's queue: the requests on its workers and those
// waiting, in the order they will be served.
type InferQueue struct {
	Model string `json:"model"`
	// Capacity is the places of the model's ready workers (their
	// max_concurrent); 0 when a worker sets no limit or none is ready.
	Capacity int         `json:"capacity"`
	Running  int         `json:"running"`
	Waiting  []QueuedJob `json:"waiting"`
}

// QueuedJob is one waiting request. A key without the admin scope sees
// the job id and owner of its own requests only.
type QueuedJob struct {
	Position  int       `json:"position"`
	JobID     string    `json:"job_id,omitempty"`
	Owner     string    `json:"owner,omitempty"`
	OwnerName string    `json:"owner_name,omitempty"`
	Priority  int       `json:"priority,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}
