package app_test

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// hostileFiles is a model source that does not play fair. Every path serves
// size bytes except /small.gguf (4 KiB, honest):
//
//	/honest.gguf   says its true Content-Length
//	/chunked.gguf  says no length at all and streams in chunks
//	/lying.gguf    says Content-Length: 1024, then streams the whole body
//	               chunked (a client that trusted the header would be wrong)
type hostileFiles struct {
	srv  *httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newHostileFiles(t *testing.T, size int) *hostileFiles {
	t.Helper()
	h := &hostileFiles{hits: map[string]int{}}
	body := []byte(strings.Repeat("x", size))
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.hits[r.URL.Path]++
		h.mu.Unlock()
		switch r.URL.Path {
		case "/small.gguf":
			_, _ = w.Write(body[:4096])
		case "/honest.gguf":
			w.Header().Set("Content-Length", strconv.Itoa(size))
			_, _ = w.Write(body)
		case "/chunked.gguf":
			for off := 0; off < size; off += 64 << 10 {
				if _, err := w.Write(body[off:min(off+64<<10, size)]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		case "/lying.gguf":
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			writeLyingResponse(rw.Writer, body)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// writeLyingResponse claims 1 KiB and sends body chunked.
func writeLyingResponse(w *bufio.Writer, body []byte) {
	fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
	for off := 0; off < len(body); off += 64 << 10 {
		chunk := body[off:min(off+64<<10, len(body))]
		fmt.Fprintf(w, "%x\r\n", len(chunk))
		_, _ = w.Write(chunk)
		fmt.Fprint(w, "\r\n")
		if w.Flush() != nil {
			return
		}
	}
	fmt.Fprint(w, "0\r\n\r\n")
	_ = w.Flush()
}

func (h *hostileFiles) requests(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hits[path]
}

// modelFiles lists what a hive keeps under its models directory, partial
// downloads included.
func modelFiles(t testing.TB, dataDir string) []string {
	t.Helper()
	var out []string
	root := filepath.Join(dataDir, "models")
	_ = filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// downloadEnd runs a model_download on hive h1 and returns its end event.
func downloadEnd(t *testing.T, base, source string) api.Event {
	t.Helper()
	job := submit(t, base, api.JobRequest{Operation: api.OpModelDownload, Hive: "h1", Payload: &api.ModelDownload{Source: source}})
	ctx, cancel := contextTimeout(30 * time.Second)
	defer cancel()
	frames, done, _ := sse(t, ctx, base, job, 0, 0)
	return checkComplete(t, frames, done)
}

// A hive refuses a model larger than --max-model-bytes however the source
// dresses it up: an honest Content-Length is refused before the body is
// read, and a body that says nothing (or lies) is cut off at the cap. No
// file or partial file is left behind either way.
func TestDownloadSizeCap(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a hive process")
	}
	files := newHostileFiles(t, 8<<20)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	dataDir := t.TempDir()
	hiveProcess(t, base, ns.ClientURL(), "h1", "--data-dir", dataDir, "--max-model-bytes", "1MiB")

	for _, path := range []string{"/honest.gguf", "/chunked.gguf", "/lying.gguf"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			end := downloadEnd(t, base, files.srv.URL+path)
			if end.State != api.StateFailed || !strings.Contains(end.Error, "--max-model-bytes") {
				t.Fatalf("end: %+v", end)
			}
			if left := modelFiles(t, dataDir); len(left) != 0 {
				t.Fatalf("files left: %v", left)
			}
			if n := files.requests(path); n != 1 {
				t.Fatalf("%d requests for %s: a refusal is not worth a retry", n, path)
			}
		})
	}
	if end := downloadEnd(t, base, files.srv.URL+"/small.gguf"); end.State != api.StateDone {
		t.Fatalf("a model under the cap: %+v", end)
	}
}

// A hive keeps --min-free-disk free: with more asked than any disk has, a
// download is refused before anything is fetched, and the message names the
// flag. The environment twin sets it as well as the flag does.
func TestDownloadMinFreeDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a hive process")
	}
	files := newHostileFiles(t, 64<<10)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	dataDir := t.TempDir()
	hiveProcessEnv(t, base, ns.ClientURL(), "h1", []string{"HIVE_MIN_FREE_DISK=1000000TiB"}, "--data-dir", dataDir)

	for _, path := range []string{"/honest.gguf", "/chunked.gguf"} {
		end := downloadEnd(t, base, files.srv.URL+path)
		if end.State != api.StateFailed || !strings.Contains(end.Error, "--min-free-disk") {
			t.Fatalf("%s: end %+v", path, end)
		}
		if n := files.requests(path); n != 0 {
			t.Fatalf("%s fetched %d times despite a full disk", path, n)
		}
	}
	if left := modelFiles(t, dataDir); len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
}

// A hive refuses size flags that make no sense, naming them.
func TestDownloadFlagsValidated(t *testing.T) {
	cases := []struct{ args []string }{
		{[]string{"--max-model-bytes", "0"}},
		{[]string{"--min-free-disk", "lots"}},
		{[]string{"--max-model-bytes", "12XB"}},
	}
	for _, tc := range cases {
		ctx, cancel := contextTimeout(10 * time.Second)
		out, err := exec.CommandContext(ctx, hiveBin, append([]string{"--id", "h1", "--nats-url", "nats://127.0.0.1:1", "--data-dir", t.TempDir()}, tc.args...)...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), strings.TrimPrefix(tc.args[0], "--")) || strings.Contains(string(out), "not defined") {
			t.Errorf("%v: %v %s", tc.args, err, out)
		}
	}
}

// The OpenAI download extension fetches files onto hives, so it needs the
// operate scope as well as infer: a key with infer alone gets 403 in
// OpenAI's error shape, and nothing is fetched and no job made.
func TestOpenAIDownloadNeedsOperate(t *testing.T) {
	files := newHostileFiles(t, 64<<10)
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	mustHive(t, base, ns.ClientURL(), "h1")
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	mk := func(name string, scopes ...string) map[string]string {
		var k api.Key
		if code := doHeaders(t, "POST", base+"/v1/keys", api.KeyRequest{Name: name, Scopes: scopes}, admin, &k); code != 201 {
			t.Fatalf("create key: %d", code)
		}
		return map[string]string{"Authorization": "Bearer " + k.Key}
	}
	inferOnly, operator := mk("app", "infer"), mk("ops", "infer", "operate")
	chat := func(download string) map[string]any {
		return map[string]any{"model": "fresh", "max_tokens": 3, "download": download,
			"messages": []map[string]string{{"role": "user", "content": "hi"}}}
	}

	for _, path := range []string{"/chat/completions", "/completions"} {
		body := chat(files.srv.URL + "/small.gguf")
		if path == "/completions" {
			delete(body, "messages")
			body["prompt"] = "hi"
		}
		var out struct {
			Error struct{ Message, Type, Code string }
		}
		if code := doHeaders(t, "POST", base+"/v1"+path, body, inferOnly, &out); code != 403 ||
			!strings.Contains(out.Error.Message, "operate") || out.Error.Type == "" || out.Error.Code == "" {
			t.Fatalf("%s with infer only: %d %+v", path, code, out)
		}
	}
	if n := files.requests("/small.gguf"); n != 0 {
		t.Fatalf("fetched %d times for a key without operate", n)
	}
	var list api.JobList
	doHeaders(t, "GET", base+"/v1/jobs?operation=model_download", nil, admin, &list)
	if len(list.Jobs) != 0 {
		t.Fatalf("download jobs: %+v", list.Jobs)
	}

	// With operate the request goes through to the download; a source that
	// is not there fails it, the client's to fix: 400, not the cluster's 503.
	var out struct {
		Error struct{ Message, Type string }
	}
	if code := doHeaders(t, "POST", base+"/v1/chat/completions", chat(files.srv.URL+"/missing.gguf"), operator, &out); code != 400 ||
		out.Error.Type != "invalid_request_error" || !strings.Contains(out.Error.Message, "404") {
		t.Fatalf("operator, missing source: %d %+v", code, out)
	}
	if n := files.requests("/missing.gguf"); n == 0 {
		t.Fatal("the operator's download was never tried")
	}
}

// hiveProcessEnv is hiveProcess with extra environment variables.
func hiveProcessEnv(t testing.TB, base, natsURL, id string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(hiveBin, append([]string{"--id", id, "--nats-url", natsURL, "--data-dir", t.TempDir()}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	logTo(t, cmd, "hive "+id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitHive(t, base, id)
	return cmd
}
