package refworker_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"rbee.dev/hive/internal/refworker"
)

// Embeddings are unit vectors, the same for the same text; rerank puts the
// document closest to the query first and keeps top_n.
func TestEmbeddingsRerank(t *testing.T) {
	_, url := mustServe(t)
	status, a := post(t, url+"/v1/embeddings", `{"model":"tiny","input":["bees","bees","wasps"]}`)
	data, _ := a["data"].([]any)
	if status != 200 || len(data) != 3 || dig(a, "usage", "prompt_tokens") != 3.0 {
		t.Fatalf("embeddings: %d %v", status, a)
	}
	v0, v1 := dig(a, "data", 0, "embedding").([]any), dig(a, "data", 1, "embedding").([]any)
	if len(v0) != refworker.EmbeddingSize || v0[3] != v1[3] {
		t.Fatalf("embeddings differ for the same text: %v %v", v0, v1)
	}
	status, r := post(t, url+"/v1/rerank", `{"model":"tiny","query":"bees","documents":["rocks","bees","sand"],"top_n":2}`)
	results, _ := r["results"].([]any)
	if status != 200 || len(results) != 2 || dig(r, "results", 0, "index") != 1.0 {
		t.Fatalf("rerank: %d %v", status, r)
	}
	if status, _ := post(t, url+"/v1/embeddings", `{"model":"tiny","input":[]}`); status != 400 {
		t.Fatalf("empty input: %d", status)
	}
}

// A recording worker writes each request as it came, and answers paths
// with a canned answer byte for byte.
func TestRecordAndCanned(t *testing.T) {
	dir := t.TempDir()
	record, canned := filepath.Join(dir, "rec.jsonl"), filepath.Join(dir, "canned.json")
	if err := os.WriteFile(canned, []byte(`{"/v1/chat/completions": {"status": 418, "body": {"x" : 1}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, url := mustServe(t, func(c *refworker.Config) { c.Record, c.Canned = record, canned })
	if status, a := post(t, url+"/v1/chat/completions", `{"model":"tiny", "tools":[]}`); status != 418 || a["x"] != 1.0 {
		t.Fatalf("canned: %d %v", status, a)
	}
	if status, _ := post(t, url+"/v1/completions", `{"model":"tiny","prompt":"hi"}`); status != 200 {
		t.Fatalf("generated: %d", status)
	}
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var first refworker.Recorded
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &first) != nil ||
		first.Path != "/v1/chat/completions" || first.Body != `{"model":"tiny", "tools":[]}` {
		t.Fatalf("recorded: %q", lines)
	}
}
