package app_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
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
// closing chunk; then the connection stays open for the next request,
// unless the client asked for the close. An HTTP/1.0 client gets the same
// body, ended by the close. A resume after an event starts after it.
func TestTakenOverStreamWire(t *testing.T) {
	base, _, job := endedJob(t)
	frames, _, _ := sse(t, t.Context(), base, job, 0, 0)

	for _, tc := range []struct {
		proto, hdr string
		keep       bool
	}{
		{"HTTP/1.1", "", true},
		{"HTTP/1.1", "Connection: close\r\n", false},
		{"HTTP/1.0", "", false},
	} {
		name := strings.TrimSpace(tc.proto + " " + strings.TrimSpace(tc.hdr))
		conn := openStream(t, base, job, tc.proto, tc.hdr)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s: body cut short: %v", name, err)
		}
		chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
			resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("X-Accel-Buffering") != "no" ||
			resp.Header.Get("Date") == "" || resp.Close == tc.keep || chunked != (tc.proto == "HTTP/1.1") {
			t.Fatalf("%s: answer %d, chunked %v, close %v, headers %v", name, resp.StatusCode, chunked, resp.Close, resp.Header)
		}
		if !bytes.HasPrefix(body, []byte("retry: 1000\n\n: rbee narration for job "+job+"\n\nid: ")) ||
			!bytes.HasSuffix(body, []byte("\ndata: [DONE]\n\n")) || bytes.Count(body, []byte("\nevent: ")) != len(frames) {
			t.Fatalf("%s: body\n%s", name, body)
		}
		if tc.keep {
			// The server reads the next request from the same connection.
			nextRequest(t, conn, br, job)
		} else if n, err := br.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("%s: after the answer the connection read %d bytes, %v; want the close", name, n, err)
		}
		conn.Close()
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

// nextRequest asks for job's record on conn, whose answers br reads, and
// checks the answer.
func nextRequest(t testing.TB, conn net.Conn, br *bufio.Reader, job string) {
	t.Helper()
	if _, err := io.WriteString(conn, "GET /v1/jobs/"+job+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	checkJobAnswer(t, br, job)
}

// checkJobAnswer reads, from br, the answer to a request for job's record.
func checkJobAnswer(t testing.TB, br *bufio.Reader, job string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the next request on the connection: %v", err)
	}
	var rec api.Job
	err = json.NewDecoder(resp.Body).Decode(&rec)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || rec.JobID != job {
		t.Fatalf("the next request on the connection: %d, %v, job %q", resp.StatusCode, err, rec.JobID)
	}
}

// readStream reads, from br, a stream's whole answer, which leaves the
// connection open.
func readStream(t testing.TB, br *bufio.Reader) []byte {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.Close || !bytes.HasSuffix(body, []byte("\ndata: [DONE]\n\n")) {
		t.Fatalf("stream: close %v, %v, body\n%s", resp.Close, err, body)
	}
	return body
}

// A client that keeps its connections alive sends its next request on the
// connection a stream was served on, as after any other answer: jobs
// submitted and followed to their end, one after the other, take one
// connection.
func TestTakenOverStreamKeepAlive(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	var dials atomic.Int32
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	for range 3 {
		data, _ := json.Marshal(api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(5)}})
		resp, err := hc.Post(base+"/v1/jobs", "application/json", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		var out api.CreateJobResponse
		err = json.NewDecoder(resp.Body).Decode(&out)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 201 {
			t.Fatalf("submit: %d, %v", resp.StatusCode, err)
		}
		frames, done, _, err := readSSEWith(t.Context(), hc, base, out.JobID, 0, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		checkComplete(t, frames, done)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections dialed for three jobs and their streams, want 1", n)
	}
}

// endedJob starts a queen (configured by edit) and a hive that runs
// commands, and runs a job there, read to its end once; it returns the
// queen, its address and the job.
func endedJob(t *testing.T, edit ...func(*app.Config)) (base string, q *app.Queen, job string) {
	t.Helper()
	ns := mustNATS(t)
	base, q = mustQueen(t, ns.ClientURL(), edit...)
	mustHive(t, base, ns.ClientURL(), "h1", allowRun)
	job = submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(5)}})
	frames, done, _ := sse(t, t.Context(), base, job, 0, 0)
	checkComplete(t, frames, done)
	return base, q, job
}

// quietStreams spaces a queen's stream heartbeats far apart.
func quietStreams(c *app.Config) { c.SSEHeartbeat = 30 * time.Second }

// Requests pipelined behind a stream are answered after it on the same
// connection, whether sent with it (read by the server before the stream
// began), while it is live (read in part by the watch for the client
// leaving), or right after its closing chunk.
func TestTakenOverStreamPipelined(t *testing.T) {
	base, _, ended := endedJob(t, quietStreams)

	t.Run("with the stream", func(t *testing.T) {
		conn := openStream(t, base, ended, "HTTP/1.1", "\r\nGET /v1/jobs/"+ended+" HTTP/1.1\r\nHost: 127.0.0.1\r\n")
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		readStream(t, br)
		checkJobAnswer(t, br, ended)
		nextRequest(t, conn, br, ended)
	})
	t.Run("while live", func(t *testing.T) {
		job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "1"}}})
		conn := openStream(t, base, job, "HTTP/1.1")
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Read up to the first event, then send the next request while the
		// job runs.
		var body []byte
		sr := bufio.NewReader(resp.Body)
		for !bytes.Contains(body, []byte("\nevent: ")) {
			line, err := sr.ReadBytes('\n')
			if err != nil {
				t.Fatal(err)
			}
			body = append(body, line...)
		}
		if _, err := io.WriteString(conn, "GET /v1/jobs/"+job+" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(sr)
		body = append(body, rest...)
		if err != nil || !bytes.Contains(body, []byte("\nevent: end\n")) || !bytes.HasSuffix(body, []byte("\ndata: [DONE]\n\n")) {
			t.Fatalf("stream: %v, body\n%s", err, body)
		}
		checkJobAnswer(t, br, job)
	})
	t.Run("after the closing chunk", func(t *testing.T) {
		conn := openStream(t, base, ended, "HTTP/1.1")
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		for range 3 {
			readStream(t, br)
			if _, err := io.WriteString(conn, "GET /v1/jobs/"+ended+"/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		readStream(t, br)
		nextRequest(t, conn, br, ended)
	})
}

// A client that leaves mid-stream, by closing its connection or only its
// side of it, has it closed, not given back: nothing of the stream is
// left behind.
func TestTakenOverStreamLeaverClosed(t *testing.T) {
	// One stream given back first, so that what the queen starts once for
	// them is there before the count.
	base, _, ended := endedJob(t, quietStreams)
	conn := openStream(t, base, ended, "HTTP/1.1")
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	readStream(t, br)
	nextRequest(t, conn, br, ended)
	conn.Close()
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sleep", "60"}}})
	waitFor(t, 10*time.Second, func() bool { return sseClients(t, base) == 0 })
	before := httpGoroutines()

	leaver := openStream(t, base, job, "HTTP/1.1")
	halfLeaver := openStream(t, base, job, "HTTP/1.1")
	waitFor(t, 10*time.Second, func() bool { return sseClients(t, base) == 2 })
	leaver.Close()
	_ = halfLeaver.(*net.TCPConn).CloseWrite()
	_ = halfLeaver.SetReadDeadline(time.Now().Add(10 * time.Second))
	br = bufio.NewReader(halfLeaver)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the stream of a client that left ended without its closing chunk: %v", err)
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after the stream of a client that left, the connection read %d bytes, %v; want the close", n, err)
	}
	halfLeaver.Close()
	waitFor(t, 10*time.Second, func() bool { return sseClients(t, base) == 0 && httpGoroutines() <= before })
}

// httpGoroutines counts the goroutines of the queen's HTTP serving, its
// streams' among them, once the default client's idle connections are
// closed.
func httpGoroutines() int {
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(50 * time.Millisecond)
	buf := make([]byte, 1<<22)
	n := 0
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "rbee.dev/queen/internal/httpapi.") || strings.Contains(g, "net/http.(*conn).serve") {
			n++
		}
	}
	return n
}

// A queen that shuts down closes at once a connection given back after
// its stream and waiting for the next request, where the HTTP server
// would wait up to 5 seconds for a new connection's first request; the
// listener that gave it back is done with too.
func TestTakenOverStreamShutdownKept(t *testing.T) {
	base, q, job := endedJob(t)
	conn := openStream(t, base, job, "HTTP/1.1")
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	readStream(t, br)
	// The connection is given back once the closing chunk is sent.
	time.Sleep(200 * time.Millisecond)
	http.DefaultClient.CloseIdleConnections()
	start := time.Now()
	if err := q.Close(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %s with a connection given back and idle", d)
	}
	if n, err := br.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the connection given back read %d bytes, %v, after the shutdown; want the close", n, err)
	}
	waitFor(t, 5*time.Second, func() bool {
		buf := make([]byte, 1<<20)
		return !bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("takenOver).add"))
	})
}

// A connection given back after a stream waits for the client's next
// request as long as the server waits on its own idle connections
// (IdleTimeout), not the few seconds it gives a new connection's first
// request (ReadHeaderTimeout), and no longer.
func TestTakenOverStreamIdleKeepAlive(t *testing.T) {
	// ReadHeaderTimeout 1 s, IdleTimeout 2 s.
	base, _, job := endedJob(t, quietStreams, func(c *app.Config) { c.HTTPTimeout = time.Second })
	for _, tc := range []struct {
		idle   time.Duration
		served bool
	}{{1500 * time.Millisecond, true}, {3 * time.Second, false}} {
		conn := openStream(t, base, job, "HTTP/1.1")
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		readStream(t, br)
		time.Sleep(tc.idle)
		if tc.served {
			nextRequest(t, conn, br, job)
			continue
		}
		if n, err := br.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("idle %s, past the idle timeout: read %d bytes, %v; want the close", tc.idle, n, err)
		}
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
