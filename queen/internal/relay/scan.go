package relay

import (
	"bytes"
	"encoding/binary"
	"unicode/utf8"
)

// scanEvent reads the fields the relay judges a frame by from an event's
// JSON, skipping the rest without decoding it: the live feed does this for
// every frame a client follows and a replay for every frame it reads, so it
// must cost far less than encoding/json. It reports false for a body that is
// not one well-formed JSON object. Strings are compared as written: the
// fields read hold ids and fixed words that encoders never escape, and an
// escaped one simply does not match.
//
// It also refuses a body that names one of the fields it reads twice, or
// any top-level key with an escape in it: JSON readers take the last of
// repeated keys and unescape keys, so such a body could show clients
// another job, sequence or attempt than the relay judged it by. Encoders
// write neither.
func scanEvent(b []byte, ev *frameEvent) bool {
	s := scanner{b: b}
	s.ws()
	if !s.lit('{') {
		return false
	}
	s.ws()
	if s.lit('}') {
		return s.end()
	}
	var seen uint8
	for {
		s.ws()
		key, ok := s.str()
		if !ok || bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		s.ws()
		if !s.lit(':') {
			return false
		}
		s.ws()
		var field uint8
		switch string(key) {
		case "job_id":
			field, ok = 1<<0, s.strField(&ev.JobID)
		case "action":
			field, ok = 1<<1, s.strField(&ev.Action)
		case "state":
			field, ok = 1<<2, s.strField(&ev.State)
		case "hive":
			field, ok = 1<<3, s.strField(&ev.Hive)
		case "seq":
			field = 1 << 4
			ev.Seq, ok = s.uint()
		case "attempt":
			field = 1 << 5
			var n uint64
			n, ok = s.uint()
			ok = ok && n < 1<<31
			ev.Attempt = int(n)
		default:
			ok = s.skip(0)
		}
		if !ok || seen&field != 0 {
			return false
		}
		seen |= field
		s.ws()
		if s.lit('}') {
			return s.end()
		}
		if !s.lit(',') {
			return false
		}
	}
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *scanner) lit(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// str reads a string and returns its contents as written.
func (s *scanner) str() ([]byte, bool) {
	if !s.lit('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		s.i = plainRun(s.b, s.i)
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return nil, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return nil, false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return nil, false
					}
				}
				s.i += 6
			default:
				return nil, false
			}
		case c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			// encoding/json would read invalid UTF-8 as U+FFFD, and so
			// read another string than this one; writers (encoding/json
			// too) never send it, so a frame holding it is refused.
			r, size := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && size == 1 {
				return nil, false
			}
			s.i += size
		default:
			s.i++
		}
	}
	return nil, false
}

func (s *scanner) strField(dst *[]byte) bool {
	if s.word("null") {
		*dst = nil
		return true
	}
	v, ok := s.str()
	if ok {
		*dst = v
	}
	return ok
}

// uint reads a non-negative integer that fits 63 bits.
func (s *scanner) uint() (uint64, bool) {
	start := s.i
	var n uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		if n > (1<<63-1)/10 {
			return 0, false
		}
		n = n*10 + uint64(s.b[s.i]-'0')
		s.i++
	}
	if s.i == start || (s.b[start] == '0' && s.i-start > 1) {
		return 0, false
	}
	if s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		return 0, false
	}
	return n, true
}

// maxDepth bounds how deeply nested a skipped value may be.
const maxDepth = 64

// skip passes over one value of any kind.
func (s *scanner) skip(depth int) bool {
	if s.i >= len(s.b) || depth > maxDepth {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		s.i++
		s.ws()
		if s.lit(closer) {
			return true
		}
		for {
			s.ws()
			if c == '{' {
				if _, ok := s.str(); !ok {
					return false
				}
				s.ws()
				if !s.lit(':') {
					return false
				}
				s.ws()
			}
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.lit(closer) {
				return true
			}
			if !s.lit(',') {
				return false
			}
		}
	case c == 't':
		return s.word("true")
	case c == 'f':
		return s.word("false")
	case c == 'n':
		return s.word("null")
	default:
		return s.number()
	}
}

func (s *scanner) word(w string) bool {
	if bytes.HasPrefix(s.b[s.i:], []byte(w)) {
		s.i += len(w)
		return true
	}
	return false
}

// number passes over a JSON number.
func (s *scanner) number() bool {
	s.lit('-')
	if s.lit('0') {
		if s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			return false
		}
	} else if !s.digits() {
		return false
	}
	if s.lit('.') && !s.digits() {
		return false
	}
	if s.lit('e') || s.lit('E') {
		if !s.lit('+') {
			s.lit('-')
		}
		return s.digits()
	}
	return true
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// SWAR constants: one byte repeated eight times.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plainRun returns the index of the first byte at or after i that a string
// cannot hold as is: a quote, a backslash, a control character or any
// non-ASCII byte (which str checks as UTF-8). Strings are most of a
// frame's bytes, so it looks at eight bytes at a time.
func plainRun(b []byte, i int) int {
	for i+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[i:])
		// A byte below 0x20, equal to '"' or '\', or with its high bit
		// set marks its word; the exact byte is found below.
		lt := (x - ones*0x20) &^ x
		q := x ^ (ones * '"')
		bs := x ^ (ones * '\\')
		if (lt|(q-ones)&^q|(bs-ones)&^bs|x)&highs != 0 {
			break
		}
		i += 8
	}
	for i < len(b) {
		c := b[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return i
		}
		i++
	}
	return i
}
