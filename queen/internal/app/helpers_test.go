package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// Binaries built once for tests that run and kill real processes.
var hiveBin, queenBin, natsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rbee-test-bin")
	if err != nil {
		panic(err)
	}
	hiveBin, queenBin, natsBin = filepath.Join(dir, "hive"), filepath.Join(dir, "queen"), filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", dir+"/", "rbee.dev/hive/cmd/hive", "rbee.dev/hive/cmd/rbee-worker",
		"rbee.dev/queen/cmd/queen", "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hive: %v\n%s", err, out)
		os.Exit(1)
	}
	// Hives find the reference worker on PATH.
	os.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	// Warnings and errors are kept to show if the test fails.
	var buf testkit.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() && buf.String() != "" {
			t.Logf("queen log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// mustNATS starts a JetStream server on a random port for one test.
func mustNATS(t testing.TB) *server.Server {
	t.Helper()
	return testkit.NATS(t)
}

// restartableNATS starts a NATS server with opts and returns it and a
// start that starts it again, after the test shut it down, on the same
// port and store, where its clients reconnect. The last one started is
// shut down when the test ends.
func restartableNATS(t testing.TB, opts *server.Options) (*server.Server, func() *server.Server) {
	t.Helper()
	var last *server.Server
	start := func() *server.Server {
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats not ready")
		}
		last = s
		return s
	}
	ns := start()
	opts.Port = ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { last.Shutdown(); last.WaitForShutdown() })
	return ns, start
}

// mustQueen boots a queen on a random port against natsURL ("" for
// embedded) and returns its base URL.
func mustQueen(t testing.TB, natsURL string, edit ...func(*app.Config)) (string, *app.Queen) {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NATSURL = natsURL
	cfg.HiveTTL = 2 * time.Second
	cfg.SSEHeartbeat = 200 * time.Millisecond
	for _, e := range edit {
		e(&cfg)
	}
	q, err := app.Start(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	base := "http://" + q.HTTPAddr()
	waitFor(t, 10*time.Second, func() bool { return status(t, base+"/readyz") == 200 })
	return base, q
}

// mustHive runs an in-process hive connected to natsURL and waits until the
// queen at base lists it.
func mustHive(t testing.TB, base, natsURL, id string, edit ...func(*agent.Config)) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.ID, cfg.DataDir, cfg.Slots = id, t.TempDir(), 2
	for _, e := range edit {
		e(&cfg)
	}
	a, err := agent.New(cfg, nc, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; nc.Close() })
	waitHive(t, base, id)
}

// hiveProcess runs the hive binary as a child process, for tests that kill it.
func hiveProcess(t testing.TB, base, natsURL, id string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(hiveBin, append([]string{"--id", id, "--nats-url", natsURL, "--data-dir", t.TempDir()}, args...)...)
	logTo(t, cmd, "hive "+id)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitHive(t, base, id)
	return cmd
}

// logTo sends a child's stderr to ours under -v, and otherwise keeps its
// warnings and errors to show if the test fails.
func logTo(t testing.TB, cmd *exec.Cmd, name string) {
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
		return
	}
	var buf testkit.SyncBuffer
	cmd.Stderr = &buf
	t.Cleanup(func() {
		if t.Failed() {
			for _, line := range strings.Split(buf.String(), "\n") {
				if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
					t.Logf("%s: %s", name, line)
				}
			}
		}
	})
}

func waitHive(t testing.TB, base, id string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() bool { return status(t, base+"/v1/hives/"+id) == 200 })
}

// waitFor is testkit.WaitFor for this package's many waits, each named
// by the line that fails.
func waitFor(t testing.TB, d time.Duration, ok func() bool) {
	t.Helper()
	testkit.WaitFor(t, d, "condition", ok)
}

// testAdminKey is the admin key of queens that tests start with auth on;
// status sends it always, and open queens ignore it.
const testAdminKey = "bootstrap-secret"

func status(t testing.TB, url string) int {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// do sends a JSON request and decodes a JSON answer into out (if non-nil).
func do(t testing.TB, method, url string, body any, out any) int {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, url, r)
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

func submit(t testing.TB, base string, req api.JobRequest) string {
	t.Helper()
	var out api.CreateJobResponse
	if code := do(t, "POST", base+"/v1/jobs", req, &out); code != 201 {
		t.Fatalf("submit %+v: status %d", req, code)
	}
	return out.JobID
}

func intp(n int) *int { return &n }

// frame is one SSE event as a client sees it.
type frame struct {
	ID    uint64
	Event string
	Data  string
}

func (f frame) event(t testing.TB) api.Event {
	t.Helper()
	var e api.Event
	if err := json.Unmarshal([]byte(f.Data), &e); err != nil {
		t.Fatalf("decode %q: %v", f.Data, err)
	}
	return e
}

// sse reads a job's stream from base after lastID. It stops after max
// frames (0: no limit) or at the close, and reports whether [DONE] came.
func sse(t testing.TB, ctx context.Context, base, job string, lastID uint64, max int) (frames []frame, done bool, comments int) {
	t.Helper()
	frames, done, comments, err := readSSE(ctx, base, job, lastID, max, 0)
	if err != nil {
		t.Fatal(err)
	}
	return frames, done, comments
}

// sseQuiet is sse for goroutines: errors end the read like a dropped
// connection, which the caller then resumes.
func sseQuiet(ctx context.Context, base, job string, lastID uint64, max int) ([]frame, bool) {
	frames, done, _, _ := readSSE(ctx, base, job, lastID, max, 0)
	return frames, done
}

// sseSlow reads a whole stream but pauses before reading and every 5,000
// frames, like a client on a slow link.
func sseSlow(ctx context.Context, base, job string) ([]frame, bool) {
	frames, done, _, _ := readSSE(ctx, base, job, 0, 0, 300*time.Millisecond)
	return frames, done
}

func readSSE(ctx context.Context, base, job string, lastID uint64, max int, pause time.Duration) (frames []frame, done bool, comments int, err error) {
	return readSSEWith(ctx, http.DefaultClient, base, job, lastID, max, pause)
}

// readSSEWith is readSSE through the HTTP client hc.
func readSSEWith(ctx context.Context, hc *http.Client, base, job string, lastID uint64, max int, pause time.Duration) (frames []frame, done bool, comments int, err error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/jobs/"+job+"/stream", nil)
	if lastID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastID, 10))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, false, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		// Resumed at or past the end: nothing follows.
		return nil, true, 0, nil
	}
	if resp.StatusCode != 200 {
		return nil, false, 0, fmt.Errorf("stream %s: status %d", job, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		return nil, false, 0, fmt.Errorf("content type %q", ct)
	}
	br := bufio.NewReaderSize(resp.Body, 1<<16)
	var cur frame
	time.Sleep(pause)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return frames, done, comments, nil
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if cur.Data == "[DONE]" {
				// Read to the end of the body, so that hc may use the
				// connection again.
				_, _ = io.Copy(io.Discard, br)
				return frames, true, comments, nil
			}
			if cur.Data != "" {
				frames = append(frames, cur)
				if max > 0 && len(frames) >= max {
					return frames, false, comments, nil
				}
				if pause > 0 && len(frames)%5000 == 0 {
					time.Sleep(pause)
				}
			}
			cur = frame{}
		case strings.HasPrefix(line, ":"):
			comments++
		case strings.HasPrefix(line, "id: "):
			cur.ID, _ = strconv.ParseUint(line[4:], 10, 64)
		case strings.HasPrefix(line, "event: "):
			cur.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.Data = line[6:]
		}
	}
}

// checkComplete asserts the frames are one whole job and returns its end.
func checkComplete(t testing.TB, frames []frame, done bool) api.Event {
	t.Helper()
	if !done {
		t.Fatalf("stream closed without [DONE] after %d frames", len(frames))
	}
	if err := complete(frames); err != nil {
		t.Fatal(err)
	}
	return frames[len(frames)-1].event(t)
}

// complete checks frames are one whole job: ids rising, per-job sequence
// 1..n without a gap or repeat, exactly one end, last.
func complete(frames []frame) error {
	if len(frames) == 0 {
		return fmt.Errorf("no frames")
	}
	var lastID uint64
	ends := 0
	for i, f := range frames {
		if f.ID <= lastID {
			return fmt.Errorf("frame %d: id %d after %d", i, f.ID, lastID)
		}
		lastID = f.ID
		var e api.Event
		if err := json.Unmarshal([]byte(f.Data), &e); err != nil {
			return fmt.Errorf("frame %d: %v", i, err)
		}
		if e.Seq != uint64(i+1) {
			return fmt.Errorf("frame %d: seq %d, want %d (gap or repeat)", i, e.Seq, i+1)
		}
		if f.Event == "end" {
			ends++
		}
	}
	if ends != 1 || frames[len(frames)-1].Event != "end" {
		return fmt.Errorf("want exactly one end, last; got %d ends, last %q", ends, frames[len(frames)-1].Event)
	}
	return nil
}

func doHeaders(t testing.TB, method, url string, body any, hdr map[string]string, out any) int {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, url, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// doQuiet is do for loops that tolerate errors: it returns 0 on a
// transport error instead of failing the test.
func doQuiet(url string, body any, out any) int {
	method := "GET"
	var r io.Reader
	if body != nil {
		method = "POST"
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, url, r)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// demoSource serves a small file for tests to download as model "demo"
// and returns its URL.
func demoSource(t testing.TB) string {
	t.Helper()
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("demo model bytes ", 1000)))
	}))
	t.Cleanup(files.Close)
	return files.URL + "/demo.gguf"
}

// downloadDemo has hive download model "demo" through the open queen at
// base, and waits until the queen lists the model.
func downloadDemo(t testing.TB, base, hive string) {
	t.Helper()
	job := submit(t, base, api.JobRequest{Operation: api.OpModelDownload, Hive: hive, Payload: &api.ModelDownload{Source: demoSource(t)}})
	if frames, done, _ := sse(t, context.Background(), base, job, 0, 0); checkComplete(t, frames, done).State != api.StateDone {
		t.Fatalf("download of demo on %s failed", hive)
	}
	// The hive's next heartbeat tells the queens it holds the model.
	waitFor(t, 10*time.Second, func() bool {
		var ml api.ModelEntryList
		do(t, "GET", base+"/v1/models", nil, &ml)
		return slices.ContainsFunc(ml.Data, func(m api.ModelEntry) bool { return m.ID == "demo" })
	})
}
