package relay

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"rbee.dev/shared/api"
)

// ConnWriter writes an SSE answer straight to a plain HTTP/1.x connection
// taken over from the HTTP server once the answer's headers are decided.
// An idle client then costs no more than its stream's own state: the
// server's per-connection read and write buffers, its response buffer and
// its background reader are gone, and the writer holds a buffer only
// between a write and the flush that sends it (one from a pool shared by
// every stream).
//
// The body is chunked for an HTTP/1.1 client, each flush one chunk, and
// ends with the closing chunk, as the HTTP server would have sent it; an
// HTTP/1.0 client reads it to the connection's close. A keep-alive answer
// (HTTP/1.1, the client did not ask for the close) can end without closing
// the connection (End), for the HTTP server to read the client's next
// request from it; any other ends with the close (Close), announced in
// its headers.
type ConnWriter struct {
	conn    net.Conn
	chunked bool
	keep    bool
	// ended: the closing chunk is sent (or failed); nothing more is.
	ended bool
	// buf is what is written and not yet sent, after chunkHead bytes kept
	// for the chunk's size line; nil between flushes.
	buf *[]byte
}

// NewConnWriter writes the status line and hdr (plus Date, and the
// framing headers, which it sets in hdr) to conn, and returns the writer
// of the body. minor is the request's minor HTTP/1 version; keepAlive
// asks for an answer that leaves the connection open (HTTP/1.1 only): its
// Connection header is then hdr's own, and otherwise close.
func NewConnWriter(conn net.Conn, hdr http.Header, minor int, keepAlive bool) (*ConnWriter, error) {
	w := &ConnWriter{conn: conn, chunked: minor >= 1, keep: minor >= 1 && keepAlive}
	b := w.take()
	b = b[:0]
	if w.chunked {
		b = append(b, "HTTP/1.1 200 OK\r\n"...)
	} else {
		b = append(b, "HTTP/1.0 200 OK\r\n"...)
	}
	h := hdr
	if !w.keep {
		h.Set("Connection", "close")
	}
	h.Del("Content-Length")
	if w.chunked {
		h.Set("Transfer-Encoding", "chunked")
	} else {
		h.Del("Transfer-Encoding")
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	*w.buf = b
	if err := h.Write(w); err != nil {
		w.release()
		return nil, err
	}
	b = append(*w.buf, "\r\n"...)
	err := w.send(b)
	w.release()
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Write appends p to what the next flush sends (it is used for the
// headers, and as an io.Writer for anything else).
func (w *ConnWriter) Write(p []byte) (int, error) {
	*w.buf = append(w.take(), p...)
	return len(p), nil
}

// chunkHead is the room kept before a chunk's data for its size line: up
// to 8 hex digits and CRLF.
const chunkHead = 10

// connFlushAt is how much a writer gathers before it sends it without
// waiting for a flush: a long replay is sent in pieces of about this size.
const connFlushAt = 16 << 10

// connBufMax is the largest buffer given back to the pool; a larger one
// (a frame bigger than it) is left to the collector.
const connBufMax = 64 << 10

var connBufs = sync.Pool{New: func() any {
	b := make([]byte, chunkHead, 4<<10)
	return &b
}}

func (w *ConnWriter) take() []byte {
	if w.buf == nil {
		w.buf = connBufs.Get().(*[]byte)
		*w.buf = (*w.buf)[:chunkHead]
	}
	return *w.buf
}

func (w *ConnWriter) release() {
	if w.buf == nil {
		return
	}
	if cap(*w.buf) <= connBufMax {
		connBufs.Put(w.buf)
	}
	w.buf = nil
}

// add keeps b as what is pending, sending it at once when it has grown
// past connFlushAt.
func (w *ConnWriter) add(b []byte) error {
	*w.buf = b
	if len(b) >= connFlushAt {
		return w.sendPending()
	}
	return nil
}

// sendPending sends what is pending as one chunk and empties the buffer.
func (w *ConnWriter) sendPending() error {
	if w.buf == nil || len(*w.buf) == chunkHead {
		return nil
	}
	b := *w.buf
	start := 0
	if w.chunked {
		var size [8]byte
		n := strconv.AppendUint(size[:0], uint64(len(b)-chunkHead), 16)
		start = chunkHead - 2 - len(n)
		copy(b[start:], n)
		b[chunkHead-2], b[chunkHead-1] = '\r', '\n'
		b = append(b, "\r\n"...)
	} else {
		start = chunkHead
	}
	err := w.send(b[start:])
	*w.buf = b[:chunkHead]
	return err
}

// send writes b within WriteWindow: a client that stops reading is cut
// off within a window, while a quiet stream that is pinged stays open.
func (w *ConnWriter) send(b []byte) error {
	_ = w.conn.SetWriteDeadline(time.Now().Add(WriteWindow))
	_, err := w.conn.Write(b)
	return err
}

// Frame writes one event.
func (w *ConnWriter) Frame(f Frame) error {
	return w.add(appendFrame(w.take(), f))
}

// Comment writes an SSE comment, used as a heartbeat.
func (w *ConnWriter) Comment(text string) error {
	b := append(w.take(), ": "...)
	b = append(b, text...)
	b = append(b, "\n\n"...)
	return w.add(b)
}

// Done writes the closing data line.
func (w *ConnWriter) Done() error {
	return w.add(append(w.take(), "data: "+api.SSEDone+"\n\n"...))
}

// Flush sends what is pending to the client now, and gives the buffer
// back to the pool.
func (w *ConnWriter) Flush() error {
	err := w.sendPending()
	w.release()
	return err
}

// KeepAlive reports whether the answer leaves its connection open (End).
func (w *ConnWriter) KeepAlive() bool { return w.keep }

// closingChunk ends a chunked body: one that ends without it is one cut
// short.
var closingChunk = []byte("0\r\n\r\n")

// end sends what is pending and the closing chunk, once.
func (w *ConnWriter) end() error {
	if w.ended {
		return nil
	}
	w.ended = true
	err := w.sendPending()
	if err == nil && w.chunked {
		err = w.send(closingChunk)
	}
	w.release()
	return err
}

// End sends what is pending and the closing chunk, and leaves the
// connection open, with no write deadline, for the HTTP server to read the
// client's next request from; the writer is done with it. Only a
// keep-alive answer ends so.
func (w *ConnWriter) End() error {
	if !w.keep {
		return errors.New("relay: this answer announced the connection's close")
	}
	if err := w.end(); err != nil {
		return err
	}
	return w.conn.SetWriteDeadline(time.Time{})
}

// Close sends what is pending and the closing chunk, unless End did, then
// closes the connection.
func (w *ConnWriter) Close() error {
	err := w.end()
	if tc, ok := w.conn.(interface{ CloseWrite() error }); ok && err == nil {
		_ = tc.CloseWrite()
	}
	if cerr := w.conn.Close(); err == nil {
		err = cerr
	}
	return err
}
