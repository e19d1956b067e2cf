package refworker_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// An answer continued from its first words, given as the last assistant
// message, is the rest of the same answer: together they are the answer an
// uninterrupted request gets, and usage counts the prefix in the prompt.
func TestChatContinuesAssistantPrefix(t *testing.T) {
	_, url := mustServe(t)
	user := `{"role":"user","content":"tell me a story"}`
	_, full := post(t, url+"/v1/chat/completions", `{"model":"tiny","max_tokens":200,"messages":[`+user+`]}`)
	text := dig(full, "choices", 0, "message", "content").(string)
	words := strings.Fields(text)
	if len(words) < 4 {
		t.Fatalf("answer too short to cut: %q", text)
	}
	for _, k := range []int{1, len(words) / 2, len(words) - 1, len(words)} {
		prefix := strings.Join(words[:k], " ")
		msg, _ := json.Marshal(map[string]string{"role": "assistant", "content": prefix})
		_, rest := post(t, url+"/v1/chat/completions", `{"model":"tiny","max_tokens":200,"messages":[`+user+`,`+string(msg)+`]}`)
		got := prefix + dig(rest, "choices", 0, "message", "content").(string)
		if got != text {
			t.Fatalf("cut after %d words: prefix+continuation = %q, want %q", k, got, text)
		}
		if fr := dig(rest, "choices", 0, "finish_reason"); fr != "stop" {
			t.Fatalf("cut after %d words: finish_reason %v", k, fr)
		}
		pt := dig(full, "usage", "prompt_tokens").(float64)
		if p := dig(rest, "usage", "prompt_tokens").(float64); p != pt+float64(k) {
			t.Fatalf("cut after %d words: prompt_tokens %v, want %v", k, p, pt+float64(k))
		}
		if c := dig(rest, "usage", "completion_tokens").(float64); int(c) != len(words)-k {
			t.Fatalf("cut after %d words: completion_tokens %v, want %d", k, c, len(words)-k)
		}
	}
}
