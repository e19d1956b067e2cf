// Package lines cuts the output of a process into lines, the unit in
// which a hive narrates a command's output and keeps a worker's log.
package lines

import "bytes"

// Max bounds what is held of a line that has no end yet: once that much
// has come, it is passed on as a line of its own, so that one narration
// event stays small and a process printing without newlines is still
// heard.
const Max = 16 << 10

// Cut appends b to buf and calls line with each complete line in it,
// without its "\n" or "\r\n", and with each Max bytes of a line whose end
// has not come. It returns what is left, the start of the next line, to
// pass as buf next time. line must not keep its argument.
func Cut(buf, b []byte, line func([]byte)) []byte {
	buf = append(buf, b...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) >= Max {
				line(buf[:Max])
				buf = buf[Max:]
				continue
			}
			return buf
		}
		line(bytes.TrimSuffix(buf[:i], []byte("\r")))
		buf = buf[i+1:]
	}
}
