package relay

import (
	"fmt"
	"testing"

	"rbee.dev/shared/subject"
)

// sink records what reaches the client.
type sink struct{ seqs []uint64 }

func (s *sink) Frame(f Frame) error {
	n, _ := eventSeq(f.Data)
	s.seqs = append(s.seqs, n)
	return nil
}
func (s *sink) Comment(string) error { return nil }
func (s *sink) Done() error          { return nil }
func (s *sink) Flush() error         { return nil }

func ev(writer string, seq uint64, attempt int, action string) Frame {
	return Frame{Writer: writer, Kind: subject.KindEvent,
		Data: []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"attempt":%d,"action":%q,"message":"\"seq\":99"}`, seq, attempt, action))}
}

// What a client is sent: each job sequence once, in order, and nothing a
// replaced attempt's hive still writes.
func TestFence(t *testing.T) {
	tests := []struct {
		name   string
		frames []Frame
		want   []uint64
	}{
		{"in order", []Frame{ev("h1", 1, 1, "a"), ev("h1", 2, 1, "b"), ev("h1", 3, 1, "c")}, []uint64{1, 2, 3}},
		{"a resent copy", []Frame{ev("h1", 1, 1, "a"), ev("h1", 2, 1, "b"), ev("h1", 2, 1, "b"), ev("h1", 3, 1, "c")}, []uint64{1, 2, 3}},
		{"a replaced attempt", []Frame{ev("h1", 1, 1, "a"), ev(subject.QueenWriter, 2, 2, "replaced"), ev("h1", 3, 1, "late"), ev("h2", 3, 2, "new")}, []uint64{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			f := &fenced{Sink: s, attempt: 1}
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

func TestEventSeq(t *testing.T) {
	for in, want := range map[string]uint64{`{"job_id":"x","seq":42,"message":"\"seq\":7"}`: 42, `{"seq":0}`: 0} {
		if got, ok := eventSeq([]byte(in)); !ok || got != want {
			t.Errorf("eventSeq(%s) = %d, %v", in, got, ok)
		}
	}
	if _, ok := eventSeq([]byte(`{"job_id":"x"}`)); ok {
		t.Error("no seq read as one")
	}
}
