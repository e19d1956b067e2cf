package app_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"rbee.dev/queen/internal/cli"
	"rbee.dev/shared/api"
)

// TestModelsWorkersCLI drives models and workers end to end through the
// rbee command line: a real queen, an in-process hive and the reference
// worker as a child process. A model is downloaded from a local HTTP
// server, served by a spawned worker that answers chat completions, seen in
// the hive's heartbeat, stopped and deleted.
func TestModelsWorkersCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the reference worker and runs it")
	}
	// The hive's built-in catalog looks for rbee-worker on PATH when it is
	// not beside the running executable, as it is not beside a test binary.
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "rbee-worker"), "rbee.dev/hive/cmd/rbee-worker").CombinedOutput(); err != nil {
		t.Fatalf("build rbee-worker: %v\n%s", err, out)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	model := tinyGGUF(t)
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), bytes.NewReader(model))
	}))
	t.Cleanup(files.Close)

	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	rbee := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		env := map[string]string{"RBEE_QUEEN": base}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		code := cli.Run(ctx, args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb)
		return code, out.String(), errb.String()
	}
	lines := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
		return out
	}
	field := func(out, name string) string {
		for _, l := range lines(out) {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return v
			}
		}
		return ""
	}

	code, out, errOut := rbee("model", "download", "--hive", "h1", files.URL+"/tiny.gguf")
	if code != 0 {
		t.Fatalf("model download: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if field(out, "ID") != "tiny" || field(out, "ARCHITECTURE") != "llama" || field(out, "SIZE") == "-" {
		t.Errorf("model download printed:\n%s", out)
	}
	if !strings.Contains(errOut, "(100%)") {
		t.Errorf("model download showed no finished progress:\n%s", errOut)
	}
	code, out, errOut = rbee("model", "ls", "--hive", "h1")
	if code != 0 || !slices.ContainsFunc(lines(out), func(l string) bool { return strings.HasPrefix(l, "tiny ") }) {
		t.Fatalf("model ls: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = rbee("worker", "spawn", "--hive", "h1", "--model", "tiny", "--backend", "reference", "--ctx-size", "256")
	if code != 0 {
		t.Fatalf("worker spawn: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	id, url := field(out, "ID"), field(out, "URL")
	if id == "" || !strings.HasPrefix(url, "http://") || field(out, "STATE") != api.WorkerReady || field(out, "BACKEND") != "reference" {
		t.Fatalf("worker spawn printed:\n%s", out)
	}
	if strings.TrimSpace(errOut) == "" {
		t.Errorf("worker spawn printed none of the worker's startup output")
	}

	resp, err := http.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":4}`))
	if err != nil {
		t.Fatal(err)
	}
	var chat struct {
		Choices []struct {
			Message api.Message `json:"message"`
		} `json:"choices"`
	}
	err = json.NewDecoder(resp.Body).Decode(&chat)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || len(chat.Choices) == 0 || chat.Choices[0].Message.Content == "" {
		t.Fatalf("chat completion: status %d, %+v, %v", resp.StatusCode, chat, err)
	}

	code, out, errOut = rbee("worker", "ls", "--hive", "h1")
	if code != 0 || !slices.ContainsFunc(lines(out), func(l string) bool {
		return strings.HasPrefix(l, id+" tiny reference ready "+url+" ")
	}) {
		t.Fatalf("worker ls: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = rbee("worker", "logs", id, "--hive", "h1")
	// The note names the log file by the data dir the heartbeat reports.
	if code != 0 || field(out, "ID") != id || !strings.Contains(errOut, "/workers/"+id+".log") || strings.Contains(errOut, "<data dir>") {
		t.Fatalf("worker logs: exit %d\n%s%s", code, out, errOut)
	}

	// The heartbeat carries the hive's models and workers.
	waitFor(t, 10*time.Second, func() bool {
		var h api.Hive
		do(t, "GET", base+"/v1/hives/h1", nil, &h)
		return slices.ContainsFunc(h.Models, func(m api.Model) bool { return m.ModelID == "tiny" }) &&
			slices.ContainsFunc(h.Workers, func(w api.Worker) bool { return w.WorkerID == id && w.State == api.WorkerReady })
	})

	code, out, errOut = rbee("worker", "stop", id, "--hive", "h1")
	if code != 0 || !strings.HasPrefix(out, "worker "+id+" stopped") {
		t.Fatalf("worker stop: exit %d\n%s%s", code, out, errOut)
	}
	if resp, err := http.Get(url + "/health"); err == nil {
		resp.Body.Close()
		t.Fatalf("the worker still answers after worker stop: %d", resp.StatusCode)
	}
	code, out, errOut = rbee("worker", "get", id, "--hive", "h1")
	if code != 1 || !strings.Contains(errOut, "worker "+id+" not found on hive h1") {
		t.Fatalf("worker get after stop: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = rbee("model", "rm", "tiny", "--hive", "h1")
	if code != 0 || !strings.HasPrefix(out, "model tiny deleted from hive h1") {
		t.Fatalf("model rm: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = rbee("--json", "model", "ls", "--hive", "h1")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("model ls after rm: exit %d, %q", code, out)
	}
}

// tinyGGUF is a small valid GGUF v3 file: a llama header with the keys a
// loader needs, a four-token vocabulary and one F32 tensor, so the hive
// reads real metadata from it.
func tinyGGUF(t testing.TB) []byte {
	t.Helper()
	const (
		typeUint32 = 4
		typeFloat  = 6
		typeString = 8
		typeArray  = 9
		width      = 64
		rows       = 16
	)
	var b bytes.Buffer
	le := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	str := func(v string) { le(uint64(len(v))); b.WriteString(v) }
	u32 := func(v uint32) func() { return func() { le(uint32(typeUint32)); le(v) } }
	sv := func(v string) func() { return func() { le(uint32(typeString)); str(v) } }
	vocab := []string{"<unk>", "<s>", "</s>", "a"}
	kvs := []struct {
		key string
		put func()
	}{
		{"general.architecture", sv("llama")},
		{"general.name", sv("tiny")},
		{"general.file_type", u32(0)},
		{"general.alignment", u32(32)},
		{"llama.context_length", u32(2048)},
		{"llama.embedding_length", u32(width)},
		{"llama.block_count", u32(1)},
		{"llama.feed_forward_length", u32(4 * width)},
		{"llama.attention.head_count", u32(8)},
		{"llama.attention.head_count_kv", u32(8)},
		{"llama.attention.layer_norm_rms_epsilon", func() { le(uint32(typeFloat)); le(float32(1e-5)) }},
		{"tokenizer.ggml.model", sv("llama")},
		{"tokenizer.ggml.tokens", func() {
			le(uint32(typeArray))
			le(uint32(typeString))
			le(uint64(len(vocab)))
			for _, v := range vocab {
				str(v)
			}
		}},
	}
	b.WriteString("GGUF")
	le(uint32(3))
	le(uint64(1))
	le(uint64(len(kvs)))
	for _, kv := range kvs {
		str(kv.key)
		kv.put()
	}
	// One tensor: token_embd.weight, F32, [width, rows], at offset 0.
	str("token_embd.weight")
	le(uint32(2))
	le(uint64(width))
	le(uint64(rows))
	le(uint32(0))
	le(uint64(0))
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	for i := 0; i < width*rows; i++ {
		le(math.Float32bits(float32(i%251) / 251))
	}
	return b.Bytes()
}
