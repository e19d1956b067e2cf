package api

import "time"

// Levels of a narration event.
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// SSE event names.
const (
	SSENarration = "narration"
	SSEData      = "data"
	SSEEnd       = "end"
	// SSEDone is the data line sent after the end event, before the close.
	SSEDone = "[DONE]"
)

// Event is one narration event. Its JSON is stored in the NARR stream and
// sent verbatim as the data of an SSE event, so the relay never re-encodes.
type Event struct {
	JobID   string    `json:"job_id"`
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Level   string    `json:"level"`
	Message string    `json:"message,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	// Hive is the hive the attempt was dispatched to, on the queen's events
	// that place a job ("job_created", "placed", "replaced"): readers accept
	// a hive's narration only for the attempts these events gave it.
	Hive string `json:"hive,omitempty"`

	Progress *Progress `json:"progress,omitempty"`
	// Stream names the output a command line came from: stdout or stderr.
	Stream string `json:"stream,omitempty"`
	// Partial marks an output line that goes on in the next output event
	// of its stream, or that the command wrote without a newline: a line
	// longer than a hive holds at once is sent in parts, cut between
	// characters. Readers join the parts without a newline.
	Partial bool `json:"partial,omitempty"`
	// Payload is filler carried by hive_check events.
	Payload string `json:"payload,omitempty"`
	// Data is the structured result of a data event.
	Data any `json:"data,omitempty"`

	// State, Error and ExitCode are set on the end event only.
	State    string `json:"state,omitempty"`
	Error    string `json:"error,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
}

// Progress says how far a long step has come.
type Progress struct {
	Done  int64  `json:"done"`
	Total int64  `json:"total,omitempty"`
	Unit  string `json:"unit,omitempty"`
}

// EndInfo is what an end event carries, decoded by readers that need only it.
type EndInfo struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	State    string    `json:"state"`
	Error    string    `json:"error,omitempty"`
	ExitCode *int      `json:"exit_code,omitempty"`
	Attempt  int       `json:"attempt,omitempty"`
	// Writer is who stored the end: a hive id or "queen", from its
	// subject. Only the queen and the attempt's hive may end a job.
	Writer string `json:"-"`
}
