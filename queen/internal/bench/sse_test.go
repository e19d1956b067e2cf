package bench_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"rbee.dev/queen/internal/bench"
)

const job = "01a226f6902f4cdec26c6544f85a"

// frame renders one SSE event as a queen writes it.
func frame(id uint64, kind string, seq uint64, extra string) string {
	return fmt.Sprintf("id: %d\nevent: %s\ndata: {\"job_id\":%q,\"seq\":%d,\"action\":\"x\",\"message\":\"say \\\"seq\\\":99\"%s}\n\n",
		id, kind, job, seq, extra)
}

// stream renders a whole hive_check stream of n check events with stream
// ids starting at base, the opening comment, a heartbeat and [DONE].
func stream(base uint64, n int) string {
	var b strings.Builder
	b.WriteString(": rbee narration for job " + job + "\n\n")
	for seq := uint64(1); seq <= uint64(n)+2; seq++ {
		b.WriteString(frame(base+seq, "narration", seq, ""))
		if seq == 2 {
			b.WriteString(": ping\n\n")
		}
	}
	b.WriteString(frame(base+uint64(n)+3, "end", uint64(n)+3, `,"state":"done"`))
	b.WriteString("data: [DONE]\n\n")
	return b.String()
}

// verify feeds every frame of body to a fresh verifier.
func verify(tb testing.TB, body string, expect uint64, size int) (bench.Result, *bench.Reader) {
	tb.Helper()
	r := bench.NewReader(strings.NewReader(body), size)
	v := &bench.Verifier{JobID: job, Expect: expect}
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			return v.Result(), r
		}
		if err != nil {
			tb.Fatalf("Next: %v", err)
		}
		v.Observe(f)
	}
}

func TestReaderFrames(t *testing.T) {
	body := ": hello\n\nid: 7\r\nevent: end\r\ndata: {\"a\":1}\r\n\r\n" +
		"event: narration\ndata:line1\ndata: line2\n\n" +
		"id: 9\nevent: narration\n\n" + // no data: not dispatched, fields dropped
		"data: [DONE]\n\n" +
		"id: 10\ndata: cut off"
	r := bench.NewReader(iotest.OneByteReader(strings.NewReader(body)), 0)
	var got []string
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d/%t/%s/%s/%t", f.ID, f.HasID, f.Kind, f.Data, f.Done))
	}
	want := []string{
		`7/true/end/{"a":1}/false`,
		"0/false/narration/line1\nline2/false",
		"0/false/other/[DONE]/true",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("frames:\n got %q\nwant %q", got, want)
	}
	if r.Comments != 1 {
		t.Errorf("comments = %d, want 1", r.Comments)
	}
}

func TestReaderLongLine(t *testing.T) {
	payload := strings.Repeat("x", 20000) // longer than the 4 KiB buffer
	body := frame(1, "narration", 1, `,"payload":"`+payload+`"`)
	r := bench.NewReader(strings.NewReader(body), 4096)
	f, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(f.Data), payload) || f.ID != 1 {
		t.Fatalf("long frame not read whole: id %d, %d bytes", f.ID, len(f.Data))
	}
	if r.Bytes != uint64(len(body)) {
		t.Errorf("Bytes = %d, want %d", r.Bytes, len(body))
	}
}

func TestVerifier(t *testing.T) {
	whole := stream(100, 3) // seqs 1..6
	lines := strings.SplitAfter(whole, "\n\n")
	// lines: 0 comment, 1..2 seq 1-2, 3 ping, 4..6 seq 3-5, 7 end (6), 8 [DONE], 9 "".
	join := func(idx ...int) string {
		var b strings.Builder
		for _, i := range idx {
			b.WriteString(lines[i])
		}
		return b.String()
	}
	tests := []struct {
		name            string
		body            string
		expect          uint64
		lost, dups, ooo uint64
		ok              bool
		problem         string
	}{
		{name: "whole", body: whole, expect: 6, ok: true},
		{name: "whole, end unknown", body: whole, expect: 0, ok: true},
		{name: "gap", body: join(0, 1, 2, 4, 6, 7, 8), expect: 6, lost: 1},
		{name: "duplicate", body: join(0, 1, 2, 4, 4, 5, 6, 7, 8), expect: 6, dups: 1, problem: "id did not grow"},
		{name: "out of order", body: join(0, 1, 2, 5, 4, 6, 7, 8), expect: 6, ooo: 1, problem: "id did not grow"},
		{name: "no end", body: join(0, 1, 2, 4, 5, 6), expect: 6, lost: 1, problem: "no end event"},
		{name: "no DONE", body: join(0, 1, 2, 4, 5, 6, 7), expect: 6, problem: "no [DONE]"},
		{name: "two ends", body: join(0, 1, 2, 4, 5, 6, 7, 7, 8), expect: 6, dups: 1, problem: "2 end events"},
		{name: "early end", body: join(0, 1, 2, 4, 5, 6, 7, 8), expect: 7, lost: 1, problem: "end event has seq 6, want 7"},
		{name: "failed", body: strings.Replace(whole, `"state":"done"`, `"state":"failed"`, 1), expect: 6, problem: `end state "failed"`},
		{name: "event after end", body: join(0, 1, 2, 4, 5, 6, 7) + frame(200, "narration", 7, "") + lines[8], problem: "past the end"},
		{name: "other job", body: strings.Replace(whole, `"job_id":"`+job, `"job_id":"x`+job[1:], 1), expect: 6, lost: 1, problem: "another job"},
		{name: "DONE before end", body: join(0, 1, 2, 4, 5, 6, 8, 7), expect: 6, problem: "[DONE] before the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, _ := verify(t, tt.body, tt.expect, 4096)
			if res.Lost != tt.lost || res.Duplicated != tt.dups || res.OutOfOrder != tt.ooo {
				t.Errorf("lost/dup/ooo = %d/%d/%d, want %d/%d/%d (problems %q)", res.Lost, res.Duplicated, res.OutOfOrder,
					tt.lost, tt.dups, tt.ooo, res.Problems)
			}
			if res.OK() != tt.ok {
				t.Errorf("OK = %t, want %t (problems %q)", res.OK(), tt.ok, res.Problems)
			}
			if tt.problem != "" && !strings.Contains(strings.Join(res.Problems, "|"), tt.problem) {
				t.Errorf("problems %q do not mention %q", res.Problems, tt.problem)
			}
		})
	}
}

// TestVerifierResume follows one job over three connections, the way a
// client resumes with Last-Event-ID: the verdict covers them all.
func TestVerifierResume(t *testing.T) {
	lines := strings.SplitAfter(stream(0, 5), "\n\n") // ids = seqs = 1..8
	v := &bench.Verifier{JobID: job, Expect: 8}
	feed := func(parts ...string) {
		r := bench.NewReader(strings.NewReader(strings.Join(parts, "")), 0)
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			v.Observe(f)
		}
	}
	feed(lines[0], lines[1], lines[2]) // seqs 1, 2
	if v.LastID() != 2 || v.Ended() {
		t.Fatalf("after the first connection: last id %d, ended %t", v.LastID(), v.Ended())
	}
	feed(lines[0], lines[4], lines[5], lines[6]) // seqs 3, 4, 5
	feed(lines[0], lines[7], lines[8], lines[9], lines[10])
	if res := v.Result(); !res.OK() || res.Events != 8 || !v.Done() {
		t.Fatalf("resumed stream not whole: %+v", res)
	}
	// A server that replays from the start after a resume repeats events.
	feed(lines[0], lines[1])
	if res := v.Result(); res.Duplicated != 1 || res.OK() {
		t.Fatalf("a repeat after the end went unnoticed: %+v", res)
	}
}

func TestSeqAndStateOf(t *testing.T) {
	data := []byte(`{"job_id":"j","seq":42,"message":"\"seq\":7 \"state\":\"x\"","data":{"seq":9,"state":"inner"},"state":"done"}`)
	if seq, ok := bench.SeqOf(data); !ok || seq != 42 {
		t.Errorf("SeqOf = %d, %t; want 42", seq, ok)
	}
	if s := bench.StateOf(data); s != "done" {
		t.Errorf("StateOf = %q, want done", s)
	}
	if _, ok := bench.SeqOf([]byte(`{"job_id":"j"}`)); ok {
		t.Error("SeqOf found a seq where there is none")
	}
}

func TestTally(t *testing.T) {
	var a, b bench.Tally
	a.Add("j1", bench.Result{Frames: 3, Events: 3})
	b.Add("j2", bench.Result{Frames: 3, Events: 2, Lost: 1})
	b.Fail("j3", errors.New("refused"))
	a.Merge(&b)
	if a.Streams != 3 || a.Failed != 2 || a.Lost != 1 || a.OK() || len(a.Problems) != 2 {
		t.Fatalf("merged tally: %+v", &a)
	}
}

func TestReaderAllocations(t *testing.T) {
	body := strings.Repeat(frame(1, "narration", 1, ""), 1000)
	r := bench.NewReader(strings.NewReader(body), 64<<10)
	v := &bench.Verifier{JobID: job}
	if _, err := r.Next(); err != nil { // grow the buffers first
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(500, func() {
		f, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		v.Observe(f)
	})
	if allocs > 0.1 {
		t.Errorf("%.2f allocations per frame, want none", allocs)
	}
}
