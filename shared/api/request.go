package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// JobRequest is the body of POST /v1/jobs: the envelope every operation
// shares (what it is, where it may run, how long it may take) and the
// operation's typed payload. On the wire it is one flat JSON object, the
// payload's fields beside the envelope's:
//
//	{"operation":"run","hive":"h1","command":["sh","-c","echo hi"]}
type JobRequest struct {
	Operation string            `json:"operation"`
	Hive      string            `json:"hive,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	TimeoutS  float64           `json:"timeout_s,omitempty"`
	// Queue, when false, asks for 503 instead of waiting in the queue when
	// no hive can take the job now.
	Queue *bool `json:"queue,omitempty"`

	// Payload holds the operation's own fields, of the type its row of
	// Operations names (HiveCheck for hive_check, Run for run, …); nil for
	// an operation without fields. Validate makes an empty one when it is
	// missing.
	Payload Payload `json:"-"`

	// foreign names the fields of other operations that a decoded body
	// set, which Validate reports.
	foreign []string
}

// envelope is JobRequest without its JSON methods: the envelope's fields
// alone.
type envelope JobRequest

// MarshalJSON writes the envelope and the payload as one object.
func (r JobRequest) MarshalJSON() ([]byte, error) {
	env, err := Marshal(envelope(r))
	if err != nil || r.Payload == nil {
		return env, err
	}
	p, err := Marshal(r.Payload)
	if err != nil {
		return nil, fmt.Errorf("payload of %s: %w", r.Operation, err)
	}
	if len(p) < 2 || p[0] != '{' {
		// A nil pointer: no fields.
		return env, nil
	}
	if string(p) == "{}" {
		return env, nil
	}
	out := make([]byte, 0, len(env)+len(p))
	out = append(out, env[:len(env)-1]...)
	out = append(out, ',')
	return append(out, p[1:]...), nil
}

// UnmarshalJSON reads the envelope, then the payload of the operation it
// names. Fields it does not know are ignored, as encoding/json does;
// DecodeJobRequest is the strict reader for requests from clients.
func (r *JobRequest) UnmarshalJSON(data []byte) error {
	return r.decode(data, false)
}

// DecodeJobRequest reads one JSON object from r, rejecting unknown fields,
// wrong types and trailing data with an error that names the problem.
// Fields of another operation decode (so their types are checked) and are
// left for Validate to name.
func DecodeJobRequest(r io.Reader) (JobRequest, error) {
	var req JobRequest
	raw, err := readBody(r)
	if err != nil {
		return req, err
	}
	if err := req.decode(raw, true); err != nil {
		return req, describeJSONError(err)
	}
	return req, nil
}

// DecodeBody reads one JSON object from r into v as DecodeJobRequest does
// (CheckBody's rules, no unknown fields, no trailing data), with an error
// that names the problem.
func DecodeBody(r io.Reader, v any) error {
	raw, err := readBody(r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	return nil
}

// readBody reads one JSON value from r and checks it with CheckBody.
func readBody(r io.Reader) (json.RawMessage, error) {
	var raw json.RawMessage
	dec := json.NewDecoder(r)
	if err := dec.Decode(&raw); err != nil {
		return nil, describeJSONError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("body must hold exactly one JSON object")
	}
	return raw, CheckBody(raw)
}

// CheckBody is what rbee's own routes ask of a JSON body beyond its
// syntax. encoding/json turns bytes that are not UTF-8 into U+FFFD, takes
// the last of a key named twice, and matches a struct's fields by case
// folding, so "scopes" twice, or "operation" beside "Operation", would be
// read one way by a proxy or log in front and another by the queen. So the
// body must be UTF-8, no object may name a key twice, and the top object
// (a request's fields) may not hold two keys that differ only in case.
// Keys compare as decoded.
func CheckBody(body []byte) error {
	if !utf8.Valid(body) {
		return errors.New("body is not valid UTF-8")
	}
	type object struct {
		seen   map[string]bool
		atKey  bool
		isRoot bool
	}
	var stack []*object // nil entries are arrays
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		t, err := dec.Token()
		if err != nil {
			// io.EOF at the end; a syntax error is the decoder's to report.
			return nil
		}
		top := len(stack) - 1
		if top >= 0 && stack[top] != nil && stack[top].atKey {
			if k, ok := t.(string); ok {
				o := stack[top]
				name := k
				if o.isRoot {
					name = foldName(k)
				}
				if o.seen[name] {
					return fmt.Errorf("body names %q twice", clip(k))
				}
				o.seen[name] = true
				o.atKey = false
				continue
			}
		}
		switch t {
		case json.Delim('{'):
			stack = append(stack, &object{seen: map[string]bool{}, atKey: true, isRoot: len(stack) == 0})
			continue
		case json.Delim('['):
			stack = append(stack, nil)
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:top]
		}
		// A value ended: its object, if any, waits for the next key.
		if n := len(stack); n > 0 && stack[n-1] != nil {
			stack[n-1].atKey = true
		}
	}
}

func (r *JobRequest) decode(data []byte, strict bool) error {
	*r = JobRequest{}
	if err := json.Unmarshal(data, (*envelope)(r)); err != nil {
		return err
	}
	if spec := Operations[r.Operation]; spec.Payload != nil {
		p := spec.Payload()
		if err := json.Unmarshal(data, p); err != nil {
			return err
		}
		r.Payload = p
	}
	if !strict {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	own := map[string]bool{}
	if r.Payload != nil {
		own = fieldsOf(reflect.TypeOf(r.Payload).Elem())
	}
	index := payloadFields()
	for _, k := range keys {
		name := foldName(k)
		if envelopeFields()[name] || own[name] {
			continue
		}
		f, ok := index[name]
		if !ok {
			return fmt.Errorf("json: unknown field %q", k)
		}
		// Decoded alone into a payload that has it: its type is checked,
		// and whether it is set is what Validate will complain about.
		one, err := json.Marshal(map[string]json.RawMessage{k: fields[k]})
		if err != nil {
			return err
		}
		probe := f.make()
		if err := json.Unmarshal(one, probe); err != nil {
			return err
		}
		if !reflect.ValueOf(probe).Elem().Field(f.index).IsZero() {
			r.foreign = append(r.foreign, f.name)
		}
	}
	return nil
}

// payloadField is one JSON field of some operation's payload.
type payloadField struct {
	name  string
	index int
	make  func() Payload
}

// payloadFields indexes the fields of every payload type of the table by
// their folded JSON names.
var payloadFields = sync.OnceValue(func() map[string]payloadField {
	index := map[string]payloadField{}
	for _, op := range OperationNames() {
		mk := Operations[op].Payload
		if mk == nil {
			continue
		}
		t := reflect.TypeOf(mk()).Elem()
		for i := range t.NumField() {
			if name := jsonName(t.Field(i)); name != "" {
				if _, ok := index[foldName(name)]; !ok {
					index[foldName(name)] = payloadField{name: name, index: i, make: mk}
				}
			}
		}
	}
	return index
})

// Fields lists the JSON fields of the operation's payload, in the order
// its type declares them; none for an operation without fields.
func (s OpSpec) Fields() []string {
	if s.Payload == nil {
		return nil
	}
	return jsonNames(reflect.TypeOf(s.Payload()).Elem())
}

// envelopeFields is the set of the envelope's folded JSON names.
var envelopeFields = sync.OnceValue(func() map[string]bool {
	return fieldsOf(reflect.TypeFor[envelope]())
})

// fieldsOf is the set of the folded JSON names of a struct's fields.
func fieldsOf(t reflect.Type) map[string]bool {
	set := map[string]bool{}
	for _, name := range jsonNames(t) {
		set[foldName(name)] = true
	}
	return set
}

// jsonNames lists the JSON names of a struct's fields in order.
func jsonNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		if name := jsonName(t.Field(i)); name != "" {
			names = append(names, name)
		}
	}
	return names
}

// jsonName is the name encoding/json gives a field, "" for none.
func jsonName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return f.Name
	}
	return name
}

// foldName folds a field name the way encoding/json matches object keys
// to fields, case-insensitively.
func foldName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf {
			if 'a' <= r && r <= 'z' {
				r -= 'a' - 'A'
			}
			b.WriteRune(r)
			continue
		}
		for {
			f := unicode.SimpleFold(r)
			if f <= r {
				r = f
				break
			}
			r = f
		}
		b.WriteRune(r)
	}
	return b.String()
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
		return fmt.Errorf("field %q must be %s, not %s", clip(typ.Field), jsonKind(typ.Type), clip(typ.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown field %s", clip(strings.TrimPrefix(err.Error(), "json: unknown field ")))
	}
	return fmt.Errorf("malformed JSON: %w", err)
}

// jsonKind names what JSON a Go type reads, for a client who never saw
// the Go: "a number", "an array of strings".
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(jsonKind(t.Elem()), "a "), "an ") + "s"
	case reflect.Map:
		return "an object of " + strings.TrimPrefix(strings.TrimPrefix(jsonKind(t.Elem()), "a "), "an ") + "s"
	}
	return "an object"
}

// Validate checks the envelope, then the payload against its operation
// (filling defaults, and making an empty payload when there is none). It
// reports every problem at once.
func (r *JobRequest) Validate() error {
	var p Problems
	spec, known := Operations[r.Operation]
	switch {
	case r.Operation == "":
		p.Add("operation is required")
	case !known:
		p.Add("unknown operation %q (known: %s)", clip(r.Operation), strings.Join(OperationNames(), ", "))
	}
	if r.Hive != "" && !validName(r.Hive) {
		p.Add("hive %q is not a valid hive id (letters, digits, '-' and '_', at most 64)", clip(r.Hive))
	}
	if len(r.Labels) > MaxLabels {
		p.Add("labels: at most %d", MaxLabels)
	}
	for k, v := range r.Labels {
		if !validName(k) || len(v) > MaxStringField || hasControl(v) {
			p.Add("label %q is not valid", clip(k))
		}
	}
	if r.TimeoutS < 0 || r.TimeoutS > MaxTimeout.Seconds() {
		p.Add("timeout_s must be between 0 and %.0f", MaxTimeout.Seconds())
	}
	if !known {
		return p.Err()
	}
	switch {
	case spec.Payload == nil && !isNil(r.Payload):
		p.Add("operation %s takes no fields of its own, not a %T", r.Operation, r.Payload)
	case spec.Payload == nil:
	case isNil(r.Payload):
		r.Payload = spec.Payload()
		r.Payload.Validate(&p)
	case reflect.TypeOf(r.Payload) != reflect.TypeOf(spec.Payload()):
		p.Add("operation %s takes a %T, not a %T", r.Operation, spec.Payload(), r.Payload)
	default:
		r.Payload.Validate(&p)
	}
	for _, f := range r.foreign {
		p.Add("field %q does not apply to operation %s", f, r.Operation)
	}
	return p.Err()
}

// isNil reports whether p holds no payload: nil, or a nil pointer.
func isNil(p Payload) bool {
	v := reflect.ValueOf(p)
	return p == nil || v.Kind() == reflect.Pointer && v.IsNil()
}

// Timeout is the job's deadline: the request's, else the operation default.
func (r *JobRequest) Timeout() time.Duration {
	if r.TimeoutS > 0 {
		return time.Duration(r.TimeoutS * float64(time.Second))
	}
	return Operations[r.Operation].DefaultTimeout
}

// Model is the model the job is about, "" for none: placement prefers the
// hives that hold it.
func (r *JobRequest) Model() string {
	if m, ok := r.Payload.(interface{ model() string }); ok {
		return m.model()
	}
	return ""
}
