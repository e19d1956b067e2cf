package client_test

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"rbee.dev/queen/internal/client"
)

// readAll drains a FrameReader, failing the test on anything but io.EOF.
func readAll(tb testing.TB, r io.Reader) []client.Frame {
	tb.Helper()
	fr := client.NewFrameReader(r)
	var out []client.Frame
	for {
		f, err := fr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("Next: %v", err)
		}
		out = append(out, f)
	}
}

func frameString(fs []client.Frame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(strings.Join([]string{strconv.FormatUint(f.ID, 10), f.Event, string(f.Data)}, "|"))
		b.WriteString(";")
	}
	return b.String()
}

func TestFrameReader(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"lf", "id: 1\nevent: narration\ndata: {\"a\":1}\n\n", `1|narration|{"a":1};`},
		{"crlf", "id: 1\r\nevent: end\r\ndata: x\r\n\r\n", "1|end|x;"},
		{"lone cr", "id: 2\revent: data\rdata: x\r\r", "2|data|x;"},
		{"mixed endings", "data: a\r\ndata: b\rdata: c\n\n", "0|message|a\nb\nc;"},
		{"multi-line data", "data: one\ndata: two\ndata:\n\n", "0|message|one\ntwo\n;"},
		{"no space after colon", "data:x\n\n", "0|message|x;"},
		{"only one space dropped", "data:  x\n\n", "0|message| x;"},
		{"colon in value", "data: a:b: c\n\n", "0|message|a:b: c;"},
		{"field without colon", "data\n\n", "0|message|;"},
		{"comments and heartbeats", ": ping\n\n:\n\nid: 3\n: mid-event comment\ndata: x\n\n", "3|message|x;"},
		{"blank lines without data", "\n\n\nevent: end\n\ndata: x\n\n", "0|message|x;"},
		{"id without data is not an event", "id: 7\n\ndata: x\n\n", "0|message|x;"},
		{"id does not carry over", "id: 5\ndata: a\n\ndata: b\n\n", "5|message|a;0|message|b;"},
		{"non-numeric id ignored", "id: abc\ndata: x\n\n", "0|message|x;"},
		{"retry and unknown fields ignored", "retry: 10\nfoo: bar\ndata: x\n\n", "0|message|x;"},
		{"bom stripped", "\xef\xbb\xbfdata: x\n\n", "0|message|x;"},
		{"bom only at start", "data: \xef\xbb\xbfx\n\n", "0|message|\xef\xbb\xbfx;"},
		{"unfinished event dropped", "data: a\n\ndata: b\n", "0|message|a;"},
		{"unterminated line dropped", "data: a\n\ndata: b", "0|message|a;"},
		{"done marker", "event: end\nid: 9\ndata: {}\n\ndata: [DONE]\n\n", "9|end|{};0|message|[DONE];"},
		{"empty body", "", ""},
		{"short body", "\xef", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := frameString(readAll(t, strings.NewReader(tt.in))); got != tt.want {
				t.Errorf("whole: got %q, want %q", got, tt.want)
			}
			// One byte per read puts every line end, CRLF pair and byte
			// order mark across a read boundary.
			if got := frameString(readAll(t, iotest.OneByteReader(strings.NewReader(tt.in)))); got != tt.want {
				t.Errorf("byte by byte: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFrameReaderLargeEvent(t *testing.T) {
	// 300 KB is well past bufio.Scanner's 64 KiB default and the reader's
	// own buffer, so the line must be assembled from several reads.
	big := strings.Repeat("x", 300<<10)
	in := "id: 1\ndata: {\"payload\":\"" + big + "\"}\n\n"
	fs := readAll(t, strings.NewReader(in))
	if len(fs) != 1 || len(fs[0].Data) != len(big)+14 {
		t.Fatalf("got %d frames, want one of %d bytes", len(fs), len(big)+14)
	}
}

func TestFrameReaderTooLarge(t *testing.T) {
	tests := map[string]string{
		"one line":   "data: " + strings.Repeat("x", client.MaxEventBytes+1) + "\n\n",
		"many lines": strings.Repeat("data: "+strings.Repeat("x", 1<<20)+"\n", 9) + "\n",
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := client.NewFrameReader(strings.NewReader(in)).Next()
			if !errors.Is(err, client.ErrEventTooLarge) {
				t.Fatalf("err = %v, want ErrEventTooLarge", err)
			}
		})
	}
}

// TestFrameReaderLive checks that an event is delivered as soon as its
// blank line arrives, without waiting for more bytes; a lone CR ending the
// event must not make the reader wait to see whether an LF follows.
func TestFrameReaderLive(t *testing.T) {
	for name, sep := range map[string]string{"lf": "\n", "cr": "\r", "crlf": "\r\n"} {
		t.Run(name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pr.Close()
			fr := client.NewFrameReader(pr)
			go func() { _, _ = pw.Write([]byte("id: 1" + sep + "data: x" + sep + sep)) }()
			f, err := fr.Next()
			if err != nil || f.ID != 1 || string(f.Data) != "x" {
				t.Fatalf("Next = %+v, %v", f, err)
			}
			go func() {
				_, _ = pw.Write([]byte("data: y" + sep + sep))
				pw.Close()
			}()
			f, err = fr.Next()
			if err != nil || string(f.Data) != "y" {
				t.Fatalf("second Next = %+v, %v", f, err)
			}
		})
	}
}

func TestFrameDecode(t *testing.T) {
	f := client.Frame{ID: 4, Event: "narration", Data: []byte(`{"job_id":"j1","seq":2,"actor":"hive-a","action":"started","level":"info","exit_code":3}`)}
	ev, err := f.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if ev.JobID != "j1" || ev.Seq != 2 || ev.Actor != "hive-a" || ev.ExitCode == nil || *ev.ExitCode != 3 {
		t.Fatalf("decoded %+v", ev)
	}
	if f.Done() || !(client.Frame{Data: []byte("[DONE]")}).Done() {
		t.Fatal("Done misreports")
	}
	if _, err := (client.Frame{Data: []byte("not json")}).Decode(); err == nil {
		t.Fatal("Decode of garbage succeeded")
	}
}
