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
// HTTP/1.0; and between flushes it holds no buffer. A keep-alive answer
// does not announce the close and, ended, leaves the connection open: what
// is written after it is read after the body, and nothing else.
func TestConnWriter(t *testing.T) {
	for _, tc := range []struct {
		minor int
		keep  bool
	}{{1, false}, {1, true}, {0, true}} {
		minor := tc.minor
		keep := tc.keep && minor == 1
		t.Run("HTTP/1."+strconv.Itoa(minor)+" keep-alive "+strconv.FormatBool(tc.keep), func(t *testing.T) {
			server, client := net.Pipe()
			defer client.Close()
			type answer struct {
				resp *http.Response
				body []byte
				err  error
				next string
			}
			got := make(chan answer, 1)
			go func() {
				br := bufio.NewReader(client)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					got <- answer{err: err}
					return
				}
				body, err := io.ReadAll(resp.Body)
				a := answer{resp: resp, body: body, err: err}
				if err == nil && keep {
					var next []byte
					next, a.err = io.ReadAll(br)
					a.next = string(next)
				}
				got <- a
			}()
			hdr := http.Header{"Content-Type": {"text/event-stream"}, "Connection": {"keep-alive"}}
			w, err := NewConnWriter(server, hdr, minor, tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			if w.KeepAlive() != keep {
				t.Fatalf("keep-alive %v, want %v", w.KeepAlive(), keep)
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
			if keep {
				must(t, w.End())
				_, err := server.Write([]byte("next\n"))
				must(t, err)
				// Closing after End sends nothing more.
				must(t, w.Close())
			} else {
				if w.End() == nil {
					t.Fatal("an answer that announced the close ended without it")
				}
				must(t, w.Close())
			}
			a := <-got
			if a.err != nil {
				t.Fatal(a.err)
			}
			if keep && a.next != "next\n" {
				t.Fatalf("after the answer the connection read %q", a.next)
			}
			chunked := len(a.resp.TransferEncoding) == 1
			if a.resp.StatusCode != 200 || a.resp.Close == keep || chunked != (minor == 1) || a.resp.Header.Get("Date") == "" ||
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
