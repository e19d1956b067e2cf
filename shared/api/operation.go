package api

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Operation names.
const (
	OpStatus            = "status"
	OpHiveStatus        = "hive_status"
	OpHiveCheck         = "hive_check"
	OpRun               = "run"
	OpModelList         = "model_list"
	OpModelGet          = "model_get"
	OpModelDelete       = "model_delete"
	OpModelDownload     = "model_download"
	OpWorkerCatalogList = "worker_catalog_list"
	OpWorkerSpawn       = "worker_spawn"
	OpWorkerList        = "worker_list"
	OpWorkerGet         = "worker_get"
	OpWorkerStop        = "worker_stop"
	OpInfer             = "infer"
)

// OpSpec says where an operation runs, who may ask for it and how long it
// may take. One row per operation drives validation, API key scopes, the
// hive's handlers and the command line's help: a new operation is a row
// here and a handler where it runs.
type OpSpec struct {
	// OnQueen is true for operations the queen answers itself.
	OnQueen bool
	// DefaultTimeout is the deadline when the request sets none.
	DefaultTimeout time.Duration
	// Retryable operations may run again on another hive after a loss.
	Retryable bool
	// Scope is what an API key needs to submit the operation: reading
	// operations need read, changing ones operate, inference infer, and
	// run (arbitrary commands) admin.
	Scope string
	// ChangesHive is true for operations that change what the hive holds
	// (models, workers): the hive sends its new inventory at once.
	ChangesHive bool
	// Summary says in a few words what the operation does, for help texts.
	Summary string
	// Payload makes an empty payload of the operation's type, the one its
	// requests decode into and its handler receives; nil for an operation
	// that takes no fields of its own.
	Payload func() Payload
}

// Operations lists the operations this build accepts.
var Operations = map[string]OpSpec{
	OpStatus:     {OnQueen: true, DefaultTimeout: 10 * time.Second, Scope: ScopeRead, Summary: "cluster summary: hives, GPUs, workers, jobs by state"},
	OpHiveStatus: {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "a hive's inventory"},
	OpHiveCheck:  {Payload: newPayload[HiveCheck], DefaultTimeout: 10 * time.Minute, Retryable: true, Scope: ScopeOperate, Summary: "self-test: narrate events, then end"},
	OpRun:        {Payload: newPayload[Run], DefaultTimeout: time.Hour, Scope: ScopeAdmin, Summary: "run a command, narrating its output"},

	OpModelList:     {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "a hive's model catalog"},
	OpModelGet:      {Payload: newPayload[ModelRef], DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "one model of a hive's catalog"},
	OpModelDelete:   {Payload: newPayload[ModelRef], DefaultTimeout: 30 * time.Second, Scope: ScopeOperate, ChangesHive: true, Summary: "delete a model from a hive"},
	OpModelDownload: {Payload: newPayload[ModelDownload], DefaultTimeout: 24 * time.Hour, Retryable: true, Scope: ScopeOperate, ChangesHive: true, Summary: "download a model onto a hive"},

	OpWorkerCatalogList: {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "worker backends a hive can start"},
	OpWorkerSpawn:       {Payload: newPayload[WorkerSpawn], DefaultTimeout: 10 * time.Minute, Scope: ScopeOperate, ChangesHive: true, Summary: "start a worker for a model"},
	OpWorkerList:        {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "a hive's workers"},
	OpWorkerGet:         {Payload: newPayload[WorkerRef], DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "one worker of a hive"},
	OpWorkerStop:        {Payload: newPayload[WorkerRef], DefaultTimeout: time.Minute, Scope: ScopeOperate, ChangesHive: true, Summary: "stop a worker"},

	OpInfer: {Payload: newPayload[Infer], DefaultTimeout: 10 * time.Minute, Scope: ScopeInfer, Summary: "run a prompt on a worker serving the model"},
}

// Limits on request fields. They keep one request from costing the cluster
// more than a user meant.
const (
	MaxTimeout      = 7 * 24 * time.Hour
	MaxEvents       = 10_000_000
	MaxPayloadBytes = 64 << 10
	MaxArgs         = 1024
	MaxArgLen       = 64 << 10
	MaxEnvVars      = 256
	MaxStringField  = 4096
	MaxLabels       = 64
)

// DefaultCheckEvents is how many events hive_check emits when not told.
const DefaultCheckEvents = 10

// ValidationError lists every problem found in a request.
type ValidationError struct {
	Problems []string
}

// Error joins the problems, but stops near maxErrorText bytes: a request
// with thousands of bad labels or arguments must not get a megabyte back.
func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 && b.Len()+len(p) > maxErrorText {
			fmt.Fprintf(&b, "; and %d more problems", len(e.Problems)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p)
	}
	return b.String()
}

// maxErrorText bounds the message of a ValidationError.
const maxErrorText = 2048

// OperationNames lists the known operations in order.
func OperationNames() []string {
	names := make([]string, 0, len(Operations))
	for n := range Operations {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// validName accepts hive ids, label keys and other names that end up in
// subjects or bucket keys. The rule is that of a NATS subject token
// (bus.ValidToken), kept here too so that the HTTP contract does not
// import the NATS client; a test holds the two to the same answers.
func validName(s string) bool {
	return len(s) > 0 && len(s) <= 64 && strings.Trim(s, nameChars) == ""
}

// nameChars are the bytes a name may hold.
const nameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

// clip shortens hostile input before it is echoed in an error message.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return string(bytes.ToValidUTF8([]byte(s), []byte("?")))
}
