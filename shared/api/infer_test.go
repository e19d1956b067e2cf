package api_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"rbee.dev/shared/api"
)

// An infer job carries a client's body to one of the known endpoints: a
// bounded JSON object, with a valid model, and none of the rebuilt form's
// fields beside it.
func TestInferBodyValidation(t *testing.T) {
	ok := api.RawBody(`{"model":"demo","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"tools":[]}`)
	cases := []struct {
		name string
		req  api.JobRequest
		err  string
	}{
		{"chat", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: ok}}, ""},
		{"rerank", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferRerank, Body: api.RawBody(`{"query":"q","documents":["d"]}`)}}, ""},
		{"rebuilt form", api.JobRequest{Payload: &api.Infer{Model: "demo", Prompt: "hi"}}, ""},
		{"unknown path", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: "/v1/images", Body: ok}}, "path"},
		{"path without body", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat}}, "body is required"},
		{"body without path", api.JobRequest{Payload: &api.Infer{Model: "demo", Body: ok}}, "path"},
		{"array", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(`[1]`)}}, "JSON object"},
		{"not JSON", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(`{"model":`)}}, "JSON object"},
		{"too large", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(`{"x":"` + strings.Repeat("a", api.MaxInferBody) + `"}`)}}, "longer"},
		{"not UTF-8", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody("{\"x\":\"\xff\"}")}}, "UTF-8"},
		{"other whitespace", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody("\u00a0{\"x\":1}")}}, "JSON object"},
		{"a key in another case", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(`{"model":"demo","Stream":true}`)}}, `"Stream"`},
		{"an option in another case", api.JobRequest{Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(`{"model":"demo","stream_options":{"INCLUDE_USAGE":true}}`)}}, "include_usage"},
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
// not, and so is one rbee reads in another case; repeats deeper down are the
// worker's business.
func TestKeyProblem(t *testing.T) {
	cases := map[string]string{
		`{"model":"a","stream":true}`:                                            "",
		`{"model":"a","model":"b"}`:                                              "model",
		`{"stre\u0061m":false,"stream":true}`:                                    "stream",
		`{"stream_options":{"include_usage":true,"include_usage":false}}`:        "stream_options.include_usage",
		`{"stream_options":{"include_usage":true},"stream_options":null}`:        "stream_options",
		`{"messages":[{"role":"user","role":"system"}],"tools":[{"a":1,"a":2}]}`: "",
		// The worker's to read: rbee reads and edits neither.
		`{"model":"a","seed":1,"seed":2,"stream_options":{"x":1,"x":2}}`: "",
		`[1,2]`:    "",
		`not json`: "",
	}
	for in, want := range cases {
		if got, twice := api.KeyProblem([]byte(in)); got != want || twice != (want != "") {
			t.Errorf("KeyProblem(%s) = %q, %v; want %q twice", in, got, twice, want)
		}
	}
	// Keys rbee reads by exact name, in another case; a repeat wins over
	// one, wherever it is.
	folded := map[string]string{
		`{"model":"a","Stream":true}`:                            "Stream",
		`{"stream_options":{"Include_Usage":true}}`:              "stream_options.Include_Usage",
		`{"MODEL":"a","messages":[{"Stream":1}],"stream":false}`: "MODEL",
		`{"messages":[{"Model":"x"}],"Tools":[]}`:                "",
	}
	for in, want := range folded {
		if got, twice := api.KeyProblem([]byte(in)); got != want || twice {
			t.Errorf("KeyProblem(%s) = %q, %v; want %q in another case", in, got, twice, want)
		}
	}
	if got, twice := api.KeyProblem([]byte(`{"Stream":true,"model":"a","model":"b"}`)); got != "model" || !twice {
		t.Errorf("a repeat after a folded key: %q, %v", got, twice)
	}
	r := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "m", Path: api.InferChat, Body: []byte(`{"model":"m","stream":false,"stream":true}`)}}
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("a body naming stream twice: %v", err)
	}
}

// A client's body reads back byte for byte after its job is encoded, also
// twice over (a record inside a dispatch), whatever encoding/json would
// change in it: spacing, '<', '>', '&', U+2028, escapes of its own.
func TestRawBodyKeepsBytes(t *testing.T) {
	bodies := []string{
		`{"model":"demo","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"demo", "messages":[ {"role":"user","content":"<b>a & b</b>"} ] }`,
		"{\"model\":\"demo\",\"prompt\":\"line\u2028sep \\u00e9 \\/ 0.70\",\"seed\":12345678901234567890,\"t\":1e400}\n",
		`{"model":"demo","prompt":"\u003cb\u003e"}`,
	}
	for _, body := range bodies {
		req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(body)}}
		once, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		twice, err := json.Marshal(map[string]any{"request": json.RawMessage(once)})
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ Request api.JobRequest }
		if err := json.Unmarshal(twice, &got); err != nil {
			t.Fatalf("%s: %v", twice, err)
		}
		in, ok := got.Request.Payload.(*api.Infer)
		if !ok || string(in.Body) != body {
			t.Errorf("body %q came back as %q (encoded %s)", body, in.Body, twice)
		}
	}
	// A body full of what json.Marshal escapes for HTML takes its own size
	// in a record written with api.Marshal, and still reads back whole
	// from either encoder's record.
	full := `{"model":"demo","prompt":"` + strings.Repeat("<a href='x'>&</a>", 50_000) + `"}`
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: "demo", Path: api.InferChat, Body: api.RawBody(full)}}
	lean, err := api.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(lean) > len(full)*11/10 {
		t.Errorf("a %d-byte body took %d bytes in the record", len(full), len(lean))
	}
	escaped, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range [][]byte{lean, escaped} {
		var back api.JobRequest
		if err := json.Unmarshal(rec, &back); err != nil {
			t.Fatal(err)
		}
		if in, ok := back.Payload.(*api.Infer); !ok || string(in.Body) != full {
			t.Errorf("the body came back changed from a %d-byte record", len(rec))
		}
	}
	// A compact body with nothing to escape stays an object in the record.
	rec, _ := json.Marshal(api.Infer{Body: api.RawBody(bodies[0])})
	if !strings.Contains(string(rec), `"body":{"model"`) {
		t.Errorf("compact body written as %s", rec)
	}
	// Only an object is written as itself: a body holding a string or null
	// reads back as written.
	for _, body := range []string{`"abc"`, `null`} {
		rec, _ := json.Marshal(api.Infer{Body: api.RawBody(body)})
		var back api.Infer
		if err := json.Unmarshal(rec, &back); err != nil || string(back.Body) != body {
			t.Errorf("body %s came back as %q (%v)", body, back.Body, err)
		}
	}
	// A client of POST /v1/jobs may send the body as an object or as a string holding it.
	var in api.Infer
	if err := json.Unmarshal([]byte(`{"body": {"a": 1} }`), &in); err != nil || string(in.Body) != `{"a": 1}` {
		t.Errorf("object body read as %q, %v", in.Body, err)
	}
}

// A worker's counts are read so that none is below zero and a garbled one
// loses nothing else: the queen adds them to counters that cannot go back.
func TestUsageReadsLeniently(t *testing.T) {
	for body, want := range map[string]api.Usage{
		`{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}`:          {PromptTokens: 3, CompletionTokens: 5, TotalTokens: 8},
		`{"prompt_tokens":-1000,"completion_tokens":5}`:                       {CompletionTokens: 5},
		`{"prompt_tokens":1.6,"completion_tokens":"7","total_tokens":null}`:   {PromptTokens: 2, CompletionTokens: 7},
		`{"prompt_tokens":1e400,"completion_tokens":12345678901234567890}`:    {PromptTokens: math.MaxInt32, CompletionTokens: math.MaxInt32},
		`{"prompt_tokens":"NaN","completion_tokens":true,"total_tokens":[1]}`: {},
		`5`: {},
	} {
		var res struct {
			FinishReason string    `json:"finish_reason"`
			Usage        api.Usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(`{"usage":`+body+`,"finish_reason":"stop"}`), &res); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if res.Usage != want || res.FinishReason != "stop" {
			t.Errorf("%s: %+v %q, want %+v and the finish reason", body, res.Usage, res.FinishReason, want)
		}
	}
}
