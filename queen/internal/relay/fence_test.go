package relay

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"rbee.dev/queen/internal/metrics"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// sink records what reaches the client.
type sink struct{ seqs []uint64 }

func (s *sink) Frame(f Frame) error {
	var e struct{ Seq uint64 }
	_ = json.Unmarshal(f.Data, &e)
	s.seqs = append(s.seqs, e.Seq)
	return nil
}
func (s *sink) Comment(string) error { return nil }
func (s *sink) Done() error          { return nil }
func (s *sink) Flush() error         { return nil }

func ev(writer string, seq uint64, attempt int, action string) Frame {
	return Frame{Writer: writer, Kind: bus.KindEvent,
		Data:   []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"attempt":%d,"action":%q,"message":"\"seq\":99"}`, seq, attempt, action)),
		Header: header(writer, bus.KindEvent, seq, attempt, "")}
}

// placed is the queen's event that hands attempt to hive.
func placed(seq uint64, attempt int, action, hive string) Frame {
	return Frame{Writer: bus.QueenWriter, Kind: bus.KindEvent,
		Data:   []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"attempt":%d,"action":%q,"hive":%q}`, seq, attempt, action, hive)),
		Header: header(bus.QueenWriter, bus.KindEvent, seq, attempt, hive)}
}

func end(writer string, seq uint64, attempt int, state string) Frame {
	return Frame{Writer: writer, Kind: bus.KindEnd, Attempt: attempt,
		Data:   []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"state":%q}`, seq, state)),
		Header: header(writer, bus.KindEnd, seq, attempt, "")}
}

// header is what a writer's frame claims in its headers.
func header(writer, kind string, seq uint64, attempt int, hive string) nats.Header {
	return bus.Meta{Job: "j1", Writer: writer, Kind: kind, Seq: seq, Attempt: attempt, Hive: hive}.Msg(nil).Header
}

// with returns f with one header changed.
func with(f Frame, key, value string) Frame {
	h := nats.Header{}
	for k, v := range f.Header {
		h[k] = v
	}
	h.Set(key, value)
	f.Header = h
	return f
}

// at is f as stored at stream sequence seq.
func at(f Frame, seq uint64) Frame { f.Seq = seq; return f }

// moved is the record of job j1 that h1 lost after the stream's 10th
// message, now on h2.
var moved = records{"j1": {JobID: "j1", Hive: "h2", Attempt: 2, PastHives: []api.PastHive{{Hive: "h1", Until: 10}}}}

type records map[string]api.Job

func (r records) Job(id string) (api.Job, bool) { j, ok := r[id]; return j, ok }

// What a client is sent: each job sequence once, in order, nothing a
// replaced attempt's hive still writes, and nothing but what the queen and
// the hive of the frame's attempt write.
func TestFence(t *testing.T) {
	tests := []struct {
		name   string
		recs   records
		frames []Frame
		want   []uint64
	}{
		{"in order", nil, []Frame{placed(1, 1, "job_created", "h1"), ev("h1", 2, 1, "b"), ev("h1", 3, 1, "c")}, []uint64{1, 2, 3}},
		{"a resent copy", nil, []Frame{placed(1, 1, "job_created", "h1"), ev("h1", 2, 1, "b"), ev("h1", 2, 1, "b"), ev("h1", 3, 1, "c")}, []uint64{1, 2, 3}},
		{"a replaced attempt", nil, []Frame{placed(1, 1, "job_created", "h1"), placed(2, 2, "replaced", "h2"), ev("h1", 3, 1, "late"), ev("h2", 3, 2, "new")}, []uint64{1, 2, 3}},
		{"a generation moved back into its queue", nil, []Frame{placed(1, 1, "job_created", "h1"), ev("h1", 2, 1, "chunk"), placed(3, 2, "moved", ""),
			ev("h1", 4, 1, "late"), placed(5, 2, "placed", "h2"), ev("h2", 6, 2, "chunk")}, []uint64{1, 2, 3, 5, 6}},
		{"another hive", nil, []Frame{placed(1, 1, "job_created", "h1"), ev("h2", 2, 1, "forged"), end("h2", 2, 1, "done"), ev("h1", 2, 1, "b")}, []uint64{1, 2}},
		{"the record names the hive", records{"j1": {JobID: "j1", Hive: "h1", Attempt: 1}}, []Frame{ev("h2", 5, 1, "forged"), ev("h1", 5, 1, "b")}, []uint64{5}},
		// A client resuming in attempt 1 after the job moved on (its fence
		// learned no placing event) still gets what the first hive wrote
		// before the move, and nothing from a hive that never had it.
		{"resumed after the job moved", moved,
			[]Frame{at(ev("h3", 5, 1, "forged"), 9), at(ev("h1", 5, 1, "before"), 10), at(placed(6, 2, "replaced", "h2"), 11), at(ev("h1", 7, 1, "late"), 12), at(ev("h2", 7, 2, "new"), 13)}, []uint64{5, 6, 7}},
		// A reader that learned nothing of the move (its resume point could
		// not be read) gets nothing the first hive stored after the move,
		// however it numbers it.
		{"the lost hive writes on after the move", moved,
			[]Frame{at(ev("h1", 9, 1, "forged"), 12), at(ev("h1", 1<<20, 1, "huge"), 13), at(ev("h2", 8, 2, "real"), 14), at(ev("h2", 9, 2, "real"), 15)}, []uint64{8, 9}},
		{"the lost hive claims the new attempt", nil, []Frame{placed(1, 1, "job_created", "h1"), placed(2, 2, "replaced", "h2"), ev("h1", 3, 2, "forged"), end("h1", 3, 2, "done"), ev("h2", 3, 2, "new")}, []uint64{1, 2, 3}},
		{"an end that does not end", nil, []Frame{placed(1, 1, "job_created", "h1"), end("h1", 2, 1, "running"), end("h1", 2, 1, "done")}, []uint64{1, 2}},
		{"absurd sequences", nil, []Frame{placed(1, 1, "job_created", "h1"), ev("h1", 0, 1, "zero"), ev("h1", 1<<62, 1, "huge"), ev("h1", 2, 1, "b")}, []uint64{1, 2}},
		{"not an event of the job", nil, []Frame{placed(1, 1, "job_created", "h1"), {Writer: "h1", Kind: bus.KindEvent, Data: []byte(`{"job_id":"j2","seq":2}`), Header: header("h1", bus.KindEvent, 2, 1, "")}, {Writer: "h1", Kind: bus.KindData, Data: []byte(`nope`), Header: header("h1", bus.KindData, 2, 1, "")}, ev("h1", 2, 1, "b")}, []uint64{1, 2}},
		{"a placing event from a hive", nil, []Frame{placed(1, 1, "job_created", "h1"), with(ev("h1", 2, 2, "forged"), bus.HeaderHive, "h1"), ev("h1", 3, 1, "b")}, []uint64{1, 3}},
	}
	// The same stories told by frames stored before writers set headers,
	// which the relay judges by their bodies.
	for _, tt := range tests {
		t.Run("body/"+tt.name, func(t *testing.T) {
			s := &sink{}
			var recs Records
			if tt.recs != nil {
				recs = tt.recs
			}
			f := &fenced{Sink: s, job: "j1", recs: recs, attempt: 1}
			for _, fr := range tt.frames {
				fr.Header = nil
				if _, err := f.send(fr, false); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(s.seqs) != fmt.Sprint(tt.want) {
				t.Fatalf("sent %v, want %v", s.seqs, tt.want)
			}
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			var recs Records
			if tt.recs != nil {
				recs = tt.recs
			}
			f := &fenced{Sink: s, job: "j1", recs: recs, attempt: 1}
			for _, fr := range tt.frames {
				if _, err := f.send(fr, false); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(s.seqs) != fmt.Sprint(tt.want) {
				t.Fatalf("sent %v, want %v", s.seqs, tt.want)
			}
		})
	}
}

// Headers and body are both the writer's claims: a frame whose headers say
// another thing than its body, or than its subject, is dropped and
// counted as invalid, however the rest of it looks.
func TestHeaderClaims(t *testing.T) {
	good := ev("h1", 2, 1, "b")
	tests := []struct {
		name   string
		f      Frame
		reject string
	}{
		{"agreeing", good, ""},
		{"another writer than the subject", with(good, bus.HeaderWriter, "h2"), metrics.RejectInvalid},
		{"another kind than the subject", with(good, bus.HeaderKind, bus.KindData), metrics.RejectInvalid},
		{"a sequence the body does not say", with(good, bus.HeaderSeq, "3"), metrics.RejectInvalid},
		{"an attempt the body does not say", with(good, bus.HeaderAttempt, "2"), metrics.RejectInvalid},
		{"a sequence that is no number", with(good, bus.HeaderSeq, "2x"), metrics.RejectInvalid},
		{"sequence 0", Frame{Writer: "h1", Kind: bus.KindEvent, Data: []byte(`{"job_id":"j1","seq":0}`), Header: header("h1", bus.KindEvent, 0, 1, "")}, metrics.RejectSequence},
		{"a placing hive that is no token", with(placed(1, 1, "job_created", "h1"), bus.HeaderHive, "h 1"), metrics.RejectInvalid},
		{"the body repeats seq", Frame{Writer: "h1", Kind: bus.KindEvent, Data: []byte(`{"job_id":"j1","seq":2,"seq":99}`), Header: header("h1", bus.KindEvent, 2, 1, "")}, metrics.RejectInvalid},
		{"an escaped key", Frame{Writer: "h1", Kind: bus.KindEvent, Data: []byte(`{"job_id":"j1","seq":2,"s\u0065q":99}`), Header: header("h1", bus.KindEvent, 2, 1, "")}, metrics.RejectInvalid},
		{"a body without its job", Frame{Writer: "h1", Kind: bus.KindEvent, Data: []byte(`{"seq":2}`), Header: header("h1", bus.KindEvent, 2, 1, "")}, metrics.RejectInvalid},
		{"a body that is no JSON", Frame{Writer: "h1", Kind: bus.KindEvent, Data: []byte(`{"job_id":"j1","seq":2,"message":"a` + "\n" + `"}`), Header: header("h1", bus.KindEvent, 2, 1, "")}, metrics.RejectInvalid},
		{"an end of another sequence", with(end("h1", 2, 1, "done"), bus.HeaderSeq, "3"), metrics.RejectInvalid},
		{"an end that does not end", end("h1", 2, 1, "running"), metrics.RejectNotTerminal},
		{"an end claiming another attempt than its subject", with(end("h1", 2, 1, "done"), bus.HeaderAttempt, "2"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &trust{hives: map[int]string{1: "h1"}}
			f := tt.f
			if got := tr.judge("j1", &f, nil); got != tt.reject {
				t.Fatalf("judged %q, want %q", got, tt.reject)
			}
		})
	}
}
