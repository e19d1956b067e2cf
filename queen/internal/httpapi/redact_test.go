package httpapi

import (
	"testing"

	"rbee.dev/shared/api"
)

// A record shown to a key without admin hides a run's environment values
// and a download source's credentials and query, and leaves the stored
// record as it was.
func TestRedact(t *testing.T) {
	run := &api.Run{Command: []string{"true"}, Env: map[string]string{"TOKEN": "s3cret"}}
	got := redact(api.JobRequest{Operation: api.OpRun, Payload: run}).Payload.(*api.Run)
	if got.Env["TOKEN"] != redacted || run.Env["TOKEN"] != "s3cret" {
		t.Errorf("redacted env %v, original %v", got.Env, run.Env)
	}
	dl := &api.ModelDownload{Source: "https://user:pw@example.com/m.gguf?sig=abc#frag", ModelID: "m"}
	gotDL := redact(api.JobRequest{Operation: api.OpModelDownload, Payload: dl}).Payload.(*api.ModelDownload)
	if want := "https://REDACTED@example.com/m.gguf?REDACTED"; gotDL.Source != want || gotDL.ModelID != "m" {
		t.Errorf("redacted source %q, want %q", gotDL.Source, want)
	}
	if dl.Source != "https://user:pw@example.com/m.gguf?sig=abc#frag" {
		t.Errorf("the original changed: %q", dl.Source)
	}
	plain := &api.ModelDownload{Source: "hf:org/repo"}
	if got := redact(api.JobRequest{Operation: api.OpModelDownload, Payload: plain}).Payload; got != api.Payload(plain) {
		t.Errorf("a source without secrets was copied: %v", got)
	}
}
