package workers

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"rbee.dev/hive/internal/lines"
)

// Workers write their output to a file, not a pipe: a pipe would break when
// the hive dies (and a worker writing to it would get SIGPIPE), while a file
// outlives the hive, so an adopted worker keeps running and its recent
// lines stay readable. The supervisor tails the file.
const (
	// LogLines is how many recent output lines are kept per worker.
	LogLines = 50
	// maxLogBytes bounds a worker's log file; past it the file is cut back
	// to empty. The worker appends (O_APPEND), so it simply goes on at the
	// new end; lines written between the last read and the cut are lost,
	// which is acceptable for a log whose last lines are also in memory.
	maxLogBytes  = 16 << 20
	tailInterval = 100 * time.Millisecond
)

// tailer follows one worker's log file: it keeps the last lines in a ring
// and hands each new line to a sink while one is set (during startup, the
// spawn job's narration).
type tailer struct {
	path string

	mu      sync.Mutex
	f       *os.File
	off     int64
	partial []byte
	// skipFirst drops the first line read, when reading began mid-file.
	skipFirst bool
	ring      []string
	next      int
	full      bool
	sink      func(string)
	closed    bool
	quit      chan struct{}
}

func newTailer(path string, sink func(string)) *tailer {
	return &tailer{path: path, sink: sink, ring: make([]string, LogLines), quit: make(chan struct{})}
}

// fromEnd starts reading near the end of an existing file, so an adopted
// worker's ring holds its last lines without reading a large log whole.
func (t *tailer) fromEnd() {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, err := os.Stat(t.path)
	if err != nil || st.Size() <= LogLines*256 {
		return
	}
	t.off = st.Size() - LogLines*256
	t.partial = nil
	t.skipFirst = true
}

// run polls the file until ctx ends or the tailer is closed.
func (t *tailer) run(ctx context.Context) {
	tick := time.NewTicker(tailInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.quit:
			return
		case <-tick.C:
			t.poll()
		}
	}
}

// poll reads whatever the worker wrote since the last poll.
func (t *tailer) poll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if t.f == nil {
		f, err := os.Open(t.path)
		if err != nil {
			return
		}
		t.f = f
	}
	if st, err := t.f.Stat(); err == nil && st.Size() < t.off {
		t.off, t.partial = 0, nil // cut back by someone else
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := t.f.ReadAt(buf, t.off)
		t.off += int64(n)
		t.consume(buf[:n])
		if err != nil || n < len(buf) {
			if err != nil && err != io.EOF {
				return
			}
			break
		}
	}
	if t.off > maxLogBytes && os.Truncate(t.path, 0) == nil {
		t.off = 0
	}
}

func (t *tailer) consume(b []byte) {
	t.partial = lines.Cut(t.partial, b, t.line)
}

func (t *tailer) line(b []byte, _ bool) {
	if t.skipFirst {
		// Reading began mid-file: the first line is a fragment.
		t.skipFirst = false
		return
	}
	s := string(bytes.ToValidUTF8(b, []byte("\uFFFD")))
	t.ring[t.next] = s
	t.next = (t.next + 1) % len(t.ring)
	if t.next == 0 {
		t.full = true
	}
	if t.sink != nil {
		t.sink(s)
	}
}

// setSink changes where new lines go; after it returns the old sink is
// never called again.
func (t *tailer) setSink(f func(string)) {
	t.mu.Lock()
	t.sink = f
	t.mu.Unlock()
}

// lines returns the kept lines, oldest first.
func (t *tailer) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	if t.full {
		out = append(out, t.ring[t.next:]...)
	}
	out = append(out, t.ring[:t.next]...)
	return out
}

// close reads the last output, then stops following the file. The kept
// lines stay readable.
func (t *tailer) close() {
	t.poll()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.sink = nil
	close(t.quit)
	if t.f != nil {
		_ = t.f.Close()
	}
}

// errorLines is how many of the last lines an error message quotes.
const errorLines = 20

// lastLines formats the last kept lines for an error message.
func lastLines(lines []string) string {
	if len(lines) == 0 {
		return "; the worker wrote no output"
	}
	lines = lines[max(0, len(lines)-errorLines):]
	clipped := make([]string, len(lines))
	for i, l := range lines {
		if len(l) > 300 {
			l = strings.ToValidUTF8(l[:300], "") + "…"
		}
		clipped[i] = l
	}
	return "; last output:\n  " + strings.Join(clipped, "\n  ")
}
