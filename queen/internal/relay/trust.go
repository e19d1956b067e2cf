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

// frameEvent is what the relay reads of a frame's body, once, with
// scanEvent: fields of api.Event. The strings point into the body.
type frameEvent struct {
	JobID   []byte
	Seq     uint64
	Attempt int
	Action  []byte
	State   []byte
	Hive    []byte
}

// trust is what a reader has learned of one job: which hive each attempt
// was dispatched to, from the queen's events, and the newest job sequence
// it accepted.
type trust struct {
	hives map[int]string
	seq   uint64
}

// decode reads f's body once; a frame that is not an event of job, or an
// end that does not end, gets its reject reason.
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
	if !scanEvent(f.Data, &f.ev) || string(f.ev.JobID) != job {
		f.reject = metrics.RejectInvalid
		return
	}
	if f.Kind == bus.KindEnd {
		if !api.Terminal(string(f.ev.State)) {
			f.reject = metrics.RejectNotTerminal
			return
		}
		// The subject, not the body, says which attempt an end ends.
		f.ev.Attempt = f.Attempt
	}
	f.ev.Attempt = max(f.ev.Attempt, 1)
	if f.ev.Seq == 0 {
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
	if f.Writer != bus.QueenWriter && !t.writes(job, f.Writer, f.ev.Attempt, recs) {
		return metrics.RejectWriter
	}
	if t.seq > 0 && f.ev.Seq > t.seq+maxJump {
		return metrics.RejectSequence
	}
	t.learn(f)
	return ""
}

// learn takes in an accepted frame: the queen's events name the hive of
// their attempt.
func (t *trust) learn(f *Frame) {
	if f.Writer == bus.QueenWriter && f.Kind == bus.KindEvent && len(f.ev.Hive) > 0 {
		if t.hives == nil {
			t.hives = map[int]string{}
		}
		t.hives[f.ev.Attempt] = string(f.ev.Hive)
	}
	t.seq = max(t.seq, f.ev.Seq)
}

// writes reports whether hive wrote attempt of job: as the queen's events
// said, or, for an attempt they did not name, as the job's record says.
func (t *trust) writes(job, hive string, attempt int, recs Records) bool {
	if h, ok := t.hives[attempt]; ok {
		return h == hive
	}
	if recs == nil {
		return false
	}
	rec, ok := recs.Job(job)
	return ok && store.Writes(rec, hive, attempt)
}
