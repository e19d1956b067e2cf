package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"rbee.dev/shared/api"
)

// permanent marks an error that a reconnect cannot cure.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// callbackError carries the error of Stream's fn, which Stream returns as is.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// Stream follows a job's narration and calls fn with every event in order,
// from the event after lastEventID (0: from the start). It returns nil after
// the [DONE] marker that follows the end event.
//
// A connection that breaks before [DONE] (closed, reset, silent for
// IdleTimeout, or answered 5xx) is reopened with Last-Event-ID set to the
// last id delivered, after a wait growing from MinBackoff to MaxBackoff, so
// fn sees every event exactly once across reconnects: events a server sends
// again with an id at or below that one are skipped. Stream gives up only
// when ctx ends (returning ctx.Err()), on a 4xx answer (an *APIError), on
// a body that is not an event stream, or when fn returns an error, which it
// returns unchanged. A connection that breaks after the end event but
// before [DONE] counts as finished: nothing can follow the end.
func (c *Client) Stream(ctx context.Context, jobID string, lastEventID uint64, fn func(Frame) error) error {
	return c.stream(ctx, jobID, &streamState{last: lastEventID}, fn)
}

// History is Stream for a look at a job so far: the events the queen has
// stored when it answers, whether or not the job has ended
// (?follow=false).
func (c *Client) History(ctx context.Context, jobID string, fn func(Frame) error) error {
	return c.stream(ctx, jobID, &streamState{history: true}, fn)
}

func (c *Client) stream(ctx context.Context, jobID string, s *streamState, fn func(Frame) error) error {
	wait := c.MinBackoff
	for attempt := 1; ; attempt++ {
		delivered, err := c.streamOnce(ctx, jobID, s, fn)
		if err == nil {
			return nil
		}
		var cb callbackError
		if errors.As(err, &cb) {
			return cb.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var p permanent
		if errors.As(err, &p) {
			return p.err
		}
		if s.sawEnd {
			return nil
		}
		if delivered {
			// The server was healthy a moment ago; come back quickly.
			wait = c.MinBackoff
		}
		if c.OnReconnect != nil {
			c.OnReconnect(attempt, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, c.MaxBackoff)
	}
}

// streamState is what survives from one connection to the next.
type streamState struct {
	last    uint64 // id of the last event handed to fn
	sawEnd  bool
	history bool // only what is stored: follow=false
}

// streamOnce reads one connection. It returns nil after [DONE], a permanent
// error when reconnecting is pointless, and any other error to reconnect;
// delivered says whether fn saw an event on this connection.
func (c *Client) streamOnce(ctx context.Context, jobID string, s *streamState, fn func(Frame) error) (delivered bool, err error) {
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The watchdog covers the wait for headers too: a queen that accepts
	// the connection and then hangs is as dead as one that went quiet.
	var idle atomic.Bool
	var timer *time.Timer
	if c.IdleTimeout > 0 {
		timer = time.AfterFunc(c.IdleTimeout, func() { idle.Store(true); cancel() })
		defer timer.Stop()
	}

	path := "/v1/jobs/" + url.PathEscape(jobID) + "/stream"
	if s.history {
		path += "?follow=false"
	}
	req, err := http.NewRequestWithContext(connCtx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return false, permanent{fmt.Errorf("stream job %s: %w", jobID, err)}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if s.last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(s.last, 10))
	}
	c.authorize(req)

	resp, err := c.hc.Do(req)
	if err != nil {
		return false, c.connErr(jobID, err, &idle)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNoContent:
		// The queen says we are at or past the end: nothing follows.
		s.sawEnd = true
		return false, nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return false, permanent{readAPIError(resp)}
	case resp.StatusCode != http.StatusOK:
		return false, readAPIError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return false, permanent{fmt.Errorf("stream job %s: queen answered %q, not text/event-stream", jobID, mt)}
	}

	var body io.Reader = resp.Body
	if timer != nil {
		body = &idleReader{r: resp.Body, t: timer, d: c.IdleTimeout}
	}
	fr := NewFrameReader(body)
	for {
		f, err := fr.Next()
		if errors.Is(err, ErrEventTooLarge) {
			return delivered, permanent{fmt.Errorf("stream job %s: %w", jobID, err)}
		}
		if errors.Is(err, io.EOF) {
			return delivered, fmt.Errorf("stream job %s: connection closed before the end", jobID)
		}
		if err != nil {
			return delivered, c.connErr(jobID, err, &idle)
		}
		if f.Done() {
			return delivered, nil
		}
		if f.ID != 0 && s.last != 0 && f.ID <= s.last {
			// Already delivered before a reconnect; a server that
			// ignored Last-Event-ID must not make us print it twice.
			continue
		}
		if err := fn(f); err != nil {
			return delivered, callbackError{err}
		}
		delivered = true
		if f.ID != 0 {
			s.last = f.ID
		}
		if f.Event == api.SSEEnd {
			s.sawEnd = true
		}
	}
}

// connErr names why a connection failed, so a reconnect notice reads well.
func (c *Client) connErr(jobID string, err error, idle *atomic.Bool) error {
	if idle.Load() {
		return fmt.Errorf("stream job %s: nothing received for %s", jobID, c.IdleTimeout)
	}
	return fmt.Errorf("stream job %s: %w", jobID, err)
}

// idleReader re-arms the idle watchdog whenever bytes arrive, heartbeat
// comments included.
type idleReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.t.Reset(i.d)
	}
	return n, err
}
