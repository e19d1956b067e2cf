package relay

import (
	"encoding/json"
	"fmt"
	"testing"

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
		Data: []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"attempt":%d,"action":%q,"message":"\"seq\":99"}`, seq, attempt, action))}
}

// placed is the queen's event that hands attempt to hive.
func placed(seq uint64, attempt int, action, hive string) Frame {
	return Frame{Writer: bus.QueenWriter, Kind: bus.KindEvent,
		Data: []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"attempt":%d,"action":%q,"hive":%q}`, seq, attempt, action, hive))}
}

func end(writer string, seq uint64, attempt int, state string) Frame {
	return Frame{Writer: writer, Kind: bus.KindEnd, Attempt: attempt,
		Data: []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"state":%q}`, seq, state))}
}

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
		{"another hive", nil, []Frame{placed(1, 1, "job_created", "h1"), ev("h2", 2, 1, "forged"), end("h2", 2, 1, "done"), ev("h1", 2, 1, "b")}, []uint64{1, 2}},
		{"the record names the hive", records{"j1": {JobID: "j1", Hive: "h1", Attempt: 1}}, []Frame{ev("h2", 5, 1, "forged"), ev("h1", 5, 1, "b")}, []uint64{5}},
		{"the lost hive claims the new attempt", nil, []Frame{placed(1, 1, "job_created", "h1"), placed(2, 2, "replaced", "h2"), ev("h1", 3, 2, "forged"), end("h1", 3, 2, "done"), ev("h2", 3, 2, "new")}, []uint64{1, 2, 3}},
		{"an end that does not end", nil, []Frame{placed(1, 1, "job_created", "h1"), end("h1", 2, 1, "running"), end("h1", 2, 1, "done")}, []uint64{1, 2}},
		{"absurd sequences", nil, []Frame{placed(1, 1, "job_created", "h1"), ev("h1", 0, 1, "zero"), ev("h1", 1<<62, 1, "huge"), ev("h1", 2, 1, "b")}, []uint64{1, 2}},
		{"not an event of the job", nil, []Frame{placed(1, 1, "job_created", "h1"), {Writer: "h1", Kind: bus.KindEvent, Data: []byte(`{"job_id":"j2","seq":2}`)}, {Writer: "h1", Kind: bus.KindData, Data: []byte(`nope`)}, ev("h1", 2, 1, "b")}, []uint64{1, 2}},
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
				if _, err := f.send(fr); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(s.seqs) != fmt.Sprint(tt.want) {
				t.Fatalf("sent %v, want %v", s.seqs, tt.want)
			}
		})
	}
}
