package bench

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Kind is the SSE event type of a frame, as a small number so the hot loop
// compares integers rather than strings.
type Kind uint8

// Event types a queen sends.
const (
	KindOther Kind = iota // an event type the queen does not send
	KindNarration
	KindData
	KindEnd
)

func (k Kind) String() string {
	switch k {
	case KindNarration:
		return "narration"
	case KindData:
		return "data"
	case KindEnd:
		return "end"
	}
	return "other"
}

// Frame is one dispatched Server-Sent Event. Data aliases the reader's
// buffer and is valid only until the next call to Next.
type Frame struct {
	ID    uint64 // the id field; meaningful only when HasID
	HasID bool
	Kind  Kind
	Data  []byte
	// Done marks the closing "data: [DONE]" line that follows the end event.
	Done bool
}

// ErrLineTooLong is returned for a line longer than MaxLine: a broken
// server, never a narration event.
var ErrLineTooLong = errors.New("sse: line longer than 16 MiB")

// MaxLine bounds one SSE line.
const MaxLine = 16 << 20

var (
	fieldID    = []byte("id")
	fieldEvent = []byte("event")
	fieldData  = []byte("data")
	doneData   = []byte("[DONE]")
)

// Reader parses a text/event-stream body. It is built for speed rather than
// for every corner of the specification: it reads lines with ReadSlice, so
// a line that fits the buffer is never copied twice, knows the three event
// types a queen sends by their bytes, and allocates nothing per event once
// its buffers have grown. Lines may end in LF or CRLF; a lone CR is not a
// line end here because a queen never sends one.
type Reader struct {
	br   *bufio.Reader
	long []byte // a line that did not fit the bufio buffer
	data []byte

	// Comments counts ':' lines: the opening comment and heartbeats.
	Comments uint64
	// Bytes counts the bytes of every line read, line ends included.
	Bytes uint64
}

// NewReader reads events from r through a buffer of size bytes (at least
// 4 KiB).
func NewReader(r io.Reader, size int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, max(size, 4096))}
}

// Next returns the next event. Comments never surface. At the end of the
// body it returns io.EOF; an event cut off by the end is dropped, as the
// SSE specification says, since its last line might be incomplete.
func (r *Reader) Next() (Frame, error) {
	var f Frame
	hasData := false
	r.data = r.data[:0]
	for {
		line, err := r.readLine()
		if err != nil {
			return Frame{}, err
		}
		if len(line) == 0 {
			if !hasData {
				// An event without data is not dispatched; its fields
				// do not carry over.
				f = Frame{}
				continue
			}
			f.Data = r.data
			f.Done = bytes.Equal(r.data, doneData)
			return f, nil
		}
		if line[0] == ':' {
			r.Comments++
			continue
		}
		name, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			name, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch {
		case bytes.Equal(name, fieldData):
			if hasData {
				r.data = append(r.data, '\n')
			}
			r.data = append(r.data, value...)
			hasData = true
		case bytes.Equal(name, fieldID):
			f.ID, f.HasID = parseUint(value)
		case bytes.Equal(name, fieldEvent):
			f.Kind = kindOf(value)
		}
	}
}

func kindOf(b []byte) Kind {
	switch string(b) { // the compiler does not allocate for this conversion
	case "narration":
		return KindNarration
	case "data":
		return KindData
	case "end":
		return KindEnd
	}
	return KindOther
}

// readLine returns the next line without its line end. The slice is valid
// until the next read.
func (r *Reader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		r.long = append(r.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(r.long) > MaxLine {
				return nil, ErrLineTooLong
			}
			line, err = r.br.ReadSlice('\n')
			r.long = append(r.long, line...)
		}
		line = r.long
	}
	if err != nil {
		// A line without its end at EOF belongs to an unfinished event.
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	r.Bytes += uint64(len(line))
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// parseUint reads a decimal number that fills b, without allocating.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
