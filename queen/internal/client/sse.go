package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"

	"rbee.dev/shared/api"
)

// MaxEventBytes bounds one SSE line and one event's data. Narration events
// are at most about 100 KB; the bound is far above that and only stops a
// broken or hostile server from growing the client without limit.
const MaxEventBytes = 8 << 20

// ErrEventTooLarge is returned when a line or an event exceeds MaxEventBytes.
var ErrEventTooLarge = errors.New("sse: event larger than 8 MiB")

// Frame is one Server-Sent Event.
type Frame struct {
	// ID is the event's id field, the NARR stream sequence on a queen
	// stream. It is 0 when the event had no id line, or one that is not a
	// decimal uint64. Unlike a browser's lastEventId it does not carry over
	// from earlier events, so a reader can tell which events were numbered.
	ID uint64
	// Event is the event type: narration, data or end on a queen stream;
	// "message" when the server named none, as the SSE spec says.
	Event string
	// Data is the event's data lines joined by "\n".
	Data []byte
}

// Decode parses the frame's data as a narration event.
func (f Frame) Decode() (api.Event, error) {
	var ev api.Event
	err := json.Unmarshal(f.Data, &ev)
	return ev, err
}

// Done reports whether this is the [DONE] marker that follows the end event.
func (f Frame) Done() bool { return string(f.Data) == api.SSEDone }

// FrameReader parses a text/event-stream body as the WHATWG HTML spec
// describes it: lines end in CRLF, LF or a lone CR; ':' lines are comments;
// a field without a colon has an empty value; one space after the colon is
// dropped; data lines accumulate; a blank line dispatches the event, unless
// it holds no data; an unfinished event at the end of the body is dropped.
//
// It reads with a bufio.Reader rather than a bufio.Scanner so lines are not
// limited to the scanner's 64 KiB, and it splits on a lone CR without
// waiting for the byte after it, so a CR-only server is not held back a line.
type FrameReader struct {
	r         *bufio.Reader
	line      []byte
	pendingCR bool // the last line ended in CR; an LF right after is its tail
	started   bool // the optional byte order mark was looked for

	id    uint64
	event string
	data  []byte
}

// NewFrameReader returns a reader of the events in r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next event. It returns io.EOF when the body ends, and
// comment lines such as heartbeats never surface.
func (fr *FrameReader) Next() (Frame, error) {
	for {
		line, err := fr.readLine()
		if err != nil {
			return Frame{}, err
		}
		if len(line) == 0 {
			if len(fr.data) == 0 {
				// A blank line after only comments or an id is not an
				// event; the spec resets the type and waits for data.
				fr.id, fr.event = 0, ""
				continue
			}
			f := Frame{ID: fr.id, Event: fr.event, Data: fr.data[:len(fr.data)-1]}
			if f.Event == "" {
				f.Event = "message"
			}
			fr.id, fr.event, fr.data = 0, "", nil
			return f, nil
		}
		if line[0] == ':' {
			continue
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(name) {
		case "event":
			fr.event = string(value)
		case "data":
			if len(fr.data)+len(value)+1 > MaxEventBytes {
				return Frame{}, ErrEventTooLarge
			}
			fr.data = append(fr.data, value...)
			fr.data = append(fr.data, '\n')
		case "id":
			if n, err := strconv.ParseUint(string(value), 10, 64); err == nil {
				fr.id = n
			}
		}
		// "retry" and unknown fields are ignored: reconnect timing is the
		// client's own backoff, and the spec says to skip unknown names.
	}
}

// readLine returns the next line without its terminator. The slice is only
// valid until the next call.
func (fr *FrameReader) readLine() ([]byte, error) {
	fr.line = fr.line[:0]
	for {
		if fr.r.Buffered() == 0 {
			if _, err := fr.r.Peek(1); err != nil {
				// A line cut off by the end of the body belongs to an
				// unfinished event, which the spec discards.
				return nil, err
			}
		}
		buf, _ := fr.r.Peek(fr.r.Buffered())
		if fr.pendingCR {
			fr.pendingCR = false
			if buf[0] == '\n' {
				_, _ = fr.r.Discard(1)
				continue
			}
		}
		if !fr.started && len(fr.line) == 0 {
			if len(buf) < 3 && bytes.HasPrefix([]byte("\xef\xbb\xbf"), buf) {
				// Too few bytes to tell a byte order mark from data yet;
				// wait for three, or take what there is if the body ends.
				if _, err := fr.r.Peek(3); err != nil {
					fr.started = true
				}
				continue
			}
			fr.started = true
			if bytes.HasPrefix(buf, []byte("\xef\xbb\xbf")) {
				_, _ = fr.r.Discard(3)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		if i < 0 {
			if len(fr.line)+len(buf) > MaxEventBytes {
				return nil, ErrEventTooLarge
			}
			fr.line = append(fr.line, buf...)
			_, _ = fr.r.Discard(len(buf))
			continue
		}
		if len(fr.line)+i > MaxEventBytes {
			return nil, ErrEventTooLarge
		}
		fr.line = append(fr.line, buf[:i]...)
		fr.pendingCR = buf[i] == '\r'
		_, _ = fr.r.Discard(i + 1)
		return fr.line, nil
	}
}
