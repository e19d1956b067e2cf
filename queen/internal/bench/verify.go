package bench

import (
	"bytes"
	"fmt"
	"math/bits"
	"sync"
	"time"
)

// placedAction marks the queen's event that places a job that waited.
var placedAction = []byte(`"action":"placed"`)

// maxSeq bounds the per-job sequences a verifier tracks, so a corrupt frame
// cannot make it allocate without limit.
const maxSeq = 1 << 32

// Verifier checks one job's narration as one client sees it, across any
// number of reconnects: every per-job sequence from 1 to the end event's
// arrives exactly once and in order, exactly one end event arrives and it is
// the last event, [DONE] follows it, and stream ids only grow. It reads the
// "seq", "job_id" and "state" fields straight from the JSON bytes, which is
// exact for the events a queen stores (fields in struct order, strings
// escaped) and keeps a million-event stream cheap to check.
type Verifier struct {
	// JobID, when set, must be the job_id of every event.
	JobID string
	// Expect, when not 0, is the per-job sequence the end event must carry.
	Expect uint64
	// WantState is the end state the job must reach; empty means "done".
	WantState string

	prefix   []byte   // how every event of JobID begins
	seen     []uint64 // bit per per-job sequence
	distinct uint64
	maxSeq   uint64
	lastID   uint64
	frames   uint64
	dups     uint64
	ooo      uint64
	idBack   uint64
	bad      uint64
	ends     int
	endSeq   uint64
	state    string
	done     bool
	afterEnd uint64
	afterDon uint64
	problems []string
}

// Observe records one frame.
func (v *Verifier) Observe(f Frame) {
	if f.Done {
		switch {
		case v.done:
			v.problem("a second [DONE]")
		case v.ends == 0:
			v.problem("[DONE] before the end event")
		}
		v.done = true
		return
	}
	v.frames++
	if v.done {
		v.afterDon++
	}
	if !f.HasID {
		v.bad++
		v.problem("a frame without an id")
	} else if f.ID <= v.lastID {
		v.idBack++
	} else {
		v.lastID = f.ID
	}
	seq, ok := SeqOf(f.Data)
	if !ok || seq == 0 || seq >= maxSeq {
		v.bad++
		v.problem(fmt.Sprintf("a frame without a valid seq: %.80q", f.Data))
		return
	}
	if v.JobID != "" && v.prefix == nil {
		v.prefix = []byte(`{"job_id":"` + v.JobID + `"`)
	}
	if v.prefix != nil && !bytes.HasPrefix(f.Data, v.prefix) {
		v.bad++
		v.problem(fmt.Sprintf("an event of another job: %.80q", f.Data))
		return
	}
	if v.ends > 0 {
		v.afterEnd++
	}
	if seq == 2 && v.Expect != 0 && bytes.Contains(f.Data, placedAction) {
		// The job waited for a hive with room, and the queen says where
		// it went: one event more than the job's own.
		v.Expect++
	}
	if f.Kind == KindEnd {
		v.ends++
		if v.ends == 1 {
			v.endSeq = seq
			v.state = StateOf(f.Data)
		}
	}
	w := int(seq >> 6)
	if w >= len(v.seen) {
		v.seen = append(v.seen, make([]uint64, w+1-len(v.seen)+len(v.seen)/4)...)
	}
	bit := uint64(1) << (seq & 63)
	switch {
	case v.seen[w]&bit != 0:
		v.dups++
		return
	case seq < v.maxSeq:
		v.ooo++
	default:
		v.maxSeq = seq
	}
	v.seen[w] |= bit
	v.distinct++
}

// LastID is the stream id of the newest frame seen: the Last-Event-ID a
// reconnecting client sends.
func (v *Verifier) LastID() uint64 { return v.lastID }

// Ended reports whether the end event has arrived.
func (v *Verifier) Ended() bool { return v.ends > 0 }

// Done reports whether the closing [DONE] has arrived.
func (v *Verifier) Done() bool { return v.done }

func (v *Verifier) problem(s string) {
	if len(v.problems) < 5 {
		v.problems = append(v.problems, s)
	}
}

// Result is the verdict on one stream.
type Result struct {
	Frames     uint64 // events received, repeats included
	Events     uint64 // distinct per-job sequences received
	Lost       uint64 // sequences up to the end's that never arrived
	Duplicated uint64 // sequences that arrived more than once
	OutOfOrder uint64 // sequences that arrived after a higher one
	State      string // the end state, empty without an end
	Problems   []string
}

// OK reports whether the stream was whole.
func (r Result) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.OutOfOrder == 0 && len(r.Problems) == 0
}

// Result judges what was observed so far; call it when the stream is over.
func (v *Verifier) Result() Result {
	r := Result{Frames: v.frames, Events: v.distinct, Duplicated: v.dups, OutOfOrder: v.ooo, State: v.state}
	r.Problems = append(r.Problems, v.problems...)
	n := v.Expect
	if n == 0 {
		n = v.maxSeq
		if v.ends > 0 {
			n = v.endSeq
		}
	}
	r.Lost = n - v.countUpTo(n)
	want := v.WantState
	if want == "" {
		want = "done"
	}
	switch {
	case v.ends == 0:
		r.Problems = append(r.Problems, fmt.Sprintf("no end event (newest seq %d)", v.maxSeq))
	case v.ends > 1:
		r.Problems = append(r.Problems, fmt.Sprintf("%d end events", v.ends))
	}
	if v.ends > 0 && v.state != want {
		r.Problems = append(r.Problems, fmt.Sprintf("end state %q, want %q", v.state, want))
	}
	if v.ends > 0 && v.Expect != 0 && v.endSeq != v.Expect {
		r.Problems = append(r.Problems, fmt.Sprintf("end event has seq %d, want %d", v.endSeq, v.Expect))
	}
	if v.maxSeq > n {
		r.Problems = append(r.Problems, fmt.Sprintf("events up to seq %d past the end at %d", v.maxSeq, n))
	}
	if v.afterEnd > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d events after the end event", v.afterEnd))
	}
	if v.ends > 0 && !v.done {
		r.Problems = append(r.Problems, "no [DONE] after the end event")
	}
	if v.afterDon > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d events after [DONE]", v.afterDon))
	}
	if v.idBack > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d frames whose id did not grow", v.idBack))
	}
	return r
}

// countUpTo counts the distinct sequences 1..n that arrived.
func (v *Verifier) countUpTo(n uint64) uint64 {
	var c uint64
	full := int((n + 1) >> 6) // words wholly at or below n
	for i := 0; i < full && i < len(v.seen); i++ {
		c += uint64(bits.OnesCount64(v.seen[i]))
	}
	if full < len(v.seen) {
		rest := (n + 1) & 63 // bits of the next word at or below n
		c += uint64(bits.OnesCount64(v.seen[full] & (uint64(1)<<rest - 1)))
	}
	return c
}

var (
	keySeq   = []byte(`"seq":`)
	keyState = []byte(`"state":"`)
	keyTime  = []byte(`"time":"`)
)

// TimeOf reads the top-level "time" of an event, the zero time if it has
// none. time is the third field, before any that could nest another.
func TimeOf(data []byte) time.Time {
	i := bytes.Index(data, keyTime)
	if i < 0 {
		return time.Time{}
	}
	d := data[i+len(keyTime):]
	j := bytes.IndexByte(d, '"')
	if j < 0 {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, string(d[:j]))
	return t
}

// SeqOf reads the top-level "seq" of an event. The first `"seq":` in the
// JSON is the top-level one: seq is the second field of every event, and
// inside a string the quotes are escaped, so the pattern cannot occur there.
func SeqOf(data []byte) (uint64, bool) {
	i := bytes.Index(data, keySeq)
	if i < 0 {
		return 0, false
	}
	d := data[i+len(keySeq):]
	j := 0
	for j < len(d) && d[j] >= '0' && d[j] <= '9' {
		j++
	}
	return parseUint(d[:j])
}

// StateOf reads the top-level "state" of an end event. It is the last
// occurrence: state follows every field that could nest another one.
func StateOf(data []byte) string {
	i := bytes.LastIndex(data, keyState)
	if i < 0 {
		return ""
	}
	d := data[i+len(keyState):]
	j := bytes.IndexByte(d, '"')
	if j < 0 {
		return ""
	}
	return string(d[:j])
}

// Tally adds up the verdicts of many streams; it is safe for concurrent use.
type Tally struct {
	mu         sync.Mutex
	Streams    uint64
	Failed     uint64 // streams with any problem
	Frames     uint64
	Events     uint64
	Lost       uint64
	Duplicated uint64
	OutOfOrder uint64
	// Problems holds the first few problems, each with its job.
	Problems []string
}

// Add records one stream's verdict.
func (t *Tally) Add(job string, r Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Streams++
	t.Frames += r.Frames
	t.Events += r.Events
	t.Lost += r.Lost
	t.Duplicated += r.Duplicated
	t.OutOfOrder += r.OutOfOrder
	if !r.OK() {
		t.Failed++
		for _, p := range r.Problems {
			t.note(fmt.Sprintf("job %s: %s", job, p))
		}
		if r.Lost+r.Duplicated+r.OutOfOrder > 0 {
			t.note(fmt.Sprintf("job %s: lost %d, duplicated %d, out of order %d", job, r.Lost, r.Duplicated, r.OutOfOrder))
		}
	}
}

// Fail records a stream or job that could not be followed at all.
func (t *Tally) Fail(job string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Streams++
	t.Failed++
	t.note(fmt.Sprintf("job %s: %v", job, err))
}

func (t *Tally) note(s string) {
	if len(t.Problems) < 10 {
		t.Problems = append(t.Problems, s)
	}
}

// OK reports whether every stream was whole.
func (t *Tally) OK() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.Failed == 0 && t.Lost == 0 && t.Duplicated == 0 && t.OutOfOrder == 0
}

// Merge adds o's counts to t.
func (t *Tally) Merge(o *Tally) {
	o.mu.Lock()
	streams, failed, frames, events := o.Streams, o.Failed, o.Frames, o.Events
	lost, dups, ooo := o.Lost, o.Duplicated, o.OutOfOrder
	problems := append([]string(nil), o.Problems...)
	o.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Streams += streams
	t.Failed += failed
	t.Frames += frames
	t.Events += events
	t.Lost += lost
	t.Duplicated += dups
	t.OutOfOrder += ooo
	for _, p := range problems {
		t.note(p)
	}
}
