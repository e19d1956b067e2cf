package relay

import (
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// maxJump is the largest step between one accepted job sequence and the
// next. Writers number a job's events one by one, so no real step comes
// near it; a huge one would make every later event look like a copy already
// sent.
const maxJump = 1 << 24

// Records finds a job's record: the fallback for which hive an attempt
// belongs to when the queen's own events naming it were not read.
type Records interface {
	Job(id string) (api.Job, bool)
}

// frameEvent is what the relay reads of a frame's body with scanEvent:
// fields of api.Event. The strings point into the body.
type frameEvent struct {
	JobID   []byte
	Seq     uint64
	Attempt int
	Action  []byte
	State   []byte
	Hive    []byte
}

// claims is what the relay judges a frame by: its headers (bus.Meta), or,
// for a frame stored before writers set headers, its body.
type claims struct {
	seq     uint64
	attempt int
	// hive is the hive a queen's event hands its attempt to.
	hive string
}

// trust is what a reader has learned of one job: which hive each attempt
// was dispatched to, from the queen's events, and the newest job sequence
// it accepted.
type trust struct {
	hives map[int]string
	seq   uint64
}

// decode reads f's claims once; a frame that is not an event of job, or an
// end that does not end, gets its reject reason. The headers decide, and
// the body, which clients are sent as it is, must say the same: a hostile
// hive writes both, so each is a claim checked as the body's fields were
// before headers carried them.
func (f *Frame) decode(job string) {
	if f.decoded {
		return
	}
	f.decoded = true
	switch f.Kind {
	case bus.KindEvent, bus.KindData, bus.KindStart, bus.KindEnd:
	default:
		f.reject = metrics.RejectInvalid
		return
	}
	if _, ok := f.Header[bus.HeaderSeq]; !ok {
		f.decodeBody(job)
		return
	}
	m := bus.Meta{Job: job, Writer: f.Writer, Kind: f.Kind, Attempt: f.Attempt}
	switch m.ReadHeaders(f.Header) {
	case "":
	case bus.BadSeq:
		f.reject = metrics.RejectSequence
		return
	default:
		f.reject = metrics.RejectInvalid
		return
	}
	f.c = claims{seq: m.Seq, attempt: m.Attempt, hive: m.Hive}
	if f.Kind != bus.KindEnd {
		if !checkBody(f.Data, job, m.Seq, m.Attempt) {
			f.reject = metrics.RejectInvalid
		}
		return
	}
	// An end is one frame an attempt, and its state is read from the body
	// clients are sent; its attempt is its subject's.
	var ev frameEvent
	if !scanEvent(f.Data, &ev) || string(ev.JobID) != job || ev.Seq != m.Seq {
		f.reject = metrics.RejectInvalid
		return
	}
	if !api.Terminal(string(ev.State)) {
		f.reject = metrics.RejectNotTerminal
	}
}

// decodeBody reads the claims of a frame stored without headers from its
// body.
func (f *Frame) decodeBody(job string) {
	var ev frameEvent
	if !scanEvent(f.Data, &ev) || string(ev.JobID) != job {
		f.reject = metrics.RejectInvalid
		return
	}
	if f.Kind == bus.KindEnd {
		if !api.Terminal(string(ev.State)) {
			f.reject = metrics.RejectNotTerminal
			return
		}
		// The subject, not the body, says which attempt an end ends.
		ev.Attempt = f.Attempt
	}
	f.c = claims{seq: ev.Seq, attempt: max(ev.Attempt, 1), hive: string(ev.Hive)}
	if ev.Seq == 0 {
		f.reject = metrics.RejectSequence
	}
}

// judge returns why f must not reach a reader that learned t, "" when it
// may, and then learns from it. Only the queen and the hive that the
// frame's attempt was dispatched to write a job's story.
func (t *trust) judge(job string, f *Frame, recs Records) string {
	f.decode(job)
	if f.reject != "" {
		return f.reject
	}
	if f.Writer != bus.QueenWriter && !t.writes(job, f.Writer, f.c.attempt, f.Seq, recs) {
		return metrics.RejectWriter
	}
	if t.seq > 0 && f.c.seq > t.seq+maxJump {
		return metrics.RejectSequence
	}
	t.learn(f)
	return ""
}

// learn takes in an accepted frame: the queen's events name the hive of
// their attempt.
func (t *trust) learn(f *Frame) {
	if f.places() {
		if t.hives == nil {
			t.hives = map[int]string{}
		}
		t.hives[f.c.attempt] = f.c.hive
	}
	t.seq = max(t.seq, f.c.seq)
}

// merge takes in what another reader of the same job learned.
func (t *trust) merge(o *trust) {
	for attempt, hive := range o.hives {
		if _, ok := t.hives[attempt]; !ok {
			if t.hives == nil {
				t.hives = map[int]string{}
			}
			t.hives[attempt] = hive
		}
	}
	t.seq = max(t.seq, o.seq)
}

// places reports whether f is a queen's event that hands its attempt to a
// hive: the job's creation, its placing, or its re-placing after its hive
// was lost.
func (f *Frame) places() bool {
	return f.Writer == bus.QueenWriter && f.Kind == bus.KindEvent && f.c.hive != ""
}

// writes reports whether hive wrote attempt of job in the frame stored at
// seq: as the queen's events said, or, for an attempt they did not name,
// as the job's record says.
func (t *trust) writes(job, hive string, attempt int, seq uint64, recs Records) bool {
	if h, ok := t.hives[attempt]; ok {
		return h == hive
	}
	if recs == nil {
		return false
	}
	rec, ok := recs.Job(job)
	return ok && store.Writes(rec, hive, attempt, seq)
}
