package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
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
//
// An HTTP/1.1 stream that ends cleanly (its end event and [DONE] sent, the
// client still there, the queen not shutting down) gives its connection
// back to the HTTP server, through a listener of such connections that the
// server serves as it does its own: a client that keeps its connections
// alive sends its next request on it, as after any other answer. Whatever
// was read from the connection and not yet served (the client's next
// request, pipelined) is read from it first. An HTTP/1.0 stream, one whose
// client asked for the close, and any other end close the connection.

// takenOver are the streams served on taken-over connections: the HTTP
// server does not know them, so its shutdown ends them through here.
type takenOver struct {
	mu      sync.Mutex
	closed  bool
	streams map[*takenStream]struct{}
	// kept are connections given back to the HTTP server that have not
	// brought it a request yet. The server's shutdown waits up to 5
	// seconds for a new connection's first request; it closes these here
	// at once, as it closes its idle ones.
	kept map[*keptConn]struct{}
	// back is each *http.Server's *handback listener; the server's
	// shutdown ends the streams.
	back sync.Map
}

type takenStream struct {
	cancel context.CancelFunc
	// start is when the request began (UnixNano), set by the metrics
	// middleware once the handler has handed the stream off; until then
	// the stream is timed from the handoff.
	start         atomic.Int64
	route, method string
	// back takes the connection once the stream has ended cleanly; nil
	// where it closes after the stream.
	back *handback
	// idle is how long the connection then waits for the next request,
	// as the server's own idle ones do (0: no bound).
	idle time.Duration
	// read is what was read from the connection and not served: what the
	// server had read past the request, then what the watcher read.
	read []byte
	// watcher is the goroutine that notices the client leave, and
	// watchErr how its read ended.
	watcher  sync.WaitGroup
	peek     [1]byte
	watchErr error
}

// takenKey marks, in the echo context, a request whose stream was taken
// over: the metrics middleware leaves its duration to serveTaken.
const takenKey = "rbee.takenStream"

func newTakenOver() *takenOver {
	return &takenOver{streams: map[*takenStream]struct{}{}, kept: map[*keptConn]struct{}{}}
}

// add registers a stream and returns the listener through which its
// connection goes back to srv, which serves it from the first stream on;
// false once the server is shutting down.
func (t *takenOver) add(s *takenStream, srv *http.Server, addr net.Addr) (*handback, bool) {
	var back *handback
	if srv != nil {
		l, loaded := t.back.Load(srv)
		if !loaded {
			l, loaded = t.back.LoadOrStore(srv, newHandback(addr))
		}
		back = l.(*handback)
		if !loaded {
			srv.RegisterOnShutdown(t.shutdown)
			// Serve returns, closing the listener, when the server shuts
			// down or closes.
			go func() { _ = srv.Serve(back) }()
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, false
	}
	t.streams[s] = struct{}{}
	return back, true
}

func (t *takenOver) remove(s *takenStream) {
	t.mu.Lock()
	delete(t.streams, s)
	t.mu.Unlock()
}

// keep registers a connection about to go back to the server; false once
// the server is shutting down.
func (t *takenOver) keep(c *keptConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.kept[c] = struct{}{}
	c.waiting.Store(true)
	return true
}

// served forgets a kept connection: it has brought the server a request,
// or closed.
func (t *takenOver) served(c *keptConn) {
	t.mu.Lock()
	delete(t.kept, c)
	c.waiting.Store(false)
	t.mu.Unlock()
}

// shutdown ends every stream, each closing its connection after the
// closing chunk as the server ends its own answers, and closes the
// connections given back that are waiting for a request.
func (t *takenOver) shutdown() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for s := range t.streams {
		s.cancel()
	}
	for c := range t.kept {
		_ = c.Conn.Close()
		delete(t.kept, c)
		c.waiting.Store(false)
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
	addr, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	ctx, cancel := context.WithCancel(context.Background())
	s := &takenStream{cancel: cancel, route: c.Path(), method: methodLabel(r.Method)}
	s.start.Store(time.Now().UnixNano())
	back, ok := h.taken.add(s, srv, addr)
	if !ok {
		cancel()
		return false
	}
	conn, brw, err := http.NewResponseController(c.Response()).Hijack()
	if err != nil {
		h.taken.remove(s)
		cancel()
		return false
	}
	// The connection goes back to the server only where the client keeps
	// it alive and nothing of this request is left to read: a body (a GET
	// has none, as a rule) would read as the next request.
	if r.ProtoMinor >= 1 && !r.Close && r.ContentLength == 0 {
		s.back, s.idle = back, idleTimeout(srv)
		if n := brw.Reader.Buffered(); n > 0 {
			b, _ := brw.Reader.Peek(n)
			s.read = bytes.Clone(b)
		}
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
	w, err := relay.NewConnWriter(conn, hdr, minor, s.back != nil)
	if err != nil {
		_ = conn.Close()
		return
	}
	handedBack := false
	defer func() {
		if !handedBack {
			_ = w.Close()
		}
	}()
	// The client leaves by closing its side; it sends nothing more on a
	// stream. Should it send something (its next request, early), the
	// watch ends, and a failed write (at the next heartbeat at the
	// latest) finds it gone or the stream's end hands it back.
	s.watcher.Add(1)
	go s.watch(conn)
	_, _ = io.WriteString(w, retryLine)
	if err := w.Comment("rbee narration for job " + id); err != nil {
		return
	}
	if err := w.Flush(); err != nil {
		return
	}
	if err := h.Hub.Stream(ctx, w, id, after, h.Heartbeat); err != nil {
		if ctx.Err() == nil {
			h.Log.Warn("stream ended early", "job_id", id, "err", err)
		}
		return
	}
	if w.KeepAlive() {
		handedBack = h.handBack(s, conn, w)
	}
}

// handBack ends a stream that ended cleanly with the closing chunk and
// gives its connection back to the HTTP server; false, having closed
// nothing, where the connection must close instead (w.Close): the write
// failed, the client left, or the server is shutting down.
func (h *handlers) handBack(s *takenStream, conn net.Conn, w *relay.ConnWriter) bool {
	if err := w.End(); err != nil {
		return false
	}
	// Stop the watcher, which may have read the first byte of the next
	// request; a read that ended otherwise than at this deadline is a
	// client that left.
	if err := conn.SetReadDeadline(time.Now()); err != nil {
		return false
	}
	s.watcher.Wait()
	if s.watchErr != nil && !errors.Is(s.watchErr, os.ErrDeadlineExceeded) {
		return false
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return false
	}
	// What the server read and what the watcher read come first; a
	// connection given back before is given back again, not wrapped anew.
	read := s.read
	if s.watchErr == nil {
		read = append(read, s.peek[0])
	}
	kc, ok := conn.(*keptConn)
	if !ok {
		kc = &keptConn{Conn: conn, taken: h.taken}
	}
	kc.read = append(read, kc.read...)
	if !h.taken.keep(kc) {
		return false
	}
	if len(kc.read) == 0 {
		// Nothing of the next request has come yet. The server would
		// give a new connection ReadHeaderTimeout for its first request;
		// this one is an idle connection of a client that keeps it
		// alive, and gets the server's idle timeout, as after any other
		// answer.
		go func() {
			if !awaitRequest(kc, s.idle) || !s.back.give(kc) {
				_ = kc.Close()
			}
		}()
		return true
	}
	if !s.back.give(kc) {
		h.taken.served(kc)
		return false
	}
	return true
}

// idleTimeout is how long srv keeps an idle connection open for its next
// request (net/http: IdleTimeout, or ReadTimeout where that is 0).
func idleTimeout(srv *http.Server) time.Duration {
	if srv == nil {
		return 0
	}
	return cmp.Or(srv.IdleTimeout, srv.ReadTimeout)
}

// awaitRequest waits up to idle (0: for ever) for the first byte of the
// next request on kc, and keeps it to be read first; false when none came
// or the connection closed (a shutdown closes kept connections).
func awaitRequest(kc *keptConn, idle time.Duration) bool {
	var deadline time.Time
	if idle > 0 {
		deadline = time.Now().Add(idle)
	}
	if kc.Conn.SetReadDeadline(deadline) != nil {
		return false
	}
	var b [1]byte
	if n, err := kc.Conn.Read(b[:]); n == 0 || err != nil {
		return false
	}
	if kc.Conn.SetReadDeadline(time.Time{}) != nil {
		return false
	}
	kc.read = append(kc.read, b[0])
	return true
}

// watch cancels the stream when the client closes the connection, or
// once it is closed here; it ends too at the deadline handBack sets, or
// with a byte the client sent, which it keeps.
func (s *takenStream) watch(conn net.Conn) {
	defer s.watcher.Done()
	var n int
	n, s.watchErr = conn.Read(s.peek[:])
	if n == 0 && s.watchErr == nil {
		s.watchErr = io.ErrNoProgress
	}
	if s.watchErr != nil {
		s.cancel()
	}
}

// handback is the listener through which taken-over connections go back
// to their HTTP server, which serves it as it serves its own.
type handback struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func newHandback(addr net.Addr) *handback {
	return &handback{conns: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

// give hands c to the server; false, c untouched, once the listener is
// closed.
func (l *handback) give(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handback) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handback) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handback) Addr() net.Addr { return l.addr }

// keptConn is a connection given back to the HTTP server: it reads first
// what was read from it before.
type keptConn struct {
	net.Conn
	taken *takenOver
	read  []byte
	// waiting: no request has come yet (takenOver.kept).
	waiting atomic.Bool
}

func (c *keptConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if len(c.read) > 0 {
		n = copy(p, c.read)
		c.read = c.read[n:]
		if len(c.read) == 0 {
			c.read = nil
		}
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 && c.waiting.Load() {
		c.taken.served(c)
	}
	return n, err
}

func (c *keptConn) Close() error {
	if c.waiting.Load() {
		c.taken.served(c)
	}
	return c.Conn.Close()
}

// CloseWrite lets the server end its side first, as on its own
// connections, so the client reads the whole answer before the close.
func (c *keptConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// retryLine is the stream's first line: a dropped connection should come
// back soon, resuming where it was.
var retryLine = "retry: " + strconv.Itoa(int(resumeAfter/time.Millisecond)) + "\n\n"
