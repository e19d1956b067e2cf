package relay

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func TestScanEvent(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		seq  uint64
		att  int
		job  string
		hive string
	}{
		{`{"job_id":"j1","seq":7,"time":"2026-01-01T00:00:00Z","attempt":2,"hive":"h1","data":{"a":[1,2.5e3,-0.5,true,null,{"b":"\u00e9\"x"}]}}`, true, 7, 2, "j1", "h1"},
		{` { "seq" : 1 , "job_id" : "j1" } `, true, 1, 0, "j1", ""},
		{`{}`, true, 0, 0, "", ""},
		{`{"job_id":"j1","seq":1}x`, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":1.5}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":-1}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":99999999999999999999}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":01}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","message":"a\qb"}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","message":"unterminated}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","data":[1,2}`, false, 0, 0, "", ""},
		{`{"job_id":j1}`, false, 0, 0, "", ""},
		{`[]`, false, 0, 0, "", ""},
		{`nope`, false, 0, 0, "", ""},
		{``, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":1,"seq":2}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":1,"job_id":"j2"}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":1,"s\u0065q":2}`, false, 0, 0, "", ""},
		{`{"job_id":"j1","seq":1,"data":{"seq":2,"s\u0065q":3}}`, true, 1, 0, "j1", ""},
	}
	for _, tt := range tests {
		var ev frameEvent
		ok := scanEvent([]byte(tt.in), &ev)
		if ok != tt.ok || (ok && (ev.Seq != tt.seq || ev.Attempt != tt.att || string(ev.JobID) != tt.job || string(ev.Hive) != tt.hive)) {
			t.Errorf("scanEvent(%s) = %v %+v", tt.in, ok, ev)
		}
	}
}

// What scanEvent accepts, encoding/json reads the same way.
func FuzzScanEvent(f *testing.F) {
	f.Add(`{"job_id":"j1","seq":7,"attempt":2,"action":"end","state":"done","hive":"h1","data":{"a":[1,"x"]}}`)
	f.Add(`{"seq":1}`)
	f.Fuzz(func(t *testing.T, in string) {
		var ev frameEvent
		if !scanEvent([]byte(in), &ev) {
			return
		}
		// Keys are matched exactly, as JSON clients do (encoding/json
		// alone also matches them ignoring case).
		d := json.NewDecoder(strings.NewReader(in))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("scanEvent accepted what encoding/json refuses: %v", err)
		}
		for key, got := range map[string]uint64{"seq": ev.Seq, "attempt": uint64(ev.Attempt)} {
			want := uint64(0)
			if n, ok := m[key].(json.Number); ok {
				v, err := strconv.ParseUint(string(n), 10, 64)
				if err != nil {
					t.Fatalf("%s %s read as %d", key, n, got)
				}
				want = v
			}
			if got != want {
				t.Fatalf("%s %d, encoding/json %d", key, got, want)
			}
		}
		if id, ok := m["job_id"].(string); ok && !strings.Contains(in, `\`) && id != string(ev.JobID) {
			t.Fatalf("job_id %q, encoding/json %q", ev.JobID, id)
		}
	})
}
