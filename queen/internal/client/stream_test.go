package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

// sseFrame renders one event the way the queen does; ids double as seqs.
func sseFrame(id uint64, event string) string {
	ev := api.Event{JobID: "j1", Seq: id, Actor: "hive-a", Action: "step", Level: api.LevelInfo, Message: fmt.Sprintf("event %d", id)}
	if event == api.SSEEnd {
		ev.State = api.StateDone
	}
	b, _ := json.Marshal(ev)
	return fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", id, event, b)
}

// jobFrames is a whole job: n-1 narration events, then the end.
func jobFrames(n int) []string {
	fs := make([]string, 0, n)
	for i := 1; i < n; i++ {
		fs = append(fs, sseFrame(uint64(i), api.SSENarration))
	}
	return append(fs, sseFrame(uint64(n), api.SSEEnd))
}

// connLog records what each stream connection asked for.
type connLog struct {
	mu      sync.Mutex
	lastIDs []string
}

func (l *connLog) add(r *http.Request) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lastIDs = append(l.lastIDs, r.Header.Get("Last-Event-ID"))
	return len(l.lastIDs)
}

func (l *connLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lastIDs...)
}

func startSSE(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
}

// fastClient reconnects quickly so the tests stay fast.
func fastClient(url string) *client.Client {
	c := client.New(url, "", nil)
	c.MinBackoff, c.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	return c
}

// collect runs Stream and returns the ids fn saw.
func collect(tb testing.TB, c *client.Client, last uint64) ([]uint64, error) {
	tb.Helper()
	var ids []uint64
	err := c.Stream(tb.Context(), "j1", last, func(f client.Frame) error {
		if _, err := f.Decode(); err != nil {
			tb.Errorf("frame %d does not decode: %v", f.ID, err)
		}
		ids = append(ids, f.ID)
		return nil
	})
	return ids, err
}

func wantIDs(tb testing.TB, got []uint64, from, to uint64) {
	tb.Helper()
	var want []uint64
	for i := from; i <= to; i++ {
		want = append(want, i)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("ids %v, want %v", got, want)
	}
}

// TestStreamReconnect drops the first connection in the middle of an event,
// once cleanly and once by aborting the TCP connection, and checks that the
// second carries the last whole event's id and that nothing is lost or
// repeated.
func TestStreamReconnect(t *testing.T) {
	for _, abort := range []bool{false, true} {
		t.Run(fmt.Sprintf("abort=%v", abort), func(t *testing.T) {
			frames := jobFrames(8)
			var log connLog
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/jobs/j1/stream" || r.Header.Get("Accept") != "text/event-stream" {
					t.Errorf("request %s, Accept %q", r.URL.Path, r.Header.Get("Accept"))
				}
				n := log.add(r)
				startSSE(w)
				if n == 1 {
					_, _ = io.WriteString(w, ": ping\n\n"+strings.Join(frames[:3], "")+frames[3][:20])
					http.NewResponseController(w).Flush()
					if abort {
						panic(http.ErrAbortHandler)
					}
					return
				}
				var from int
				_, _ = fmt.Sscan(r.Header.Get("Last-Event-ID"), &from)
				_, _ = io.WriteString(w, strings.Join(frames[from:], "")+": ping\n\ndata: [DONE]\n\n")
			})
			ids, err := collect(t, fastClient(srv.URL), 0)
			if err != nil {
				t.Fatal(err)
			}
			wantIDs(t, ids, 1, 8)
			if got := log.get(); fmt.Sprint(got) != "[ 3]" {
				t.Fatalf("Last-Event-ID per connection %q, want [\"\" \"3\"]", got)
			}
		})
	}
}

// TestStreamSkipsRepeats serves a queen that ignores Last-Event-ID and
// replays from the start on every connection.
func TestStreamSkipsRepeats(t *testing.T) {
	frames := jobFrames(6)
	var log connLog
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := log.add(r)
		startSSE(w)
		upto := 2 * n // each connection gets two events further
		if upto >= len(frames) {
			_, _ = io.WriteString(w, strings.Join(frames, "")+"data: [DONE]\n\n")
			return
		}
		_, _ = io.WriteString(w, strings.Join(frames[:upto], ""))
	})
	ids, err := collect(t, fastClient(srv.URL), 0)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, ids, 1, 6)
	if got := log.get(); fmt.Sprint(got) != "[ 2 4]" {
		t.Fatalf("Last-Event-ID per connection %q", got)
	}
}

func TestStreamResumesFromGivenID(t *testing.T) {
	frames := jobFrames(5)
	var log connLog
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		startSSE(w)
		_, _ = io.WriteString(w, strings.Join(frames[3:], "")+"data: [DONE]\n\n")
	})
	ids, err := collect(t, fastClient(srv.URL), 3)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, ids, 4, 5)
	if got := log.get(); fmt.Sprint(got) != "[3]" {
		t.Fatalf("Last-Event-ID %q, want 3", got)
	}
}

func TestStreamRetriesServerErrors(t *testing.T) {
	frames := jobFrames(3)
	var log connLog
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if log.add(r) <= 2 {
			writeJSON(w, 503, api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeUnavailable, Message: "nats down"}})
			return
		}
		startSSE(w)
		_, _ = io.WriteString(w, strings.Join(frames, "")+"data: [DONE]\n\n")
	})
	var reconnects []int
	c := fastClient(srv.URL)
	c.OnReconnect = func(attempt int, err error) {
		reconnects = append(reconnects, attempt)
		if !strings.Contains(err.Error(), "nats down") {
			t.Errorf("reconnect error %v does not say why", err)
		}
	}
	ids, err := collect(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, ids, 1, 3)
	if fmt.Sprint(reconnects) != "[1 2]" {
		t.Fatalf("reconnects %v", reconnects)
	}
}

func TestStreamGivesUp(t *testing.T) {
	tests := []struct {
		name  string
		serve func(w http.ResponseWriter)
		check func(t *testing.T, err error)
	}{
		{
			name: "404 unknown job",
			serve: func(w http.ResponseWriter) {
				writeJSON(w, 404, api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeNotFound, Message: "job j1 not found"}})
			},
			check: func(t *testing.T, err error) {
				var ae *client.APIError
				if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != api.CodeNotFound {
					t.Fatalf("err = %v, want a 404 *APIError", err)
				}
			},
		},
		{
			name: "401",
			serve: func(w http.ResponseWriter) {
				writeJSON(w, 401, api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeUnauthorized, Message: "token required"}})
			},
			check: func(t *testing.T, err error) {
				if !client.IsStatus(err, 401) {
					t.Fatalf("err = %v, want 401", err)
				}
			},
		},
		{
			name: "not an event stream",
			serve: func(w http.ResponseWriter) {
				writeJSON(w, 200, api.Job{JobID: "j1"})
			},
			check: func(t *testing.T, err error) {
				if err == nil || !strings.Contains(err.Error(), "not text/event-stream") {
					t.Fatalf("err = %v", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log connLog
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				log.add(r)
				tt.serve(w)
			})
			_, err := collect(t, fastClient(srv.URL), 0)
			tt.check(t, err)
			if n := len(log.get()); n != 1 {
				t.Fatalf("%d connections, want 1 (no retry)", n)
			}
		})
	}
}

func TestStreamCallbackError(t *testing.T) {
	frames := jobFrames(5)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		startSSE(w)
		_, _ = io.WriteString(w, strings.Join(frames, "")+"data: [DONE]\n\n")
	})
	stop := errors.New("stop here")
	var seen int
	err := fastClient(srv.URL).Stream(t.Context(), "j1", 0, func(f client.Frame) error {
		seen++
		if f.ID == 2 {
			return stop
		}
		return nil
	})
	if err != stop || seen != 2 {
		t.Fatalf("err = %v after %d frames, want the callback's error after 2", err, seen)
	}
}

// TestStreamEndWithoutDone treats a close right after the end event as the
// end: nothing can follow it, so reconnecting would only wait.
func TestStreamEndWithoutDone(t *testing.T) {
	var log connLog
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		startSSE(w)
		_, _ = io.WriteString(w, strings.Join(jobFrames(3), ""))
	})
	ids, err := collect(t, fastClient(srv.URL), 0)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, ids, 1, 3)
	if n := len(log.get()); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// TestStreamIdleTimeout serves a connection that goes silent, as one behind
// a dead NAT entry would; the watchdog must drop it and resume.
func TestStreamIdleTimeout(t *testing.T) {
	frames := jobFrames(4)
	var log connLog
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := log.add(r)
		startSSE(w)
		if n == 1 {
			_, _ = io.WriteString(w, frames[0])
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, strings.Join(frames[1:], "")+"data: [DONE]\n\n")
	})
	c := fastClient(srv.URL)
	c.IdleTimeout = 50 * time.Millisecond
	var why error
	c.OnReconnect = func(_ int, err error) { why = err }
	ids, err := collect(t, c, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, ids, 1, 4)
	if why == nil || !strings.Contains(why.Error(), "nothing received") {
		t.Fatalf("reconnect reason %v", why)
	}
}

func TestStreamContextCancel(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		startSSE(w)
		_, _ = io.WriteString(w, sseFrame(1, api.SSENarration))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(t.Context())
	start := time.Now()
	err := fastClient(srv.URL).Stream(ctx, "j1", 0, func(client.Frame) error {
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Stream took too long to notice the cancel")
	}
}

// TestStreamCancelWhileRetrying checks that an unreachable queen does not
// hold Stream past its context.
func TestStreamCancelWhileRetrying(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 500, api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeInternal, Message: "boom"}})
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Millisecond)
	defer cancel()
	err := fastClient(srv.URL).Stream(ctx, "j1", 0, func(client.Frame) error { return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's error", err)
	}
}
