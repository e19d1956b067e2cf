package agent

import (
	"encoding/json"
	"errors"
	"testing"

	"rbee.dev/hive/internal/workers"
	"rbee.dev/shared/api"
)

func TestContinueBody(t *testing.T) {
	c := &api.Continuation{Text: "Lorem ipsum", Tokens: 2}
	chat := `{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}`
	got, err := continueBody(api.InferChat, []byte(chat), c, workers.KindLlamaServer)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"},{"content":"Lorem ipsum","role":"assistant"}],"stream":true}`
	if string(got) != want {
		t.Fatalf("chat body:\n got %s\nwant %s", got, want)
	}
	got, err = continueBody(api.InferChat, []byte(chat), c, workers.KindVLLM)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	_ = json.Unmarshal(got, &v)
	if v["continue_final_message"] != true || v["add_generation_prompt"] != false {
		t.Fatalf("vLLM body lacks its continuation flags: %s", got)
	}
	got, err = continueBody(api.InferCompletions, []byte(`{"prompt":"Once","max_completion_tokens":3}`), c, workers.KindReference)
	if err != nil || string(got) != `{"prompt":"OnceLorem ipsum","max_completion_tokens":1}` {
		t.Fatalf("completion body: %s, %v", got, err)
	}
	if _, err := continueBody(api.InferChat, []byte(`{"max_tokens":2,"messages":[]}`), c, workers.KindReference); !errors.Is(err, errNothingLeft) {
		t.Fatalf("no tokens left: %v", err)
	}
}

// A continuing worker's stream is edited into the client's one stream:
// its opening role chunk is dropped, its chunks take the client's id, and
// the usage counts the whole generation.
func TestDeliveryEdit(t *testing.T) {
	d := newDelivery(&api.Continuation{Text: "A b", Tokens: 2, ID: "first"})
	for _, tc := range []struct{ in, want string }{
		{`{"id":"second","choices":[{"delta":{"role":"assistant"}}]}`, ""},
		{`{"id":"second","choices":[{"delta":{"content":" c"}}]}`, `{"id":"first","choices":[{"delta":{"content":" c"}}]}`},
		{`{"id":"second","choices":[{"delta":{},"finish_reason":"stop"}]}`, `{"id":"first","choices":[{"delta":{},"finish_reason":"stop"}]}`},
		{`{"id":"second","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}`,
			`{"id":"first","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`},
	} {
		var c chunk
		_ = json.Unmarshal([]byte(tc.in), &c)
		text := clientText(&c)
		got, ok := d.edit([]byte(tc.in), &c, text)
		if !ok {
			if tc.want != "" {
				t.Fatalf("%s dropped", tc.in)
			}
			continue
		}
		if string(got) != tc.want {
			t.Fatalf("edit %s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
		d.sent(&c, text)
	}
	if d.now.Text != "A b c" || d.now.Tokens != 3 {
		t.Fatalf("delivered %+v", d.now)
	}
}
