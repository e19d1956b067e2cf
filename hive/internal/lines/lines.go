// Package lines cuts the output of a process into lines, the unit in
// which a hive narrates a command's output and keeps a worker's log.
package lines

import (
	"bytes"
	"unicode/utf8"
)

// Max bounds what is held of a line that has no end yet: once that much
// has come, it is passed on as a line of its own, so that one narration
// event stays small and a process printing without newlines is still
// heard.
const Max = 16 << 10

// Cut appends b to buf and calls line with each complete line in it,
// without its "\n" or "\r\n" (ended true), and with each part of about
// Max bytes of a line whose end has not come (ended false), cut between
// two UTF-8 characters. It returns what is left, the start of the next
// line, to pass as buf next time. line must not keep its argument.
func Cut(buf, b []byte, line func(part []byte, ended bool)) []byte {
	buf = append(buf, b...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) >= Max {
				n := runeCut(buf[:Max])
				line(buf[:n], false)
				buf = buf[n:]
				continue
			}
			return buf
		}
		line(bytes.TrimSuffix(buf[:i], []byte("\r")), true)
		buf = buf[i+1:]
	}
}

// runeCut is where to cut b so that the first part does not end in the
// first bytes of a character whose rest is beyond b: before that
// character, unless b is not UTF-8 there.
func runeCut(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) && i > 0 {
				return i
			}
			break
		}
	}
	return len(b)
}
