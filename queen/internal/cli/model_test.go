package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"rbee.dev/queen/internal/cli"
	"rbee.dev/shared/api"
)

var testModel = api.Model{
	ModelID: "llama-3-8b", File: "llama-3-8b.gguf", SizeBytes: 3 << 30, SHA256: strings.Repeat("ab", 32),
	Source: "hf:meta/llama-3-8b:llama-3-8b.Q4_K_M.gguf", CreatedAt: baseTime, Hive: "h1",
	Architecture: "llama", Parameters: 8_030_261_248, Quantization: "Q4_K_M", ContextLength: 8192,
	VRAMEstimateBytes: 5 << 30,
}

// resultScript ends every job done with data as its result.
func resultScript(action string, data any) func(j *fakeJob) {
	return func(j *fakeJob) {
		j.narrate("started", "")
		j.emit(api.SSEData, api.Event{Actor: "hive-a", Action: action, Data: data})
		j.end(api.StateDone, nil, "")
	}
}

// words is output with each line's run of blanks squeezed to one space, so
// tests compare words, not the alignment tabwriter chose.
func words(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}

func wantLines(t *testing.T, out string, want ...string) {
	t.Helper()
	got := words(out)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("output lacks line %q:\n%s", w, out)
		}
	}
}

func TestModelList(t *testing.T) {
	q := newFakeQueen(t)
	bare := api.Model{ModelID: "blob", SizeBytes: 1500, CreatedAt: baseTime}
	q.script = resultScript("model_list", []api.Model{testModel, bare})
	r := q.run(t, "model", "ls", "--hive", "h1")
	r.want(t, 0)
	got := words(r.stdout)
	want := []string{
		"ID SIZE ARCHITECTURE QUANTIZATION PARAMS CONTEXT EST. VRAM CREATED",
		"llama-3-8b 3.0 GiB llama Q4_K_M 8.03B 8.19K 5.0 GiB 2025-03-04 05:06:07",
		"blob 1.5 KiB - - - - - 2025-03-04 05:06:07",
	}
	if !slices.Equal(got, want) {
		t.Errorf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r.stderr != "" {
		t.Errorf("stderr %q", r.stderr)
	}
	creates, _, _ := q.snapshot()
	if req := creates[0].req; req.Operation != api.OpModelList || req.Hive != "h1" {
		t.Errorf("request %+v", req)
	}

	// --json passes the hive's result on as it came; --hive may come first.
	r = q.run(t, "--json", "model", "--hive", "h1", "ls")
	r.want(t, 0)
	want0, _ := json.Marshal([]api.Model{testModel, bare})
	if strings.TrimSpace(r.stdout) != string(want0) {
		t.Errorf("--json %s\nwant    %s", r.stdout, want0)
	}

	q.script = resultScript("model_list", []api.Model{})
	r = q.run(t, "model", "ls", "--hive", "h1")
	r.want(t, 0)
	if len(words(r.stdout)) != 1 {
		t.Errorf("empty catalog:\n%s", r.stdout)
	}
}

func TestModelGetAndDelete(t *testing.T) {
	q := newFakeQueen(t)
	q.script = resultScript("model_get", testModel)
	r := q.run(t, "model", "get", "llama-3-8b", "--hive", "h1")
	r.want(t, 0)
	wantLines(t, r.stdout,
		"ID llama-3-8b", "HIVE h1", "SIZE 3.0 GiB", "ARCHITECTURE llama", "QUANTIZATION Q4_K_M",
		"PARAMETERS 8.03B", "CONTEXT LENGTH 8.19K", "EST. VRAM 5.0 GiB", "FILE llama-3-8b.gguf",
		"SOURCE "+testModel.Source, "SHA256 "+testModel.SHA256, "CREATED 2025-03-04 05:06:07")
	creates, _, _ := q.snapshot()
	if req := creates[0].req; req.Operation != api.OpModelGet || req.Hive != "h1" || req.Payload.(*api.ModelRef).ModelID != "llama-3-8b" {
		t.Errorf("request %+v", req)
	}

	q.script = resultScript("model_delete", testModel)
	r = q.run(t, "model", "rm", "llama-3-8b", "--hive", "h1")
	r.want(t, 0)
	if r.stdout != "model llama-3-8b deleted from hive h1 (3.0 GiB freed)\n" {
		t.Errorf("rm stdout %q", r.stdout)
	}
	creates, _, _ = q.snapshot()
	if req := creates[1].req; req.Operation != api.OpModelDelete || req.Payload.(*api.ModelRef).ModelID != "llama-3-8b" {
		t.Errorf("request %+v", req)
	}
}

func TestModelJobFails(t *testing.T) {
	q := newFakeQueen(t)
	q.script = func(j *fakeJob) { j.end(api.StateFailed, nil, "model ghost not found on hive h1") }
	for _, args := range [][]string{
		{"model", "get", "ghost", "--hive", "h1"},
		{"model", "rm", "ghost", "--hive", "h1"},
		{"--json", "model", "ls", "--hive", "h1"},
	} {
		r := q.run(t, args...)
		r.want(t, 1)
		if r.stdout != "" || !strings.HasSuffix(r.stderr, " failed: model ghost not found on hive h1\n") {
			t.Errorf("%v: stdout %q, stderr %q", args, r.stdout, r.stderr)
		}
	}
	// A job that ends done without a result is a failure too.
	q.script = nil
	r := q.run(t, "model", "ls", "--hive", "h1")
	r.want(t, 1)
	if r.stderr != "rbee: job job-4 ended without a result\n" {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestModelUsageErrors(t *testing.T) {
	q := newFakeQueen(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"model", "ls"}, "--hive is required"},
		{[]string{"model", "get", "../etc", "--hive", "h1"}, `model_id "../etc" is not valid`},
		{[]string{"model", "download", "ftp://x/y.gguf", "--hive", "h1"}, "must start with hf:, http:// or https://"},
		{[]string{"model", "download", "hf:a/b", "--hive", "h1", "--sha256", "abc"}, "sha256 must be 64 hex digits"},
		{[]string{"model", "get", "--hive", "h1"}, "needs MODEL"},
		{[]string{"model", "nope"}, `unknown command "nope"`},
	} {
		r := q.run(t, tt.args...)
		r.want(t, 2)
		if !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: stderr %q, want %q", tt.args, r.stderr, tt.want)
		}
	}
	if creates, _, _ := q.snapshot(); len(creates) != 0 {
		t.Fatalf("usage errors reached the queen: %+v", creates)
	}
}

// downloadScript narrates a download the way the hive does: steps, progress
// every 5%, the record.
func downloadScript(total int64) func(j *fakeJob) {
	return func(j *fakeJob) {
		j.narrate("started", "")
		j.emit(api.SSENarration, api.Event{Actor: "download", Action: "step", Message: "model_id llama-3-8b (from the file name llama-3-8b.gguf)"})
		j.emit(api.SSENarration, api.Event{Actor: "download", Action: "step", Message: "downloading https://example.com/llama-3-8b.gguf (3.0 GiB) as model llama-3-8b"})
		for pct := int64(0); pct <= 100; pct += 5 {
			done := total * pct / 100
			j.emit(api.SSENarration, api.Event{Actor: "download", Action: "progress", Message: fmt.Sprint(done),
				Progress: &api.Progress{Done: done, Total: total, Unit: "bytes"}})
		}
		j.emit(api.SSENarration, api.Event{Actor: "download", Action: "step", Level: api.LevelWarn, Message: "the model is kept without metadata"})
		j.emit(api.SSEData, api.Event{Actor: "models", Action: "model_download", Data: testModel})
		j.end(api.StateDone, nil, "")
	}
}

func TestModelDownload(t *testing.T) {
	q := newFakeQueen(t)
	q.script = downloadScript(100 << 20)
	sum := strings.Repeat("ab", 32)
	r := q.run(t, "model", "download", "https://example.com/llama-3-8b.gguf", "--hive", "h1", "--id", "llama-3-8b", "--sha256", sum, "--timeout", "1h")
	r.want(t, 0)
	var want strings.Builder
	want.WriteString("model_id llama-3-8b (from the file name llama-3-8b.gguf)\n")
	want.WriteString("downloading https://example.com/llama-3-8b.gguf (3.0 GiB) as model llama-3-8b\n")
	// One line every 10%, though the hive reports every 5%.
	for pct := 0; pct <= 100; pct += 10 {
		done := "0 B"
		if pct > 0 {
			done = fmt.Sprintf("%d.0 MiB", pct)
		}
		fmt.Fprintf(&want, "downloaded %s of 100.0 MiB (%d%%)\n", done, pct)
	}
	want.WriteString("warn: the model is kept without metadata\n")
	if r.stderr != want.String() {
		t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want.String())
	}
	wantLines(t, r.stdout, "ID llama-3-8b", "SIZE 3.0 GiB", "ARCHITECTURE llama", "QUANTIZATION Q4_K_M",
		"PARAMETERS 8.03B", "CONTEXT LENGTH 8.19K", "EST. VRAM 5.0 GiB")
	creates, _, _ := q.snapshot()
	if req := creates[0].req; req.Operation != api.OpModelDownload || req.Hive != "h1" ||
		*req.Payload.(*api.ModelDownload) != (api.ModelDownload{Source: "https://example.com/llama-3-8b.gguf", ModelID: "llama-3-8b", SHA256: sum}) || req.TimeoutS != 3600 {
		t.Errorf("request %+v", req)
	}

	// --json: the record only, no progress.
	r = q.run(t, "--json", "model", "download", "hf:meta/llama-3-8b", "--hive", "h1")
	r.want(t, 0)
	var m api.Model
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m.ModelID != "llama-3-8b" || r.stderr != "" {
		t.Errorf("--json stdout %q, stderr %q: %v", r.stdout, r.stderr, err)
	}
}

func TestModelDownloadFails(t *testing.T) {
	q := newFakeQueen(t)
	q.script = func(j *fakeJob) {
		j.emit(api.SSENarration, api.Event{Actor: "download", Action: "progress", Progress: &api.Progress{Done: 100, Total: 1000, Unit: "bytes"}})
		j.end(api.StateFailed, nil, "source: GET https://example.com/x.gguf: HTTP 404")
	}
	r := q.run(t, "model", "download", "https://example.com/x.gguf", "--hive", "h1")
	r.want(t, 1)
	if r.stdout != "" || r.stderr != "downloaded 100 B of 1000 B (10%)\nrbee: job job-1 failed: source: GET https://example.com/x.gguf: HTTP 404\n" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

// TestModelDownloadInterrupt stands in for Ctrl-C: the download job is
// cancelled, its end awaited, and rbee exits 130.
func TestModelDownloadInterrupt(t *testing.T) {
	q := newFakeQueen(t)
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	q.script = func(j *fakeJob) {
		j.waitStream()
		j.emit(api.SSENarration, api.Event{Actor: "download", Action: "progress", Progress: &api.Progress{Done: 1 << 20, Total: 4 << 20, Unit: "bytes"}})
		interrupt()
		if !j.waitCancel() {
			return
		}
		j.end(api.StateCancelled, nil, "download of model x stopped, partial file removed: cancelled")
	}
	start := time.Now()
	r := q.runWith(t, invocation{ctx: ctx}, "model", "download", "https://example.com/x.gguf", "--hive", "h1")
	r.want(t, 130)
	if r.stdout != "" || r.stderr != "downloaded 1.0 MiB of 4.0 MiB (25%)\nrbee: interrupted; job job-1 cancelled\n" {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
	if _, cancels, _ := q.snapshot(); fmt.Sprint(cancels) != "[job-1]" {
		t.Errorf("cancels %v, want one DELETE of job-1", cancels)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s", d)
	}
}

// The bar on a terminal: bytes done and total in binary units, gone from
// the line once the download ends, messages on lines of their own.
func TestDownloadBar(t *testing.T) {
	var buf bytes.Buffer
	events := []api.Event{
		{Actor: "download", Action: "step", Message: "downloading x"},
		{Actor: "download", Action: "progress", Progress: &api.Progress{Done: 0, Total: 8 << 20, Unit: "bytes"}},
		{Actor: "download", Action: "progress", Progress: &api.Progress{Done: 3 << 20, Total: 8 << 20, Unit: "bytes"}},
	}
	cli.RenderDownload(&buf, true, events)
	out := buf.String()
	if !strings.HasPrefix(out, "downloading x\n") || !strings.Contains(out, "downloading  ") || !strings.Contains(out, "8.0 MiB") {
		t.Errorf("bar output %q", out)
	}
	if strings.Contains(out, "downloaded ") {
		t.Errorf("plain progress lines beside the bar: %q", out)
	}
	// A size the server did not say gives a spinner with the bytes so far.
	buf.Reset()
	cli.RenderDownload(&buf, true, []api.Event{{Actor: "download", Action: "progress", Progress: &api.Progress{Unit: "bytes"}}})
	if !strings.Contains(buf.String(), "downloading ( 0 B)") {
		t.Errorf("spinner output %q", buf.String())
	}
}
