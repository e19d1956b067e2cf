package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Payload is the part of a job request that belongs to its operation: the
// fields only that operation reads. Each operation with fields has one
// payload type, named in its row of Operations, and checks itself.
type Payload interface {
	// Validate checks the payload and fills its defaults, reporting every
	// problem to p.
	Validate(p *Problems)
}

// newPayload makes an empty payload of type P, for a row of Operations.
func newPayload[T any, P interface {
	*T
	Payload
}]() Payload {
	return P(new(T))
}

// Problems collects what is wrong with a request, so that validation
// reports every problem at once.
type Problems struct {
	list []string
}

// Add records one problem.
func (p *Problems) Add(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// Err is a *ValidationError listing the problems, or nil when there are
// none.
func (p *Problems) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &ValidationError{Problems: p.list}
}

// HiveCheck is the payload of hive_check: a self-test that narrates Events
// events of PayloadBytes bytes each, then ends.
type HiveCheck struct {
	Events       *int `json:"events,omitempty"`
	PayloadBytes int  `json:"payload_bytes,omitempty"`
}

// Validate checks the bounds and fills the number of events.
func (c *HiveCheck) Validate(p *Problems) {
	if c.Events == nil {
		n := DefaultCheckEvents
		c.Events = &n
	} else if *c.Events < 0 || *c.Events > MaxEvents {
		p.Add("events must be between 0 and %d", MaxEvents)
	}
	if c.PayloadBytes < 0 || c.PayloadBytes > MaxPayloadBytes {
		p.Add("payload_bytes must be between 0 and %d", MaxPayloadBytes)
	}
}

// narrationEstimate is what the check stores at least: its payload for
// every event.
func (c *HiveCheck) narrationEstimate() int64 {
	if c.Events == nil {
		return 0
	}
	return int64(*c.Events) * int64(c.PayloadBytes)
}

// Run is the payload of run: an argv, its environment beside the hive's
// safe variables, and its working directory.
type Run struct {
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
}

// Validate checks the argv, the environment and the directory.
func (r *Run) Validate(p *Problems) {
	switch {
	case len(r.Command) == 0:
		p.Add("command is required: an argv list such as [\"sh\", \"-c\", \"echo hi\"]")
	case len(r.Command) > MaxArgs:
		p.Add("command: at most %d arguments", MaxArgs)
	case r.Command[0] == "":
		p.Add("command[0] must name a program")
	}
	for i, a := range r.Command {
		if len(a) > MaxArgLen || strings.ContainsRune(a, 0) {
			p.Add("command[%d] is too long or holds a NUL byte", i)
		}
	}
	if len(r.Env) > MaxEnvVars {
		p.Add("env: at most %d variables", MaxEnvVars)
	}
	for k, v := range r.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || len(k) > MaxStringField || len(v) > MaxArgLen || strings.ContainsRune(v, 0) {
			p.Add("env %q is not a valid variable", clip(k))
		}
	}
	if len(r.Dir) > MaxStringField || strings.ContainsRune(r.Dir, 0) {
		p.Add("dir is too long or holds a NUL byte")
	}
}

// ModelRef is the payload of model_get and model_delete: one model of a
// hive's catalog.
type ModelRef struct {
	ModelID string `json:"model_id,omitempty"`
}

// Validate requires a valid model id.
func (m *ModelRef) Validate(p *Problems) { requireModelID(m.ModelID, p) }

func (m *ModelRef) model() string { return m.ModelID }

// ModelDownload is the payload of model_download: where the file comes
// from, the id it gets (derived from the source when empty) and the digest
// it must have (unchecked when empty).
type ModelDownload struct {
	Source  string `json:"source,omitempty"`
	ModelID string `json:"model_id,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
}

// Validate checks the source, the id and the digest.
func (d *ModelDownload) Validate(p *Problems) {
	switch {
	case d.Source == "":
		p.Add("source is required: hf:<org>/<repo>[:<file>] or an http(s) URL")
	default:
		if _, err := ParseSource(d.Source); err != nil {
			p.Add("%s", err.Error())
		}
	}
	if d.ModelID != "" && !ValidModelID(d.ModelID) {
		p.Add("model_id %q is not valid: 1-%d letters, digits, '.', '_' or '-', no path", clip(d.ModelID), MaxModelID)
	}
	if d.SHA256 != "" && (len(d.SHA256) != 64 || strings.Trim(strings.ToLower(d.SHA256), "0123456789abcdef") != "") {
		p.Add("sha256 must be 64 hex digits")
	}
}

func (d *ModelDownload) model() string { return d.ModelID }

// WorkerSpawn is the payload of worker_spawn: the model to serve, the
// backend of the hive's worker catalog to serve it with, and how.
type WorkerSpawn struct {
	ModelID string `json:"model_id,omitempty"`
	Backend string `json:"backend,omitempty"`
	GPUs    []int  `json:"gpus,omitempty"`
	CtxSize int    `json:"ctx_size,omitempty"`
	// IdleTimeoutS stops the worker after this long without a request.
	IdleTimeoutS float64 `json:"idle_timeout_s,omitempty"`
	// MaxConcurrent is how many requests the worker takes at once; the
	// rest wait in the cluster's queue. 0 takes the backend's (e.g.
	// llama-server's --parallel, 4 for the reference worker).
	MaxConcurrent int `json:"max_concurrent,omitempty"`
}

// Validate checks the model, the backend and the worker's settings.
func (w *WorkerSpawn) Validate(p *Problems) {
	requireModelID(w.ModelID, p)
	if !validName(w.Backend) {
		p.Add("backend is required: a name from the hive's worker catalog (e.g. reference, llama-server)")
	}
	if len(w.GPUs) > 64 {
		p.Add("gpus: at most 64")
	}
	for _, g := range w.GPUs {
		if g < 0 || g > 1023 {
			p.Add("gpus: %d is not a GPU index", g)
		}
	}
	if w.CtxSize < 0 || w.CtxSize > 1<<24 {
		p.Add("ctx_size must be between 0 and %d", 1<<24)
	}
	if w.IdleTimeoutS < 0 || w.IdleTimeoutS > MaxTimeout.Seconds() {
		p.Add("idle_timeout_s must be between 0 and %.0f", MaxTimeout.Seconds())
	}
	if w.MaxConcurrent < 0 || w.MaxConcurrent > MaxWorkerConcurrency {
		p.Add("max_concurrent must be between 0 (the backend's) and %d", MaxWorkerConcurrency)
	}
}

// MaxWorkerConcurrency bounds a worker's max_concurrent.
const MaxWorkerConcurrency = 4096

func (w *WorkerSpawn) model() string { return w.ModelID }

// WorkerRef is the payload of worker_get and worker_stop: one worker of a
// hive.
type WorkerRef struct {
	WorkerID string `json:"worker_id,omitempty"`
}

// Validate requires a valid worker id.
func (w *WorkerRef) Validate(p *Problems) {
	switch {
	case w.WorkerID == "":
		p.Add("worker_id is required")
	case !validName(w.WorkerID):
		p.Add("worker_id %q is not a worker id: letters, digits, '-' and '_', at most 64", clip(w.WorkerID))
	}
}

// Infer is the payload of infer, in one of two forms. Path and Body are an
// OpenAI request as its client sent it: the hive posts Body to its
// worker's Path (one of InferPaths) with only the model renamed, rbee's
// own fields dropped and, for streams, usage asked for; Model is the
// body's model, for routing. The rebuilt form carries Prompt or Messages
// and the sampling fields instead, and the hive makes a streamed request
// from them.
type Infer struct {
	Model       string    `json:"model,omitempty"`
	Prompt      string    `json:"prompt,omitempty"`
	Messages    []Message `json:"messages,omitempty"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty"`
	Stream      bool      `json:"stream,omitempty"`
	Path        string    `json:"path,omitempty"`
	Body        RawBody   `json:"body,omitempty"`
}

// Limits of an inference request.
const (
	MaxPromptBytes = 1 << 20
	MaxMessages    = 1024
	MaxTokens      = 1 << 20
)

// Validate checks the model and whichever form the request takes.
func (in *Infer) Validate(p *Problems) {
	switch {
	case in.Model == "":
		p.Add("model is required")
	case !ValidModelID(in.Model):
		p.Add("model %q is not valid: 1-%d letters, digits, '.', '_' or '-', no path", clip(in.Model), MaxModelID)
	}
	if len(in.Body) > 0 || in.Path != "" {
		in.validateBody(p)
		return
	}
	switch {
	case in.Prompt == "" && len(in.Messages) == 0:
		p.Add("prompt or messages is required")
	case in.Prompt != "" && len(in.Messages) > 0:
		p.Add("give prompt or messages, not both")
	}
	if len(in.Prompt) > MaxPromptBytes {
		p.Add("prompt is longer than %d bytes", MaxPromptBytes)
	}
	if len(in.Messages) > MaxMessages {
		p.Add("messages: at most %d", MaxMessages)
	}
	total := 0
	for i, m := range in.Messages {
		total += len(m.Content)
		switch m.Role {
		case "system", "user", "assistant", "developer", "tool":
		default:
			p.Add("messages[%d].role %q is not system, user, assistant, developer or tool", i, clip(m.Role))
		}
	}
	if total > MaxPromptBytes {
		p.Add("messages hold more than %d bytes", MaxPromptBytes)
	}
	if in.MaxTokens < 0 || in.MaxTokens > MaxTokens {
		p.Add("max_tokens must be between 0 and %d", MaxTokens)
	}
	if in.Temperature != nil && (*in.Temperature < 0 || *in.Temperature > 2) {
		p.Add("temperature must be between 0 and 2")
	}
}

// validateBody checks a pass-through request: a known endpoint and a
// bounded JSON object, with none of the fields of the rebuilt form.
func (in *Infer) validateBody(p *Problems) {
	if !slices.Contains(InferPaths, in.Path) {
		p.Add("path %q is not one of %s", clip(in.Path), strings.Join(InferPaths, ", "))
	}
	// The same checks as the hive's before it posts the body: JSON's own
	// whitespace only, the whole body valid.
	b := bytes.TrimLeft(in.Body, " \t\r\n")
	switch {
	case len(b) == 0:
		p.Add("body is required with path")
	case len(in.Body) > MaxInferBody:
		p.Add("body is longer than %d bytes", MaxInferBody)
	case b[0] != '{' || !json.Valid(in.Body):
		p.Add("body must be a JSON object")
	case !utf8.Valid(in.Body):
		p.Add("body must be UTF-8")
	default:
		if k, twice := KeyProblem(in.Body); twice {
			p.Add("body names %q twice", clip(k))
		} else if k != "" {
			p.Add("body names %q: rbee and workers read it only as %q", clip(k), strings.ToLower(k))
		}
	}
	if in.Prompt != "" || len(in.Messages) > 0 || in.MaxTokens != 0 || in.Temperature != nil || in.Stream {
		p.Add("a request with body takes its prompt, messages, max_tokens, temperature and stream from the body")
	}
}

func (in *Infer) model() string { return in.Model }

// Message is one chat message of an infer request.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func requireModelID(id string, p *Problems) {
	switch {
	case id == "":
		p.Add("model_id is required")
	case !ValidModelID(id):
		p.Add("model_id %q is not valid: 1-%d letters, digits, '.', '_' or '-', no path", clip(id), MaxModelID)
	}
}
