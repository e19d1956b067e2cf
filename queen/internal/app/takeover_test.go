package app_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
)

// Streams on plain HTTP/1.x connections are served on the connection taken
// over from the HTTP server. These tests hold that path to what the server
// itself would send, and to what it costs an idle client.

// openStream sends a stream request on a new connection and returns it
// unread.
func openStream(t testing.TB, base, job, proto string, hdr ...string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	req := "GET /v1/jobs/" + job + "/stream " + proto + "\r\nHost: 127.0.0.1\r\n" + strings.Join(hdr, "") + "\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// metricWith is the value of the queen's series name with every one of labels
// (0 if none).
func metricWith(t testing.TB, base, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
next:
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), name+"{")
		if !ok {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		return v
	}
	return 0
}

// sseClients is the queen's rbee_sse_clients gauge.
func sseClients(t testing.TB, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rbee_sse_clients "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("no rbee_sse_clients in /metrics")
	return 0
}

// A taken-over stream answers as the HTTP server would: 200 with the SSE
// headers, a chunked body from the retry line through [DONE], ended by the
// closing chunk; then the connection closes. An HTTP/1.0 client gets the
// same body, ended by the close. A resume after an event starts after it.
func TestTakenOverStreamWire(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	job := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(5)}})
	frames, done, _ := sse(t, t.Context(), base, job, 0, 0)
	checkComplete(t, frames, done)

	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		conn := openStream(t, base, job, proto)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		body, err := io.ReadAll(resp.Body)
		conn.Close()
		if err != nil {
			t.Fatalf("%s: body cut short: %v", proto, err)
		}
		chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
			resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("X-Accel-Buffering") != "no" ||
			resp.Header.Get("Date") == "" || !resp.Close || chunked != (proto == "HTTP/1.1") {
			t.Fatalf("%s: answer %d, chunked %v, close %v, headers %v", proto, resp.StatusCode, chunked, resp.Close, resp.Header)
		}
		if !bytes.HasPrefix(body, []byte("retry: 1000\n\n: rbee narration for job "+job+"\n\nid: ")) ||
			!bytes.HasSuffix(body, []byte("\ndata: [DONE]\n\n")) || bytes.Count(body, []byte("\nevent: ")) != len(frames) {
			t.Fatalf("%s: body\n%s", proto, body)
		}
	}

	// Resume after the third event.
	conn := openStream(t, base, job, "HTTP/1.1", "Last-Event-ID: "+strconv.FormatUint(frames[2].ID, 10)+"\r\n")
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(body, []byte("\nevent: ")); n != len(frames)-3 || !bytes.Contains(body, []byte("id: "+strconv.FormatUint(frames[3].ID, 10)+"\n")) {
		t.Fatalf("resume after %d: %d events\n%s", frames[2].ID, n, body)
	}
}

// A client that leaves is noticed at once, not at a heartbeat; a queen
// that shuts down ends its taken-over streams with the closing chunk.
func TestTakenOverStreamEnds(t *testing.T) {
	ns := mustNATS(t)
	base, q := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.SSEHeartbeat = 30 * time.Second })
	mustHive(t, base, ns.ClientURL(), "h1", allowRun)
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "60"}}})

	leaver := openStream(t, base, job, "HTTP/1.1")
	stayer := openStream(t, base, job, "HTTP/1.1")
	waitFor(t, 10*time.Second, func() bool { return sseClients(t, base) == 2 })
	// Both streams are served by now: the one that leaves lasts at least
	// this long.
	const lived = 50 * time.Millisecond
	time.Sleep(lived)
	leaver.Close()
	waitFor(t, 3*time.Second, func() bool { return sseClients(t, base) == 1 })
	// The metrics count both streams' status, and time the one that ended
	// until it ended.
	const route = `route="/v1/jobs/:id/stream"`
	waitFor(t, 3*time.Second, func() bool { return metricWith(t, base, "rbee_http_request_duration_seconds_count", route) == 1 })
	if n := metricWith(t, base, "rbee_http_requests_total", route, `code="200"`); n != 2 {
		t.Fatalf("%v streams counted with status 200, want 2", n)
	}
	if d := metricWith(t, base, "rbee_http_request_duration_seconds_sum", route); d < lived.Seconds() {
		t.Fatalf("a stream that lasted a while was timed %vs", d)
	}

	_ = stayer.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(stayer), nil)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		ended <- err
	}()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	_ = q.Close()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("the stream ended at shutdown without its closing chunk: %v", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("shutdown left a taken-over stream open")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("the stream ended %s after shutdown began", d)
	}
}

// An idle client on a taken-over connection holds no HTTP server buffers
// or goroutines: what the queen's process holds per idle stream (heap and
// stacks, after a collection) stays well below the 20 KiB of heap and
// 16 KiB of stacks one cost when served through net/http.
func TestTakenOverStreamIdleMemory(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.SSEHeartbeat = 30 * time.Second })
	mustHive(t, base, ns.ClientURL(), "h1", allowRun)
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "60"}}})
	// One stream first, so that what every job and queen holds once is
	// there before the measure.
	first := openStream(t, base, job, "HTTP/1.1")
	defer first.Close()
	waitFor(t, 10*time.Second, func() bool { return sseClients(t, base) == 1 })

	const n = 300
	before := inUse()
	conns := make([]net.Conn, n)
	buf := make([]byte, 4096)
	for i := range conns {
		conns[i] = openStream(t, base, job, "HTTP/1.1")
		defer conns[i].Close()
		// Read up to the first event: the stream is then live and idle.
		var got []byte
		_ = conns[i].SetReadDeadline(time.Now().Add(10 * time.Second))
		for !bytes.Contains(got, []byte("\nevent: ")) {
			k, err := conns[i].Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, buf[:k]...)
		}
	}
	waitFor(t, 10*time.Second, func() bool { return sseClients(t, base) == n+1 })
	per := (inUse() - before) / n
	t.Logf("heap and stacks per idle stream: %.1f KiB (both ends of the connection, this process)", float64(per)/1024)
	if per > 16<<10 {
		t.Fatalf("an idle stream holds %.1f KiB of heap and stacks", float64(per)/1024)
	}
}

// inUse is the heap and goroutine stacks in use after a collection.
func inUse() int64 {
	var m runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc + m.StackInuse)
}
