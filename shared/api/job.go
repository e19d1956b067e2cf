package api

import (
	"encoding/json"
	"time"
)

// Job states. A job moves queued → dispatched → running → one of the three
// terminal states; cancelling is the short step between a cancel request and
// the end event that confirms it.
const (
	StateQueued     = "queued"
	StateDispatched = "dispatched"
	StateRunning    = "running"
	StateCancelling = "cancelling"
	StateDone       = "done"
	StateFailed     = "failed"
	StateCancelled  = "cancelled"
)

// Terminal reports whether a job in state s will never change again.
func Terminal(s string) bool {
	return s == StateDone || s == StateFailed || s == StateCancelled
}

// JobRequest is the body of POST /v1/jobs. It is one flat shape for every
// operation; Validate checks that the fields fit the operation.
type JobRequest struct {
	Operation string            `json:"operation"`
	Hive      string            `json:"hive,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	TimeoutS  float64           `json:"timeout_s,omitempty"`
	// Queue, when false, asks for 503 instead of waiting in the queue when
	// no hive can take the job now.
	Queue *bool `json:"queue,omitempty"`

	// hive_check
	Events       *int `json:"events,omitempty"`
	PayloadBytes int  `json:"payload_bytes,omitempty"`

	// run
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`

	// models and workers
	Source   string `json:"source,omitempty"`
	ModelID  string `json:"model_id,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Backend  string `json:"backend,omitempty"`
	GPUs     []int  `json:"gpus,omitempty"`
	CtxSize  int    `json:"ctx_size,omitempty"`
	WorkerID string `json:"worker_id,omitempty"`
	// IdleTimeoutS stops a spawned worker after this long without a request.
	IdleTimeoutS float64 `json:"idle_timeout_s,omitempty"`

	// infer
	Model       string    `json:"model,omitempty"`
	Prompt      string    `json:"prompt,omitempty"`
	Messages    []Message `json:"messages,omitempty"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
	Temperature *float64  `json:"temperature,omitempty"`
	Stream      bool      `json:"stream,omitempty"`
	// Path and Body are an OpenAI request as its client sent it: the hive
	// posts Body to its worker's Path (one of InferPaths) with only the
	// model renamed, rbee's own fields dropped and, for streams, usage
	// asked for. Such a job carries none of prompt, messages, max_tokens,
	// temperature and stream; Model is the body's model, for routing.
	Path string          `json:"path,omitempty"`
	Body json.RawMessage `json:"body,omitempty"`
}

// Message is one chat message of an infer request.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// CreateJobResponse is the answer to POST /v1/jobs.
type CreateJobResponse struct {
	JobID     string `json:"job_id"`
	StreamURL string `json:"stream_url"`
	JobURL    string `json:"job_url"`
}

// Job is a job record: what GET /v1/jobs/<id> answers and what the jobs
// bucket stores.
type Job struct {
	JobID      string     `json:"job_id"`
	Operation  string     `json:"operation"`
	Hive       string     `json:"hive,omitempty"`
	State      string     `json:"state"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	DeadlineAt time.Time  `json:"deadline_at"`
	Attempt    int        `json:"attempt"`
	Error      string     `json:"error,omitempty"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	// CancelRequestedAt is when a cancel was asked for; the end confirms it.
	CancelRequestedAt *time.Time `json:"cancel_requested_at,omitempty"`
	// DispatchSeq is the job's message in the DISPATCH stream, so a cancel
	// can take a queued job out of its hive's queue.
	DispatchSeq uint64 `json:"dispatch_seq,omitempty"`
	// Owner is the id of the API key that created the job (never its
	// secret): "open" on a queen without keys, "admin" for the configured
	// admin key. Keys without the admin scope see only their own jobs.
	Owner string `json:"owner,omitempty"`
	// OwnerName is that key's name when the job was created, kept so that
	// usage stays readable after the key is revoked.
	OwnerName string     `json:"owner_name,omitempty"`
	Request   JobRequest `json:"request"`
}

// Dispatch is the message a queen puts on a hive's work queue.
type Dispatch struct {
	JobID      string     `json:"job_id"`
	Attempt    int        `json:"attempt"`
	NextSeq    uint64     `json:"next_seq"`
	DeadlineAt time.Time  `json:"deadline_at"`
	Request    JobRequest `json:"request"`
	// MaxNarrationBytes is the job's narration budget, from the queen's
	// --job-max-narration-bytes; 0 is none. It travels with the job so
	// that one setting on the queens governs every hive.
	MaxNarrationBytes int64 `json:"max_narration_bytes,omitempty"`
}

// JobList is the answer to GET /v1/jobs.
type JobList struct {
	Jobs []Job `json:"jobs"`
}

// HiveList is the answer to GET /v1/hives.
type HiveList struct {
	Hives []Hive `json:"hives"`
}

// CancelResponse is the answer to DELETE /v1/jobs/<id>.
type CancelResponse struct {
	JobID string `json:"job_id"`
	State string `json:"state"`
}
