package relay

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckBody(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{`{"job_id":"j1","seq":7,"time":"2026-01-01T00:00:00Z","attempt":2,"data":{"a":[1,2.5e3,-0.5,true,null,{"b":"\u00e9\"x"}]}}`, true},
		{` { "seq" : 7 , "job_id" : "j1", "attempt": 2 } `, true},
		{`{"job_id":"j1","seq":7,"attempt":2,"seq":7}`, false},
		{`{"job_id":"j1","seq":7}`, false},
		{`{"job_id":"j1","seq":7,"attempt":2,"seq":8}`, false},
		{`{"job_id":"j1","seq":8,"attempt":2}`, false},
		{`{"job_id":"j2","seq":7,"attempt":2}`, false},
		{`{"job_id":"j1","seq":7,"attempt":1}`, false},
		{`{"job_id":"j1","seq":7,"attempt":"2"}`, false},
		{`{"job_id":"j1","seq":"7"}`, false},
		{`{"job_id":"j1"}`, false},
		{`{"seq":7}`, false},
		{`{"job_id":"j1","seq":7,"j\u006fb_id":"j2"}`, false},
		{`{"job_id":"j1","seq":7}x`, false},
		{`{"job_id":"j1","seq":7,"message":"a` + "\n" + `b"}`, false},
		{`{"job_id":"j1","seq":7,"message":"` + "\xe8" + `"}`, false},
		{`{}`, false},
		{``, false},
	}
	for _, tt := range tests {
		if got := checkBody([]byte(tt.in), "j1", 7, 2); got != tt.ok {
			t.Errorf("checkBody(%s) = %v, want %v", tt.in, got, tt.ok)
		}
	}
}

// plainRun stops exactly where a byte-by-byte look would, wherever the
// byte sits in a word.
func TestPlainRun(t *testing.T) {
	for c := 0; c < 256; c++ {
		special := c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf
		for pos := 0; pos < 20; pos++ {
			b := []byte(strings.Repeat("a", 20))
			b[pos] = byte(c)
			want := len(b)
			if special {
				want = pos
			}
			if got := plainRun(b, 0); got != want {
				t.Fatalf("byte %#x at %d: plainRun %d, want %d", c, pos, got, want)
			}
		}
	}
}

// What checkBody accepts, encoding/json reads as an object saying the same
// job, sequence and attempt.
func FuzzCheckBody(f *testing.F) {
	f.Add(`{"job_id":"j1","seq":7,"attempt":2,"action":"x","hive":"h1","data":{"a":[1,"x"]}}`, uint64(7), 2)
	f.Add(`{"job_id":"j1","seq":1}`, uint64(1), 1)
	f.Fuzz(func(t *testing.T, in string, seq uint64, attempt int) {
		if !checkBody([]byte(in), "j1", seq, attempt) {
			return
		}
		d := json.NewDecoder(strings.NewReader(in))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("checkBody accepted what encoding/json refuses: %v", err)
		}
		if d.More() {
			t.Fatalf("checkBody accepted trailing data")
		}
		if id, _ := m["job_id"].(string); id != "j1" {
			t.Fatalf("job_id %q", id)
		}
		n, _ := m["seq"].(json.Number)
		if got, err := strconv.ParseUint(string(n), 10, 64); err != nil || got != seq {
			t.Fatalf("seq %s, header %d", n, seq)
		}
		got := uint64(1)
		if n, ok := m["attempt"].(json.Number); ok {
			v, err := strconv.ParseUint(string(n), 10, 64)
			if err != nil {
				t.Fatalf("attempt %s", n)
			}
			got = max(v, 1)
		}
		if got != uint64(attempt) {
			t.Fatalf("attempt %d, header %d", got, attempt)
		}
	})
}
