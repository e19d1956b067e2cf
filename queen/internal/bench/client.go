package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"rbee.dev/shared/api"
)

// Client speaks the queen's HTTP API, tuned for load: keep-alive
// connections sized to the concurrency, no compression, no proxy.
type Client struct {
	base string
	hc   *http.Client
	tr   *http.Transport
}

// NewClient makes a client for the queen at base that keeps up to conns
// idle connections, so that many concurrent requests reuse their
// connections instead of opening new ones.
func NewClient(base string, conns int) *Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		ReadBufferSize:      16 << 10,
		WriteBufferSize:     4 << 10,
	}
	return &Client{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: tr}, tr: tr}
}

// Close drops the idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// WithKey is c sending every request with API key key, on the same
// connections.
func (c *Client) WithKey(key string) *Client {
	kc := *c
	kc.hc = &http.Client{Transport: bearer{key, c.tr}}
	return &kc
}

// bearer adds an API key to each request.
type bearer struct {
	key string
	rt  http.RoundTripper
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.key)
	return b.rt.RoundTrip(req)
}

// CheckBody is the request body of a hive_check job on the bench hive.
func CheckBody(events, payload int) []byte {
	b := []byte(`{"operation":"hive_check","hive":"` + HiveID + `","events":`)
	b = strconv.AppendInt(b, int64(events), 10)
	b = append(b, `,"payload_bytes":`...)
	b = strconv.AppendInt(b, int64(payload), 10)
	return append(b, '}')
}

// Create posts a job and returns the queen's answer.
func (c *Client) Create(ctx context.Context, body []byte) (api.CreateJobResponse, error) {
	var out api.CreateJobResponse
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/jobs", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return out, fmt.Errorf("create job: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return out, fmt.Errorf("create job: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return out, fmt.Errorf("create job: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &out); err != nil || out.JobID == "" || out.StreamURL == "" {
		return out, fmt.Errorf("create job: unexpected answer %q", b)
	}
	return out, nil
}

// Cancel asks the queen to cancel a job.
func (c *Client) Cancel(ctx context.Context, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.base+"/v1/jobs/"+id, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cancel job %s: %w", id, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("cancel job %s: %s: %s", id, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// JobState reads a job record's state.
func (c *Client) JobState(ctx context.Context, id string) (string, error) {
	var j api.Job
	if err := c.getJSON(ctx, "/v1/jobs/"+id, &j); err != nil {
		return "", err
	}
	return j.State, nil
}

// getJSON reads a queen resource into out.
func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// postJSON posts in as JSON to a queen path and reads a 2xx answer into out.
func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	b, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Stream is an open SSE response.
type Stream struct {
	resp *http.Response
	*Reader
}

// Open connects to a job's stream (streamURL as the queen gave it) and
// returns once the response headers arrived. With lastID > 0 it resumes
// after that event, with the Last-Event-ID header or, when query is set,
// the last_event_id parameter.
func (c *Client) Open(ctx context.Context, streamURL string, lastID uint64, query bool, bufSize int) (*Stream, error) {
	url := c.base + streamURL
	if lastID > 0 && query {
		url += "?last_event_id=" + strconv.FormatUint(lastID, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID > 0 && !query {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastID, 10))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	if resp.StatusCode == http.StatusNoContent {
		// Resumed at or past the end: the queen says nothing follows,
		// which is what a closing [DONE] says on an open stream.
		return &Stream{resp: resp, Reader: NewReader(strings.NewReader("data: "+api.SSEDone+"\n\n"), bufSize)}, nil
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		return nil, fmt.Errorf("open stream: %s %q: %s", resp.Status, resp.Header.Get("Content-Type"), bytes.TrimSpace(b))
	}
	return &Stream{resp: resp, Reader: NewReader(resp.Body, bufSize)}, nil
}

// Close drops the connection, or returns it to the pool if the body was
// read to its end.
func (s *Stream) Close() error { return s.resp.Body.Close() }

// ErrStop is what a frame callback returns to hang up early.
var ErrStop = errors.New("client hung up")

// Follow feeds every frame to v and then to onFrame (when not nil) until
// [DONE], and reads on to the end of the body so the connection can be
// reused. The body must end right after [DONE]. If onFrame returns an
// error, Follow hangs up and returns it.
func (s *Stream) Follow(v *Verifier, onFrame func(Frame) error) error {
	for {
		f, err := s.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		v.Observe(f)
		if onFrame != nil {
			if err := onFrame(f); err != nil {
				return err
			}
		}
		if f.Done {
			break
		}
	}
	// Anything but the end of the body here is a protocol error.
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		if err == nil {
			return errors.New("an event after [DONE]")
		}
		return err
	}
	return nil
}

// FollowJob reads a job's stream from its start to [DONE], verifying every
// event, and returns the verdict. expect is the per-job sequence of the end
// event (0 if unknown); onFrame, when not nil, sees each frame after the
// verifier.
func FollowJob(ctx context.Context, c *Client, job api.CreateJobResponse, expect uint64, bufSize int, onFrame func(Frame) error) Result {
	v := &Verifier{JobID: job.JobID, Expect: expect}
	s, err := c.Open(ctx, job.StreamURL, 0, false, bufSize)
	if err != nil {
		r := v.Result()
		r.Problems = append(r.Problems, err.Error())
		return r
	}
	err = s.Follow(v, onFrame)
	_ = s.Close()
	r := v.Result()
	if err != nil {
		r.Problems = append(r.Problems, "read stream: "+err.Error())
	}
	return r
}

// checkExpect is the per-job sequence of a hive_check job's end event:
// job_created, started, the check events, end.
func checkExpect(events int) uint64 { return uint64(events) + 3 }
