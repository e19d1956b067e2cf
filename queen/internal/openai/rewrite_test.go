package openai

import "testing"

// The queen renames the model in what a worker answers and changes no
// other byte.
func TestSetModel(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"id":"c1", "model" : "qwen-0.5b","choices":[{"delta":{"content":"hé\n"}}],"x":1.50}`,
			`{"id":"c1", "model" : "gpt-4o-mini","choices":[{"delta":{"content":"hé\n"}}],"x":1.50}`},
		{`{"model":"gpt-4o-mini"}`, `{"model":"gpt-4o-mini"}`},
		{`{"choices":[{"model":"qwen"}]}`, `{"choices":[{"model":"qwen"}]}`},
		{`{"model":null}`, `{"model":null}`},
		{`[{"model":"qwen"}]`, `[{"model":"qwen"}]`},
		{`not json`, `not json`},
	}
	for _, c := range cases {
		if got := string(setModel([]byte(c.in), "gpt-4o-mini")); got != c.want {
			t.Errorf("setModel(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

// Only the chunk that carries usage and no choice is the usage chunk.
func TestUsageOnly(t *testing.T) {
	cases := map[string]bool{
		`{"choices":[],"usage":{"prompt_tokens":3}}`:                    true,
		`{"usage":{"prompt_tokens":3}}`:                                 true,
		`{"choices":null,"usage":{"prompt_tokens":3}}`:                  true,
		`{"choices":[{"delta":{}}],"usage":{"prompt_tokens":3}}`:        false,
		`{"choices":[],"usage":null}`:                                   false,
		`{"choices":[{"delta":{"content":"usage"}}]}`:                   false,
		`{"choices":[{"delta":{"content":"x"}}],"usage":{"a":1},"z":1}`: false,
	}
	for in, want := range cases {
		if got := usageOnly([]byte(in)); got != want {
			t.Errorf("usageOnly(%s) = %v, want %v", in, got, want)
		}
	}
}
