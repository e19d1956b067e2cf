package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// A request is one flat JSON object on the wire, as it has always been:
// it decodes into the envelope and the operation's typed payload, and
// encodes back to the same bytes.
func TestJobRequestWireFormat(t *testing.T) {
	cases := []struct {
		body    string
		payload any
	}{
		{`{"operation":"status","labels":{"zone":"a"}}`, nil},
		{`{"operation":"hive_status","hive":"h1","timeout_s":5}`, nil},
		{`{"operation":"hive_check","hive":"h1","queue":false,"events":5,"payload_bytes":16}`, &api.HiveCheck{}},
		{`{"operation":"run","hive":"h1","command":["sh","-c","echo hi"],"env":{"A":"b"},"dir":"/tmp"}`, &api.Run{}},
		{`{"operation":"model_get","model_id":"m"}`, &api.ModelRef{}},
		{`{"operation":"model_delete","model_id":"m"}`, &api.ModelRef{}},
		{`{"operation":"model_download","source":"hf:org/repo","model_id":"m","sha256":"` + strings.Repeat("ab", 32) + `"}`, &api.ModelDownload{}},
		{`{"operation":"worker_spawn","model_id":"m","backend":"reference","gpus":[0,1],"ctx_size":4096,"idle_timeout_s":60}`, &api.WorkerSpawn{}},
		{`{"operation":"worker_get","worker_id":"w-1"}`, &api.WorkerRef{}},
		{`{"operation":"worker_stop","worker_id":"w-1"}`, &api.WorkerRef{}},
		{`{"operation":"infer","model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0.5,"stream":true}`, &api.Infer{}},
		{`{"operation":"infer","model":"m","path":"/v1/chat/completions","body":{"model":"m","messages":[]}}`, &api.Infer{}},
	}
	for _, c := range cases {
		req, err := api.DecodeJobRequest(strings.NewReader(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		if err := req.Validate(); err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		if reflect.TypeOf(req.Payload) != reflect.TypeOf(c.payload) {
			t.Errorf("%s: payload %T, want %T", c.body, req.Payload, c.payload)
		}
		got, err := json.Marshal(req)
		if err != nil || string(got) != c.body {
			t.Errorf("encoded as %s (%v), want %s", got, err, c.body)
		}
		var stored api.Job
		if err := json.Unmarshal([]byte(`{"job_id":"j","request":`+c.body+`}`), &stored); err != nil {
			t.Fatal(err)
		}
		if again, _ := json.Marshal(stored.Request); string(again) != c.body {
			t.Errorf("a stored record's request reads back as %s, want %s", again, c.body)
		}
	}
}

// Fields of another operation decode (their types checked) and are named
// by Validate; fields of none are refused by the decoder; keys match
// fields case-insensitively, as encoding/json matches them.
func TestJobRequestForeignAndUnknownFields(t *testing.T) {
	cases := []struct {
		body, decodeErr, validateErr string
	}{
		{`{"operation":"hive_check","command":["x"],"model_id":"m"}`, "", `field "command" does not apply to operation hive_check; field "model_id" does not apply`},
		{`{"operation":"status","events":0}`, "", `field "events" does not apply to operation status`},
		{`{"operation":"run","command":["true"],"payload_bytes":0,"stream":false}`, "", ""},
		{`{"operation":"nope","command":["x"]}`, "", `unknown operation "nope"`},
		{`{"operation":"run","cmd":["x"]}`, `unknown field "cmd"`, ""},
		{`{"operation":"hive_check","command":"x"}`, `field "command" must be an array of strings, not string`, ""},
		{`{"operation":"hive_check","events":"x"}`, `field "events" must be a whole number, not string`, ""},
		{`{"operation":"run","COMMAND":["true"],"Hive":"h1"}`, "", ""},
		{`{"operation":"run","command":["true"]} {}`, "exactly one JSON object", ""},
		{`[]`, "must be a JSON object", ""},
		{`null`, "", "operation is required"},
		// Read one way in front of the queen and another by it: refused.
		{`{"operation":"status","operation":"run"}`, `body names "operation" twice`, ""},
		{`{"operation":"status","Operation":"run"}`, `body names "Operation" twice`, ""},
		{`{"operation":"run","command":["true"],"env":{"A":"1","A":"2"}}`, `body names "A" twice`, ""},
		{`{"operation":"run","command":["true"],"env":{"A":"1","a":"2"}}`, "", ""},
		{"{\"operation\":\"run\",\"command\":[\"echo\",\"\xff\xfe\"]}", "not valid UTF-8", ""},
		{`{"operation":"run","command":["echo","\u00ff"],"labels":{"k":"v"}}`, "", ""},
	}
	for _, c := range cases {
		req, err := api.DecodeJobRequest(strings.NewReader(c.body))
		if c.decodeErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.decodeErr) {
				t.Errorf("%s: decode error %v, want one saying %q", c.body, err, c.decodeErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		err = req.Validate()
		switch {
		case c.validateErr == "" && err != nil:
			t.Errorf("%s: %v", c.body, err)
		case c.validateErr != "" && (err == nil || !strings.Contains(err.Error(), c.validateErr)):
			t.Errorf("%s: validation error %v, want one saying %q", c.body, err, c.validateErr)
		}
	}
}

// A request built in Go carries the payload its operation's row names;
// one without gets an empty one, with its defaults.
func TestJobRequestPayloadType(t *testing.T) {
	wrong := api.JobRequest{Operation: api.OpRun, Payload: &api.HiveCheck{}}
	if err := wrong.Validate(); err == nil || !strings.Contains(err.Error(), "takes a *api.Run") {
		t.Errorf("run with a hive_check payload: %v", err)
	}
	extra := api.JobRequest{Operation: api.OpStatus, Payload: &api.Run{}}
	if err := extra.Validate(); err == nil || !strings.Contains(err.Error(), "no fields") {
		t.Errorf("status with a payload: %v", err)
	}
	bare := api.JobRequest{Operation: api.OpHiveCheck}
	if err := bare.Validate(); err != nil {
		t.Fatal(err)
	}
	if c, ok := bare.Payload.(*api.HiveCheck); !ok || c.Events == nil || *c.Events != api.DefaultCheckEvents {
		t.Errorf("hive_check without a payload validates to %#v", bare.Payload)
	}
	if got := strings.Join(api.Operations[api.OpRun].Fields(), ","); got != "command,env,dir" {
		t.Errorf("the fields of run are %s", got)
	}
	if got := api.Operations[api.OpStatus].Fields(); got != nil {
		t.Errorf("status has fields %v", got)
	}
	if m := (&api.JobRequest{Operation: api.OpWorkerSpawn, Payload: &api.WorkerSpawn{ModelID: "m"}}).Model(); m != "m" {
		t.Errorf("the model of a worker_spawn is %q", m)
	}
}

// Every JSON field name means one thing: no payload reuses an envelope
// field, and a name two payloads share has one type in both, so a field
// decodes the same whichever operation a request names.
func TestPayloadFieldsAgree(t *testing.T) {
	owner := map[string]string{}
	types := map[string]reflect.Type{}
	add := func(owned string, typ reflect.Type, envelope bool) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if prev, ok := types[name]; ok && (envelope || owner[name] == "envelope" || prev != f.Type) {
				t.Errorf("field %s of %s clashes with that of %s", name, owned, owner[name])
			}
			owner[name], types[name] = owned, f.Type
		}
	}
	add("envelope", reflect.TypeFor[api.JobRequest](), true)
	for _, name := range api.OperationNames() {
		if mk := api.Operations[name].Payload; mk != nil {
			add(name, reflect.TypeOf(mk()).Elem(), false)
		}
	}
}

// The HTTP contract checks hive ids and label keys by the rule of a NATS
// subject token without importing the NATS client; the two rules agree.
func TestNamesAreSubjectTokens(t *testing.T) {
	for _, s := range []string{"h1", "gpu-a_1", "", "a.b", "a b", "a*", "a>", "ä", strings.Repeat("x", 64), strings.Repeat("x", 65), "a\x00"} {
		req := api.JobRequest{Operation: api.OpStatus, Hive: s}
		err := req.Validate()
		valid := s != "" && (err == nil || !strings.Contains(err.Error(), "not a valid hive id"))
		if valid != bus.ValidToken(s) {
			t.Errorf("%q: valid as a hive id %v, as a subject token %v", s, valid, bus.ValidToken(s))
		}
	}
}
