package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"rbee.dev/shared/bus"
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
}

// Operations lists the operations this build accepts.
var Operations = map[string]OpSpec{
	OpStatus:     {OnQueen: true, DefaultTimeout: 10 * time.Second, Scope: ScopeRead, Summary: "cluster summary: hives, GPUs, workers, jobs by state"},
	OpHiveStatus: {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "a hive's inventory"},
	OpHiveCheck:  {DefaultTimeout: 10 * time.Minute, Retryable: true, Scope: ScopeOperate, Summary: "self-test: narrate events, then end"},
	OpRun:        {DefaultTimeout: time.Hour, Scope: ScopeAdmin, Summary: "run a command, narrating its output"},

	OpModelList:     {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "a hive's model catalog"},
	OpModelGet:      {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "one model of a hive's catalog"},
	OpModelDelete:   {DefaultTimeout: 30 * time.Second, Scope: ScopeOperate, ChangesHive: true, Summary: "delete a model from a hive"},
	OpModelDownload: {DefaultTimeout: 24 * time.Hour, Retryable: true, Scope: ScopeOperate, ChangesHive: true, Summary: "download a model onto a hive"},

	OpWorkerCatalogList: {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "worker backends a hive can start"},
	OpWorkerSpawn:       {DefaultTimeout: 10 * time.Minute, Scope: ScopeOperate, ChangesHive: true, Summary: "start a worker for a model"},
	OpWorkerList:        {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "a hive's workers"},
	OpWorkerGet:         {DefaultTimeout: 30 * time.Second, Retryable: true, Scope: ScopeRead, Summary: "one worker of a hive"},
	OpWorkerStop:        {DefaultTimeout: time.Minute, Scope: ScopeOperate, ChangesHive: true, Summary: "stop a worker"},

	OpInfer: {DefaultTimeout: 10 * time.Minute, Scope: ScopeInfer, Summary: "run a prompt on a worker serving the model"},
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

// DecodeJobRequest reads one JSON object from r, rejecting unknown fields,
// wrong types and trailing data with an error that names the problem.
func DecodeJobRequest(r io.Reader) (JobRequest, error) {
	var req JobRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, describeJSONError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, errors.New("body must hold exactly one JSON object")
	}
	return req, nil
}

func describeJSONError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("body is empty; expected a JSON object")
	case errors.As(err, &syn):
		return fmt.Errorf("malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Errorf("body must be a JSON object, not %s", clip(typ.Value))
		}
		return fmt.Errorf("field %q must be %s, not %s", clip(typ.Field), typ.Type.String(), clip(typ.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown field %s", clip(strings.TrimPrefix(err.Error(), "json: unknown field ")))
	}
	return fmt.Errorf("malformed JSON: %w", err)
}

// Validate checks the request against its operation and fills defaults. It
// reports every problem at once.
func (r *JobRequest) Validate() error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	_, known := Operations[r.Operation]
	switch {
	case r.Operation == "":
		add("operation is required")
	case !known:
		add("unknown operation %q (known: %s)", clip(r.Operation), strings.Join(OperationNames(), ", "))
	}
	if r.Hive != "" && !validName(r.Hive) {
		add("hive %q is not a valid hive id (letters, digits, '-' and '_', at most 64)", clip(r.Hive))
	}
	if len(r.Labels) > MaxLabels {
		add("labels: at most %d", MaxLabels)
	}
	for k, v := range r.Labels {
		if !validName(k) || len(v) > MaxStringField || hasControl(v) {
			add("label %q is not valid", clip(k))
		}
	}
	if r.TimeoutS < 0 || r.TimeoutS > MaxTimeout.Seconds() {
		add("timeout_s must be between 0 and %.0f", MaxTimeout.Seconds())
	}

	switch r.Operation {
	case OpHiveCheck:
		if r.Events == nil {
			n := DefaultCheckEvents
			r.Events = &n
		} else if *r.Events < 0 || *r.Events > MaxEvents {
			add("events must be between 0 and %d", MaxEvents)
		}
		if r.PayloadBytes < 0 || r.PayloadBytes > MaxPayloadBytes {
			add("payload_bytes must be between 0 and %d", MaxPayloadBytes)
		}
	case OpRun:
		validateRun(r, add)
	case OpModelGet, OpModelDelete:
		requireModelID(r.ModelID, add)
	case OpModelDownload:
		validateDownload(r, add)
	case OpWorkerSpawn:
		requireModelID(r.ModelID, add)
		if !validName(r.Backend) {
			add("backend is required: a name from the hive's worker catalog (e.g. reference, llama-server)")
		}
		if len(r.GPUs) > 64 {
			add("gpus: at most 64")
		}
		for _, g := range r.GPUs {
			if g < 0 || g > 1023 {
				add("gpus: %d is not a GPU index", g)
			}
		}
		if r.CtxSize < 0 || r.CtxSize > 1<<24 {
			add("ctx_size must be between 0 and %d", 1<<24)
		}
		if r.IdleTimeoutS < 0 || r.IdleTimeoutS > MaxTimeout.Seconds() {
			add("idle_timeout_s must be between 0 and %.0f", MaxTimeout.Seconds())
		}
	case OpWorkerGet, OpWorkerStop:
		if !validName(r.WorkerID) {
			add("worker_id is required: letters, digits, '-' and '_'")
		}
	case OpInfer:
		validateInfer(r, add)
	}
	if known {
		r.rejectForeignFields(add)
	}
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

func validateRun(r *JobRequest, add func(string, ...any)) {
	switch {
	case len(r.Command) == 0:
		add("command is required: an argv list such as [\"sh\", \"-c\", \"echo hi\"]")
	case len(r.Command) > MaxArgs:
		add("command: at most %d arguments", MaxArgs)
	case r.Command[0] == "":
		add("command[0] must name a program")
	}
	for i, a := range r.Command {
		if len(a) > MaxArgLen || strings.ContainsRune(a, 0) {
			add("command[%d] is too long or holds a NUL byte", i)
		}
	}
	if len(r.Env) > MaxEnvVars {
		add("env: at most %d variables", MaxEnvVars)
	}
	for k, v := range r.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || len(k) > MaxStringField || len(v) > MaxArgLen || strings.ContainsRune(v, 0) {
			add("env %q is not a valid variable", clip(k))
		}
	}
	if len(r.Dir) > MaxStringField || strings.ContainsRune(r.Dir, 0) {
		add("dir is too long or holds a NUL byte")
	}
}

// Limits of an inference request.
const (
	MaxPromptBytes = 1 << 20
	MaxMessages    = 1024
	MaxTokens      = 1 << 20
)

func validateInfer(r *JobRequest, add func(string, ...any)) {
	requireModelID(r.Model, func(f string, a ...any) { add(strings.Replace(f, "model_id", "model", 1), a...) })
	if len(r.Body) > 0 || r.Path != "" {
		validateInferBody(r, add)
		return
	}
	switch {
	case r.Prompt == "" && len(r.Messages) == 0:
		add("prompt or messages is required")
	case r.Prompt != "" && len(r.Messages) > 0:
		add("give prompt or messages, not both")
	}
	if len(r.Prompt) > MaxPromptBytes {
		add("prompt is longer than %d bytes", MaxPromptBytes)
	}
	if len(r.Messages) > MaxMessages {
		add("messages: at most %d", MaxMessages)
	}
	total := 0
	for i, m := range r.Messages {
		total += len(m.Content)
		switch m.Role {
		case "system", "user", "assistant", "developer", "tool":
		default:
			add("messages[%d].role %q is not system, user, assistant, developer or tool", i, clip(m.Role))
		}
	}
	if total > MaxPromptBytes {
		add("messages hold more than %d bytes", MaxPromptBytes)
	}
	if r.MaxTokens < 0 || r.MaxTokens > MaxTokens {
		add("max_tokens must be between 0 and %d", MaxTokens)
	}
	if r.Temperature != nil && (*r.Temperature < 0 || *r.Temperature > 2) {
		add("temperature must be between 0 and 2")
	}
}

// validateInferBody checks a pass-through request: a known endpoint and a
// bounded JSON object, with none of the fields of the rebuilt form.
func validateInferBody(r *JobRequest, add func(string, ...any)) {
	if !slices.Contains(InferPaths, r.Path) {
		add("path %q is not one of %s", clip(r.Path), strings.Join(InferPaths, ", "))
	}
	b := bytes.TrimSpace(r.Body)
	switch {
	case len(b) == 0:
		add("body is required with path")
	case len(r.Body) > MaxInferBody:
		add("body is longer than %d bytes", MaxInferBody)
	case b[0] != '{' || !json.Valid(b):
		add("body must be a JSON object")
	default:
		if k := RepeatedKey(b); k != "" {
			add("body names %q twice", clip(k))
		}
	}
	if r.Prompt != "" || len(r.Messages) > 0 || r.MaxTokens != 0 || r.Temperature != nil || r.Stream {
		add("a request with body takes its prompt, messages, max_tokens, temperature and stream from the body")
	}
}

func requireModelID(id string, add func(string, ...any)) {
	switch {
	case id == "":
		add("model_id is required")
	case !ValidModelID(id):
		add("model_id %q is not valid: 1-%d letters, digits, '.', '_' or '-', no path", clip(id), MaxModelID)
	}
}

func validateDownload(r *JobRequest, add func(string, ...any)) {
	switch {
	case r.Source == "":
		add("source is required: hf:<org>/<repo>[:<file>] or an http(s) URL")
	case len(r.Source) > MaxStringField || hasControl(r.Source):
		add("source is too long or holds control characters")
	case strings.HasPrefix(r.Source, "hf:"), strings.HasPrefix(r.Source, "http://"), strings.HasPrefix(r.Source, "https://"):
	default:
		add("source %q must start with hf:, http:// or https://", clip(r.Source))
	}
	if r.ModelID != "" && !ValidModelID(r.ModelID) {
		add("model_id %q is not valid: 1-%d letters, digits, '.', '_' or '-', no path", clip(r.ModelID), MaxModelID)
	}
	if r.SHA256 != "" && (len(r.SHA256) != 64 || strings.Trim(strings.ToLower(r.SHA256), "0123456789abcdef") != "") {
		add("sha256 must be 64 hex digits")
	}
}

// rejectForeignFields names fields that the operation does not take, so a
// typo such as sending "cmd" fields to hive_check is not silently ignored.
func (r *JobRequest) rejectForeignFields(add func(string, ...any)) {
	allowed := map[string]bool{}
	switch r.Operation {
	case OpHiveCheck:
		allowed["events"], allowed["payload_bytes"] = true, true
	case OpRun:
		allowed["command"], allowed["env"], allowed["dir"] = true, true, true
	case OpModelGet, OpModelDelete:
		allowed["model_id"] = true
	case OpModelDownload:
		allowed["source"], allowed["model_id"], allowed["sha256"] = true, true, true
	case OpWorkerSpawn:
		allowed["model_id"], allowed["backend"], allowed["gpus"], allowed["ctx_size"] = true, true, true, true
		allowed["idle_timeout_s"] = true
	case OpWorkerGet, OpWorkerStop:
		allowed["worker_id"] = true
	case OpInfer:
		for _, f := range []string{"model", "prompt", "messages", "max_tokens", "temperature", "stream", "path", "body"} {
			allowed[f] = true
		}
	}
	set := map[string]bool{
		"events": r.Events != nil && r.Operation != OpHiveCheck, "payload_bytes": r.PayloadBytes != 0,
		"command": len(r.Command) > 0, "env": len(r.Env) > 0, "dir": r.Dir != "",
		"source": r.Source != "", "model_id": r.ModelID != "", "sha256": r.SHA256 != "",
		"backend": r.Backend != "", "gpus": len(r.GPUs) > 0, "ctx_size": r.CtxSize != 0,
		"worker_id": r.WorkerID != "", "model": r.Model != "", "prompt": r.Prompt != "",
		"messages": len(r.Messages) > 0, "max_tokens": r.MaxTokens != 0,
		"temperature": r.Temperature != nil, "stream": r.Stream,
		"path": r.Path != "", "body": len(r.Body) > 0, "idle_timeout_s": r.IdleTimeoutS != 0,
	}
	var bad []string
	for f, isSet := range set {
		if isSet && !allowed[f] {
			bad = append(bad, f)
		}
	}
	sort.Strings(bad)
	for _, f := range bad {
		add("field %q does not apply to operation %s", f, r.Operation)
	}
}

// Timeout is the job's deadline: the request's, else the operation default.
func (r *JobRequest) Timeout() time.Duration {
	if r.TimeoutS > 0 {
		return time.Duration(r.TimeoutS * float64(time.Second))
	}
	return Operations[r.Operation].DefaultTimeout
}

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
// subjects or bucket keys.
func validName(s string) bool { return bus.ValidToken(s) }

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
