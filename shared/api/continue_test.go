package api

import "testing"

func TestContinueRefusal(t *testing.T) {
	for _, tc := range []struct {
		path, body string
		ok         bool
	}{
		{InferChat, `{"stream":true,"messages":[]}`, true},
		{InferChat, `{"stream":true,"n":1,"response_format":{"type":"text"},"tools":null}`, true},
		{InferCompletions, `{"stream":true,"prompt":"once"}`, true},
		{InferChat, `{"messages":[]}`, false},
		{InferChat, `{"stream":true,"n":2}`, false},
		{InferChat, `{"stream":true,"response_format":{"type":"json_schema","json_schema":{}}}`, false},
		{InferChat, `{"stream":true,"response_format":{"type":"json_object"}}`, false},
		{InferChat, `{"stream":true,"tools":[{"type":"function"}]}`, false},
		{InferCompletions, `{"stream":true,"prompt":["a","b"]}`, false},
		{InferEmbeddings, `{"stream":true,"input":"x"}`, false},
	} {
		err := ContinueRefusal(&Infer{Model: "m", Path: tc.path, Body: []byte(tc.body)})
		if (err == nil) != tc.ok {
			t.Errorf("%s %s: refusal %v, want ok=%v", tc.path, tc.body, err, tc.ok)
		}
	}
	if ContinueRefusal(&Infer{Model: "m", Prompt: "hi", Stream: true}) == nil {
		t.Error("a job without a client's body continued")
	}
}

func TestContinuationWhole(t *testing.T) {
	finished := &Continuation{Text: "{}", Tokens: 1, FinishReason: "stop"}
	for _, tc := range []struct {
		c          *Continuation
		path, body string
		whole      bool
	}{
		{finished, InferChat, `{"stream":true,"response_format":{"type":"json_object"}}`, true},
		{finished, InferChat, `{"stream":true,"tools":[{"type":"function"}],"n":1}`, true},
		{finished, InferCompletions, `{"stream":true,"prompt":"once"}`, true},
		{&Continuation{Text: "{", Tokens: 1}, InferChat, `{"stream":true}`, false},
		{nil, InferChat, `{"stream":true}`, false},
		{finished, InferChat, `{"stream":true,"n":2}`, false},
		{finished, InferCompletions, `{"stream":true,"prompt":["a","b"]}`, false},
		{finished, InferEmbeddings, `{"input":"x"}`, false},
		{finished, InferChat, `not json`, false},
		{finished, InferChat, `{"messages":[]}`, false},
	} {
		if got := tc.c.Whole(&Infer{Model: "m", Path: tc.path, Body: []byte(tc.body)}); got != tc.whole {
			t.Errorf("%+v, %s %s: whole %v, want %v", tc.c, tc.path, tc.body, got, tc.whole)
		}
	}
}
