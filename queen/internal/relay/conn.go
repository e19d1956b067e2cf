package relay

import (
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
// HTTP/1.0 client reads it to the connection's close. Either way the
// connection closes after the answer: it is not handed back to the server.
type ConnWriter struct {
	conn    net.Conn
	chunked bool
	// buf is what is written and not yet sent, after chunkHead bytes kept
	// for the chunk's size line; nil between flushes.
	buf *[]byte
}

// NewConnWriter writes the status line and hdr (plus Date, and the
// framing headers, which it sets in hdr) to conn, and returns the writer
// of the body. minor is the request's minor HTTP/1 version.
func NewConnWriter(conn net.Conn, hdr http.Header, minor int) (*ConnWriter, error) {
	w := &ConnWriter{conn: conn, chunked: minor >= 1}
	b := w.take()
	b = b[:0]
	if w.chunked {
		b = append(b, "HTTP/1.1 200 OK\r\n"...)
	} else {
		b = append(b, "HTTP/1.0 200 OK\r\n"...)
	}
	h := hdr
	h.Set("Connection", "close")
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

// Close sends what is pending and the closing chunk (a chunked body that
// ends without it is one cut short), then closes the connection.
func (w *ConnWriter) Close() error {
	err := w.sendPending()
	if err == nil && w.chunked {
		err = w.send([]byte("0\r\n\r\n"))
	}
	w.release()
	if tc, ok := w.conn.(interface{ CloseWrite() error }); ok && err == nil {
		_ = tc.CloseWrite()
	}
	if cerr := w.conn.Close(); err == nil {
		err = cerr
	}
	return err
}
