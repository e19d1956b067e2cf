package relay

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"rbee.dev/shared/bus"
)

// A ConnWriter's answer reads, through Go's own HTTP client code, as the
// SSE body the server would have sent: chunked for HTTP/1.1 (one chunk a
// flush, and pieces of a long run sent before its flush), to the close for
// HTTP/1.0; and between flushes it holds no buffer.
func TestConnWriter(t *testing.T) {
	for _, minor := range []int{1, 0} {
		t.Run("HTTP/1."+strconv.Itoa(minor), func(t *testing.T) {
			server, client := net.Pipe()
			type answer struct {
				resp *http.Response
				body []byte
				err  error
			}
			got := make(chan answer, 1)
			go func() {
				resp, err := http.ReadResponse(bufio.NewReader(client), nil)
				if err != nil {
					got <- answer{err: err}
					return
				}
				body, err := io.ReadAll(resp.Body)
				got <- answer{resp, body, err}
			}()
			hdr := http.Header{"Content-Type": {"text/event-stream"}, "Connection": {"keep-alive"}}
			w, err := NewConnWriter(server, hdr, minor)
			if err != nil {
				t.Fatal(err)
			}
			var want strings.Builder
			_, _ = io.WriteString(w, "retry: 1000\n\n")
			want.WriteString("retry: 1000\n\n")
			must(t, w.Comment("hello"))
			want.WriteString(": hello\n\n")
			must(t, w.Flush())
			if w.buf != nil {
				t.Fatal("a flushed writer holds a buffer")
			}
			big := bytes.Repeat([]byte("x"), 3*connFlushAt)
			for i, data := range [][]byte{[]byte(`{"a":1}`), big, []byte(`{"b":2}`)} {
				seq := uint64(10 + i)
				must(t, w.Frame(Frame{Seq: seq, Kind: bus.KindEvent, Data: data}))
				want.WriteString("id: " + strconv.FormatUint(seq, 10) + "\nevent: narration\ndata: " + string(data) + "\n\n")
			}
			must(t, w.Done())
			want.WriteString("data: [DONE]\n\n")
			must(t, w.Flush())
			must(t, w.Close())
			a := <-got
			if a.err != nil {
				t.Fatal(a.err)
			}
			chunked := len(a.resp.TransferEncoding) == 1
			if a.resp.StatusCode != 200 || !a.resp.Close || chunked != (minor == 1) || a.resp.Header.Get("Date") == "" ||
				a.resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("answer %d, close %v, chunked %v, headers %v", a.resp.StatusCode, a.resp.Close, chunked, a.resp.Header)
			}
			if string(a.body) != want.String() {
				t.Fatalf("body differs: got %d bytes, want %d", len(a.body), want.Len())
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
