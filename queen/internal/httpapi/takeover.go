package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/relay"
)

// A narration stream on a plain HTTP/1.x connection is served outside the
// HTTP server, on the connection taken from it once the answer's headers
// are decided (relay.ConnWriter): one goroutine writes the stream and one
// small one waits for the client to leave, where the server would hold its
// connection goroutine and background reader, and read, write and
// response buffers, for as long as the stream lasts. An idle client's
// memory is what limits how many clients one queen serves. HTTP/2 (TLS)
// cannot be taken over and is served as before.

// takenOver are the streams served on taken-over connections: the HTTP
// server does not know them, so its shutdown ends them through here.
type takenOver struct {
	mu      sync.Mutex
	closed  bool
	streams map[*takenStream]struct{}
	hooked  sync.Map // *http.Server: its shutdown ends the streams
}

type takenStream struct {
	cancel context.CancelFunc
	// start is when the request began (UnixNano), set by the metrics
	// middleware once the handler has handed the stream off; until then
	// the stream is timed from the handoff.
	start         atomic.Int64
	route, method string
}

// takenKey marks, in the echo context, a request whose stream was taken
// over: the metrics middleware leaves its duration to serveTaken.
const takenKey = "rbee.takenStream"

func newTakenOver() *takenOver {
	return &takenOver{streams: map[*takenStream]struct{}{}}
}

// add registers a stream; false once the server is shutting down.
func (t *takenOver) add(s *takenStream, srv *http.Server) bool {
	if srv != nil {
		if _, loaded := t.hooked.LoadOrStore(srv, struct{}{}); !loaded {
			srv.RegisterOnShutdown(t.shutdown)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.streams[s] = struct{}{}
	return true
}

func (t *takenOver) remove(s *takenStream) {
	t.mu.Lock()
	delete(t.streams, s)
	t.mu.Unlock()
}

// shutdown ends every stream; each closes its connection after the
// closing chunk, as the server ends its own answers.
func (t *takenOver) shutdown() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for s := range t.streams {
		s.cancel()
	}
}

// count is how many streams are open on taken-over connections.
func (t *takenOver) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.streams)
}

// takeOverStream serves job's stream after after on the request's own
// connection, if it is a plain HTTP/1.x one that the server lets go; it
// reports false, having written nothing, when the stream must be served
// through the server instead. The headers are those set on the response.
func (h *handlers) takeOverStream(c echo.Context, id string, after uint64) bool {
	r := c.Request()
	if r.ProtoMajor != 1 || r.TLS != nil {
		return false
	}
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	ctx, cancel := context.WithCancel(context.Background())
	s := &takenStream{cancel: cancel, route: c.Path(), method: methodLabel(r.Method)}
	s.start.Store(time.Now().UnixNano())
	if !h.taken.add(s, srv) {
		cancel()
		return false
	}
	conn, _, err := http.NewResponseController(c.Response()).Hijack()
	if err != nil {
		h.taken.remove(s)
		cancel()
		return false
	}
	// The answer's status, for the metrics middleware; nothing more goes
	// through the server.
	c.Response().Status, c.Response().Committed = http.StatusOK, true
	c.Set(takenKey, s)
	minor := r.ProtoMinor
	hdr := c.Response().Header().Clone()
	go h.serveTaken(ctx, s, conn, hdr, minor, id, after)
	return true
}

func (h *handlers) serveTaken(ctx context.Context, s *takenStream, conn net.Conn, hdr http.Header, minor int, id string, after uint64) {
	defer h.taken.remove(s)
	defer s.cancel()
	if h.Metrics != nil {
		defer func() {
			h.Metrics.HTTPDuration.WithLabelValues(s.route, s.method).Observe(time.Since(time.Unix(0, s.start.Load())).Seconds())
		}()
	}
	defer func() {
		if p := recover(); p != nil {
			h.Log.Error("stream panicked", "job_id", id, "panic", p)
			_ = conn.Close()
		}
	}()
	w, err := relay.NewConnWriter(conn, hdr, minor)
	if err != nil {
		_ = conn.Close()
		return
	}
	defer w.Close()
	// The client leaves by closing its side; it sends nothing more on a
	// stream. Should it send something, the watch ends and a failed write
	// (at the next heartbeat at the latest) finds it gone.
	go watchClient(conn, s.cancel)
	_, _ = io.WriteString(w, retryLine)
	if err := w.Comment("rbee narration for job " + id); err != nil {
		return
	}
	if err := w.Flush(); err != nil {
		return
	}
	if err := h.Hub.Stream(ctx, w, id, after, h.Heartbeat); err != nil && ctx.Err() == nil {
		h.Log.Warn("stream ended early", "job_id", id, "err", err)
	}
}

// watchClient cancels when the client closes the connection, or once it
// is closed here.
func watchClient(conn net.Conn, cancel context.CancelFunc) {
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		cancel()
	}
}

// retryLine is the stream's first line: a dropped connection should come
// back soon, resuming where it was.
var retryLine = "retry: " + strconv.Itoa(int(resumeAfter/time.Millisecond)) + "\n\n"
