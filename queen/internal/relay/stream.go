package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// directReplay is how many history messages are read one by one
// before a replay switches to a short-lived ordered consumer: small jobs
// never cost the server a consumer.
const directReplay = 32

// Writer writes SSE frames to one client, flushing when the client has
// caught up with what there is to send. It adds no buffer of its own: the
// HTTP server's buffers batch the writes, and an idle client's memory is
// what limits how many clients one queen serves.
type Writer struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf []byte
}

// NewWriter wraps an HTTP response that has its SSE headers set, and lifts
// the server's deadlines for it (see KeepOpen).
func NewWriter(w http.ResponseWriter) *Writer {
	rc := http.NewResponseController(w)
	KeepOpen(rc)
	return &Writer{w: w, rc: rc}
}

// WriteWindow is how long a long-lived answer may take to write what it
// flushes. Live streams flush at least once a heartbeat, so a client that
// stops reading is cut off within a window while a quiet stream stays open.
const WriteWindow = time.Minute

// KeepOpen lifts the read and write deadlines the HTTP server sets for
// ordinary requests, for an answer that may last as long as its job: the
// read deadline would cancel the request once it passed, and the write
// deadline would cut the answer off. Call it once the request body is read.
func KeepOpen(rc *http.ResponseController) {
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
}

// FlushWithin sends what is buffered and gives the next flush WriteWindow
// to get through.
func FlushWithin(rc *http.ResponseController) error {
	if err := rc.Flush(); err != nil {
		return err
	}
	_ = rc.SetWriteDeadline(time.Now().Add(WriteWindow))
	return nil
}

// Frame writes one event.
func (w *Writer) Frame(f Frame) error {
	w.buf = appendFrame(w.buf[:0], f)
	_, err := w.w.Write(w.buf)
	return err
}

// appendFrame appends f as an SSE event: its stream sequence as the id.
func appendFrame(b []byte, f Frame) []byte {
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, f.Seq, 10)
	b = append(b, "\nevent: "...)
	b = append(b, f.Event()...)
	b = append(b, "\ndata: "...)
	b = append(b, f.Data...)
	return append(b, "\n\n"...)
}

// Comment writes an SSE comment, used as a heartbeat.
func (w *Writer) Comment(text string) error {
	_, err := io.WriteString(w.w, ": "+text+"\n\n")
	return err
}

// Done writes the closing data line.
func (w *Writer) Done() error {
	_, err := io.WriteString(w.w, "data: "+api.SSEDone+"\n\n")
	return err
}

// Flush sends what is buffered to the client now.
func (w *Writer) Flush() error {
	return FlushWithin(w.rc)
}

// Sink receives a stream: an SSE writer, or a translator such as the
// OpenAI-compatible API's.
type Sink interface {
	Frame(Frame) error
	Comment(text string) error
	Done() error
	Flush() error
}

// Stream sends job's narration after stream sequence after to w: history
// first, then live, through the end event and the closing line. A client
// that falls behind the live feed is switched back to reading history from
// where it stands, so it loses nothing and slows no one. Only the client
// ends a stream early: by leaving (ctx) or by a failed write. When NATS
// fails a history read (the queen's server died and it is moving to
// another), the client is kept open and pinged, and the read is tried again
// from where the client stands until NATS answers.
func (h *Hub) Stream(ctx context.Context, w Sink, job string, after uint64, heartbeat time.Duration) error {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	last := after
	fw, err := h.fenceAt(ctx, w, job, after)
	backoff := retryFirst
	for err != nil {
		// Where a resuming client's story stands is read from NATS too.
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := fw.wait(ctx, backoff, heartbeat); err != nil {
			return err
		}
		backoff = min(2*backoff, retryMax)
		fw, err = h.fenceAt(ctx, w, job, after)
	}
	overflowed := false
	opening := after == 0
	for {
		// Subscribe before reading history: whatever is stored after the
		// history read ends reaches the feed. A feed that holds the job's
		// whole opening leaves no history to read; a frame missing from it
		// is a gap from the job's first event on.
		s, opened, err := h.subscribe(ctx, job, overflowed, opening)
		opening, fw.fromStart = false, opened
		ended := false
		if err == nil {
			if !opened {
				ended, err = h.replay(ctx, fw, job, &last)
			}
			if err == nil && !ended {
				h.caughtUp(job, last, &fw.trust)
				backoff = retryFirst
				err = fw.Flush()
			}
			if err == nil && !ended {
				var overflow bool
				ended, overflow, err = h.live(ctx, fw, s, &last, heartbeat)
				if overflow {
					h.unsubscribe(s)
					overflowed = true
					continue
				}
			}
			h.unsubscribe(s)
		}
		if err != nil {
			if errors.As(err, new(clientErr)) {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.log.Debug("history read failed; the stream waits for NATS", "job_id", job, "after", last, "err", err)
			if err := fw.wait(ctx, backoff, heartbeat); err != nil {
				return err
			}
			backoff = min(2*backoff, retryMax)
			continue
		}
		if ended {
			if err := fw.Done(); err != nil {
				return err
			}
			return fw.Flush()
		}
		return nil
	}
}

// A stream whose history read failed tries again after retryFirst, then
// twice as long each time up to retryMax: NATS moves a queen to another
// server of its cluster in about a second, and a new stream leader is
// elected in a few.
const (
	retryFirst = 250 * time.Millisecond
	retryMax   = 2 * time.Second
)

// live relays the feed until the end event, an overflow, a gap in the
// job's sequence (a frame the feed missed; the caller reads it from
// history, with the same result as an overflow) or the client leaves.
func (h *Hub) live(ctx context.Context, w *fenced, s *sub, last *uint64, heartbeat time.Duration) (ended, overflow bool, err error) {
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case f, ok := <-s.ch:
			if !ok {
				return false, true, nil
			}
			if f.Seq <= *last {
				continue
			}
			sent, err := w.send(*f, true)
			if errors.Is(err, errGap) {
				return false, true, nil
			}
			if sent {
				// Only a frame the fence let through moves the client's
				// place: a live frame's sequence is a header (liveSeq).
				*last = f.Seq
			}
			if err != nil {
				return false, false, err
			}
			if sent && f.Kind == bus.KindEnd {
				return true, false, nil
			}
			if len(s.ch) == 0 {
				if err := w.Flush(); err != nil {
					return false, false, err
				}
			}
		case <-tick.C:
			if err := w.Comment("ping"); err != nil {
				return false, false, err
			}
			if err := w.Flush(); err != nil {
				return false, false, err
			}
		case <-ctx.Done():
			return false, false, ctx.Err()
		}
	}
}

// replay sends the stored events after *last, up to the newest one stored
// when it begins. It reports whether it sent the end event.
func (h *Hub) replay(ctx context.Context, w *fenced, job string, last *uint64) (bool, error) {
	seen := h.seenFor(job)
	target := seen.last
	newest, err := h.narr.Last(ctx, bus.NarrJob(job))
	switch {
	case err == nil:
		target = max(target, newest.Sequence)
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return false, err
	}
	if target <= *last {
		// Nothing new; a client resuming after the end of the attempt its
		// story has reached gets the close.
		if seen.end > 0 && seen.end <= *last && seen.endAttempt >= w.attempt {
			return true, nil
		}
		end, err := h.narr.Last(ctx, bus.NarrEnd(job, w.attempt))
		if err == nil && end.Sequence <= *last {
			return true, nil
		}
		return false, nil
	}
	for i := 0; i < directReplay && *last < target; i++ {
		m, err := h.narr.Get(ctx, *last+1, bus.NarrJob(job))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// A replica behind the live feed answered; the stream's leader
			// serves the consumer below.
			break
		}
		if err != nil {
			return false, err
		}
		if ended, err := h.send(w, m.Subject, m.Sequence, m.Header, m.Data, last); ended || err != nil {
			return ended, err
		}
	}
	if *last >= target {
		return false, nil
	}
	return h.replayConsumer(ctx, w, job, last, target)
}

// replayConsumer reads a long history with an ordered consumer, which the
// server streams with flow control, and deletes it when done.
func (h *Hub) replayConsumer(ctx context.Context, w *fenced, job string, last *uint64, target uint64) (bool, error) {
	cons, err := h.narr.Follow(ctx, bus.NarrJob(job), *last+1, 10*time.Second)
	if err != nil {
		return false, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2048), jetstream.PullExpiry(store.PullExpiry), jetstream.PullHeartbeat(store.PullHeartbeat))
	if err != nil {
		return false, err
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer func() {
		stop()
		it.Stop()
		if info := cons.CachedInfo(); info != nil {
			go func(name string) {
				dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = h.narr.Delete(dctx, name)
			}(info.Name)
		}
	}()
	for n := 0; ; n++ {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, err
		}
		md, err := m.Metadata()
		if err != nil {
			return false, err
		}
		if ended, err := h.send(w, m.Subject(), md.Sequence.Stream, m.Headers(), m.Data(), last); ended || err != nil {
			return ended, err
		}
		if md.Sequence.Stream >= target || md.NumPending == 0 {
			return false, nil
		}
		if n&255 == 255 {
			if err := w.Flush(); err != nil {
				return false, err
			}
		}
	}
}

func (h *Hub) send(w *fenced, subj string, seq uint64, hdr nats.Header, data []byte, last *uint64) (bool, error) {
	_, writer, kind, ok := bus.ParseNarr(subj)
	if !ok || seq <= *last {
		return false, nil
	}
	*last = seq
	sent, err := w.send(Frame{Seq: seq, Writer: writer, Kind: kind, Data: data, Attempt: bus.EndAttempt(subj), Header: hdr}, false)
	return sent && kind == bus.KindEnd, err
}

// fenced drops what a job's earlier attempts write after the queen
// re-placed it: a lost hive that comes back must not add to the story of
// the attempt that replaced it. The queen's event that re-places the job
// (one of a later attempt: it hands the attempt to a hive, bus.HeaderHive,
// or moves a generation back into its model's queue) marks the new
// attempt; every queen sees the same events in the same order, so every
// client sees the same story. It also drops what the hub did not judge
// already (history, and frames of a job the hub did not watch yet) when it
// is not the job's to tell.
type fenced struct {
	Sink
	job     string
	recs    Records
	attempt int
	// seq is the job sequence of the last event sent. A writer that lost
	// its acknowledgements with a NATS server resends what the stream may
	// already hold; the copies are dropped here.
	seq   uint64
	trust trust
	// gapAt is the job sequence after which a live frame last showed a
	// gap; a second gap there is the story's own, not the feed's.
	gapAt uint64
	// fromStart is set while the live feed brings the job's story from its
	// first event (Hub.Expect): a first frame past it is a gap too.
	fromStart bool
}

// noGap is a fence's gapAt before any gap: no job sequence.
const noGap = ^uint64(0)

// errGap is a live frame that is not the next of its job's story: the feed
// missed one before it, and the client must read it from history.
var errGap = errors.New("live feed missed a frame")

// clientErr is a failed write to the client: it ends the stream, where a
// NATS error does not. It reads as the write's own error.
type clientErr struct{ error }

func (e clientErr) Unwrap() error { return e.error }

// Every write to the client goes through these, which mark its errors.

func (w *fenced) Frame(f Frame) error {
	if err := w.Sink.Frame(f); err != nil {
		return clientErr{err}
	}
	return nil
}

func (w *fenced) Comment(text string) error {
	if err := w.Sink.Comment(text); err != nil {
		return clientErr{err}
	}
	return nil
}

func (w *fenced) Done() error {
	if err := w.Sink.Done(); err != nil {
		return clientErr{err}
	}
	return nil
}

func (w *fenced) Flush() error {
	if err := w.Sink.Flush(); err != nil {
		return clientErr{err}
	}
	return nil
}

// wait keeps the client open for d, pinging it at once (the read that
// failed may have taken a while) and then once a heartbeat.
func (w *fenced) wait(ctx context.Context, d, heartbeat time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		if err := w.Comment("ping"); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
		select {
		case <-timer.C:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// send writes f to the client if its job's story goes on with it. A live
// frame that skips a job sequence is not written but reported as errGap:
// a job's accepted events are numbered without a gap.
func (w *fenced) send(f Frame, live bool) (bool, error) {
	if w.trust.judge(w.job, &f, w.recs) != "" {
		// The live feed counted what it refused; a replay reads it again.
		return false, nil
	}
	// A queen's event of a later attempt starts it: one that places it
	// on a hive, or one that moves a generation back into its model's
	// queue until a hive has room.
	if f.Writer == bus.QueenWriter && f.Kind == bus.KindEvent && f.c.attempt > w.attempt {
		w.attempt = f.c.attempt
	}
	if w.attempt > 1 && f.Writer != bus.QueenWriter && f.c.attempt < w.attempt {
		return false, nil
	}
	if f.c.seq <= w.seq {
		return false, nil
	}
	if live && (w.seq > 0 || w.fromStart) && f.c.seq > w.seq+1 && w.gapAt != w.seq {
		w.gapAt = w.seq
		return false, errGap
	}
	w.seq = f.c.seq
	return true, w.Frame(f)
}

// fenceAt is the fence of a client that resumes after stream sequence
// after: the attempt and job sequence of the event it saw last. It saw no
// stale event, so that is where its story stands. An error is NATS's, and
// the fence it comes with is only good for pinging the client.
func (h *Hub) fenceAt(ctx context.Context, w Sink, job string, after uint64) (*fenced, error) {
	f := &fenced{Sink: w, job: job, recs: h.Records, attempt: 1, gapAt: noGap}
	if after == 0 {
		return f, nil
	}
	m, err := h.narr.Get(ctx, after, "")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return f, nil
	}
	if err != nil {
		return f, err
	}
	j, writer, kind, ok := bus.ParseNarr(m.Subject)
	if !ok || j != job {
		return f, nil
	}
	fr := Frame{Writer: writer, Kind: kind, Data: m.Data, Attempt: bus.EndAttempt(m.Subject), Header: m.Header}
	fr.decode(job)
	f.attempt, f.seq, f.trust.seq = max(fr.c.attempt, 1), fr.c.seq, fr.c.seq
	return f, nil
}
