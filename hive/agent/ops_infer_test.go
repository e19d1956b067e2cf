package agent

import (
	"testing"

	"rbee.dev/shared/api"
)

// A client's body reaches the worker byte for byte, but for the model's
// name, rbee's download field and the usage a stream must report.
func TestWorkerBodyKeepsTheClientsBytes(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"order, spacing and numbers kept",
			`{"zeta": 1, "model":"gpt-4o-mini" ,"temperature":0.70, "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
			`{"zeta": 1, "model":"qwen" ,"temperature":0.70, "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`},
		{"already the worker's name", `{"model":"qwen","n":2}`, `{"model":"qwen","n":2}`},
		{"download dropped", `{"model":"m","download":{"source":"hf:x/y"},"seed":7}`, `{"model":"qwen","seed":7}`},
		{"stream asks for usage", `{"model":"m","stream":true}`, `{"model":"qwen","stream":true,"stream_options":{"include_usage":true}}`},
		{"stream options kept", `{"stream":true,"stream_options":{"x":1,"include_usage":false},"model":"m"}`,
			`{"stream":true,"stream_options":{"x":1,"include_usage":true},"model":"qwen"}`},
		{"stream options not an object", `{"model":"m","stream":true,"stream_options":null}`,
			`{"model":"qwen","stream":true,"stream_options":{"include_usage":true}}`},
		{"no stream, no usage option", `{"model":"m","stream":false}`, `{"model":"qwen","stream":false}`},
		{"model not a string", `{"model":7}`, `{"model":"qwen"}`},
		{"escapes kept", `{"model":"m","stop":["\u00e9\n"]}`, `{"model":"qwen","stop":["\u00e9\n"]}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, got, err := workerBody(&api.Infer{Path: api.InferChat, Body: []byte(c.in)}, "qwen")
			if err != nil {
				t.Fatal(err)
			}
			if path != api.InferChat || string(got) != c.want {
				t.Fatalf("got %s %s\nwant %s", path, got, c.want)
			}
		})
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"model":`, ``, `null`,
		// A repeated key would keep the client's value from the hive's
		// edits: workers read the last one.
		`{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}`,
		`{"model":"m","stream":true,"stream_options":{"include_usage":true,"include_\u0075sage":false}}`,
		`{"model":"m","stre\u0061m":false,"stream":true}`,
		// So would one in another case, which the worker may not read.
		`{"model":"m","Stream":true}`,
	} {
		if _, got, err := workerBody(&api.Infer{Path: api.InferChat, Body: []byte(bad)}, "qwen"); err == nil && bad != `` {
			t.Errorf("%q accepted as %s", bad, got)
		}
	}
}
