package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"rbee.dev/shared/api"
)

// An infer job carries a client's body to one of the known endpoints: a
// bounded JSON object, with a valid model, and none of the rebuilt form's
// fields beside it.
func TestInferBodyValidation(t *testing.T) {
	ok := json.RawMessage(`{"model":"demo","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[]}`)
	cases := []struct {
		name string
		req  api.JobRequest
		err  string
	}{
		{"chat", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: ok}}, ""},
		{"rerank", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferRerank, Body: json.RawMessage(`{"query":"q","documents":["d"]}`)}}, ""},
		{"rebuilt form", api.JobRequest{Payload: &api.Infer{Model: "demo", Prompt: "hi"}}, ""},
		{"unknown path", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: "/v1/images", Body: ok}}, "path"},
		{"path without body", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat}}, "body is required"},
		{"body without path", api.JobRequest{Payload: &api.Infer{Model: "demo", Body: ok}}, "path"},
		{"array", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: json.RawMessage(`[1]`)}}, "JSON object"},
		{"not JSON", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: json.RawMessage(`{"model":`)}}, "JSON object"},
		{"too large", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: json.RawMessage(`{"x":"` + strings.Repeat("a", api.MaxInferBody) + `"}`)}}, "longer"},
		{"bad model", api.JobRequest{Payload: &api.Infer{Model: "../x", Path: api.InferChat, Body: ok}}, "model"},
		{"both forms", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: ok, Prompt: "hi"}}, "from the body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req.Operation = api.OpInfer
			err := c.req.Validate()
			switch {
			case c.err == "" && err != nil:
				t.Fatal(err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("error %v, want one saying %q", err, c.err)
			}
		})
	}
}

// A key named twice where rbee reads or edits a body is found, escaped or
// not; repeats deeper down are the worker's business.
func TestRepeatedKey(t *testing.T) {
	cases := map[string]string{
		`{"model":"a","stream":true}`:                                            "",
		`{"model":"a","model":"b"}`:                                              "model",
		`{"stre\u0061m":false,"stream":true}`:                                    "stream",
		`{"stream_options":{"include_usage":true,"include_usage":false}}`:        "stream_options.include_usage",
		`{"stream_options":{"include_usage":true},"stream_options":null}`:        "stream_options",
		`{"messages":[{"role":"user","role":"system"}],"tools":[{"a":1,"a":2}]}`: "",
		`[1,2]`:    "",
		`not json`: "",
	}
	for in, want := range cases {
		if got := api.RepeatedKey([]byte(in)); got != want {
			t.Errorf("RepeatedKey(%s) = %q, want %q", in, got, want)
		}
	}
	r := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "m", Path: api.InferChat, Body: []byte(`{"model":"m","stream":false,"stream":true}`)}}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("a body naming stream twice: %v", err)
	}
}
