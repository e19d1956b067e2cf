package api

import "time"

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
	// PlacedAt is when the job was placed on its hive for this attempt:
	// at creation, when a waiting job got a hive, or when it moved. A
	// dispatch lost after it is timed from here.
	PlacedAt *time.Time `json:"placed_at,omitempty"`
	Attempt  int        `json:"attempt"`
	// PastHives names the hive of each earlier attempt, oldest first:
	// what those hives wrote before the job moved stays part of its story.
	PastHives []PastHive `json:"past_hives,omitempty"`
	Error     string     `json:"error,omitempty"`
	ExitCode  *int       `json:"exit_code,omitempty"`
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
	OwnerName string `json:"owner_name,omitempty"`
	// Priority is the owner key's priority when the job was created: a
	// waiting job goes before every waiting job of a lower priority.
	Priority int        `json:"priority,omitempty"`
	Request  JobRequest `json:"request"`
}

// PastHive is the hive of an earlier attempt of a job, and Until, the
// narration stream's sequence just before the queen's event that moved the
// job on: what that hive stored after it is not the attempt's story. Until
// is 0 while that event is being written.
type PastHive struct {
	Hive  string `json:"hive"`
	Until uint64 `json:"until"`
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
	// Continue is, for an inference moved to another worker mid-stream,
	// what its client already has; nil for a first attempt, or when the
	// client had nothing yet.
	Continue *Continuation `json:"continue,omitempty"`
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
