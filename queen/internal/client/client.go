// Package client speaks the queen's HTTP API: job and hive records as JSON,
// and a job's narration as a resumable Server-Sent Events stream. It is what
// the rbee command line is built on, and it is small enough for tests and
// other Go programs to use directly.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"rbee.dev/shared/api"
)

// Default reconnect and liveness settings of a stream. The queen sends a
// heartbeat comment every 15 s, so three missed heartbeats mean the
// connection is dead even if TCP has not noticed yet.
const (
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 2 * time.Second
	DefaultIdleTimeout = 45 * time.Second
	// DefaultRequestTimeout bounds one record call (not a stream), so a
	// queen that accepts connections but never answers cannot hang a script.
	DefaultRequestTimeout = 30 * time.Second
)

// maxErrorBody bounds how much of an error answer is read, so a proxy that
// answers with a large HTML page cannot flood a terminal.
const maxErrorBody = 64 << 10

// Client calls one queen. Its zero value is not usable; make one with New.
// The exported fields tune Stream and may be changed before first use.
type Client struct {
	base  string
	token string
	hc    *http.Client

	// MinBackoff and MaxBackoff bound the wait before each stream
	// reconnect; the wait doubles from the first to the second.
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout drops a stream connection on which nothing, not even a
	// heartbeat, arrived for this long, and reconnects. Zero disables it.
	IdleTimeout time.Duration
	// OnReconnect, when set, is told about every reconnect before its wait,
	// so a command line can say why the output paused.
	OnReconnect func(attempt int, err error)
	// RequestTimeout bounds each call other than Stream; zero leaves it
	// to the caller's context.
	RequestTimeout time.Duration
}

// New returns a client of the queen at baseURL (such as
// http://127.0.0.1:7833). A non-empty token is sent as a bearer token. A nil
// httpClient means a default one without an overall timeout: streams last as
// long as their jobs, so deadlines come from contexts instead.
func New(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	return &Client{
		base:           strings.TrimRight(baseURL, "/"),
		token:          token,
		hc:             httpClient,
		MinBackoff:     DefaultMinBackoff,
		MaxBackoff:     DefaultMaxBackoff,
		IdleTimeout:    DefaultIdleTimeout,
		RequestTimeout: DefaultRequestTimeout,
	}
}

// APIError is a 4xx or 5xx answer of the queen, decoded from the JSON error
// shape. When the body was not that shape (a proxy's page, say), Code is
// empty and Message holds the start of the body text.
type APIError struct {
	Status  int
	Code    string
	Message string
}

// Error returns the queen's message, which is written for people.
func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("queen answered %d %s", e.Status, http.StatusText(e.Status))
}

// JobFilter narrows ListJobs; empty fields and a zero Limit are not sent.
type JobFilter struct {
	State     string
	Operation string
	Hive      string
	Limit     int
}

// CreateJob submits a job. A non-empty idempotencyKey is sent as the
// Idempotency-Key header, so retrying the same submission returns the job
// the first attempt created instead of a second one.
func (c *Client) CreateJob(ctx context.Context, req api.JobRequest, idempotencyKey string) (api.CreateJobResponse, error) {
	var out api.CreateJobResponse
	body, err := json.Marshal(req)
	if err != nil {
		return out, fmt.Errorf("encode job request: %w", err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if idempotencyKey != "" {
		h.Set("Idempotency-Key", idempotencyKey)
	}
	err = c.do(ctx, http.MethodPost, "/v1/jobs", h, body, &out)
	return out, err
}

// ListJobs returns job records, newest first.
func (c *Client) ListJobs(ctx context.Context, f JobFilter) (api.JobList, error) {
	q := url.Values{}
	for k, v := range map[string]string{"state": f.State, "operation": f.Operation, "hive": f.Hive} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	path := "/v1/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out api.JobList
	err := c.do(ctx, http.MethodGet, path, nil, nil, &out)
	return out, err
}

// GetJob returns one job record.
func (c *Client) GetJob(ctx context.Context, jobID string) (api.Job, error) {
	var out api.Job
	err := c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(jobID), nil, nil, &out)
	return out, err
}

// CancelJob asks the queen to cancel a job. The answer only says the
// cancel was accepted; the job's end event says when it took effect. A job
// that already ended gives an *APIError with Status 409.
func (c *Client) CancelJob(ctx context.Context, jobID string) (api.CancelResponse, error) {
	var out api.CancelResponse
	err := c.do(ctx, http.MethodDelete, "/v1/jobs/"+url.PathEscape(jobID), nil, nil, &out)
	return out, err
}

// ListHives returns the live hives and their inventory.
func (c *Client) ListHives(ctx context.Context) (api.HiveList, error) {
	var out api.HiveList
	err := c.do(ctx, http.MethodGet, "/v1/hives", nil, nil, &out)
	return out, err
}

// GetHive returns one live hive.
func (c *Client) GetHive(ctx context.Context, hiveID string) (api.Hive, error) {
	var out api.Hive
	err := c.do(ctx, http.MethodGet, "/v1/hives/"+url.PathEscape(hiveID), nil, nil, &out)
	return out, err
}

// do sends one request and decodes a 2xx JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, h http.Header, body []byte, out any) error {
	if c.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.RequestTimeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		// The queen refuses bodies of any other type: browsers send those
		// cross-site without asking.
		req.Header.Set("Content-Type", "application/json")
	}
	c.authorize(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		// A *url.Error already names the method and the URL.
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readAPIError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) authorize(req *http.Request) {
	req.Header.Set("User-Agent", "rbee-cli")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

// readAPIError turns an error answer into an *APIError, keeping what a
// non-conforming body says rather than hiding it behind a status line.
func readAPIError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode}
	var eb api.ErrorBody
	if json.Unmarshal(raw, &eb) == nil && (eb.Error.Code != "" || eb.Error.Message != "") {
		e.Code, e.Message = eb.Error.Code, eb.Error.Message
		return e
	}
	text := strings.TrimSpace(string(bytes.ToValidUTF8(raw, []byte("?"))))
	if len(text) > 512 {
		cut := 512
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	if text != "" {
		e.Message = fmt.Sprintf("queen answered %d: %s", resp.StatusCode, text)
	}
	return e
}

// IsStatus reports whether err is an *APIError with the given HTTP status.
func IsStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

// CreateKey makes an API key; the answer holds its secret, shown only once.
func (c *Client) CreateKey(ctx context.Context, req api.KeyRequest) (api.Key, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return api.Key{}, err
	}
	var out api.Key
	err = c.do(ctx, http.MethodPost, "/v1/keys", nil, body, &out)
	return out, err
}

// ListKeys lists API keys without their secrets.
func (c *Client) ListKeys(ctx context.Context) (api.KeyList, error) {
	var out api.KeyList
	err := c.do(ctx, http.MethodGet, "/v1/keys", nil, nil, &out)
	return out, err
}

// RevokeKey deletes an API key on every queen.
func (c *Client) RevokeKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(id), nil, nil, nil)
}

// UsageFilter narrows Usage; empty fields are not sent. From and To are
// RFC 3339 times or YYYY-MM-DD dates; Key (admin only) picks one key.
type UsageFilter struct {
	From, To, Model, Key string
}

// Usage sums tokens per key and model from the cluster's usage ledger: the
// calling key's own, or every key's for an admin key.
func (c *Client) Usage(ctx context.Context, f UsageFilter) (api.UsageList, error) {
	q := url.Values{}
	for k, v := range map[string]string{"from": f.From, "to": f.To, "model": f.Model, "key": f.Key} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/v1/usage"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out api.UsageList
	err := c.do(ctx, http.MethodGet, path, nil, nil, &out)
	return out, err
}

// Queue reads each model's inference queue (GET /v1/queue).
func (c *Client) Queue(ctx context.Context) (api.QueueList, error) {
	var out api.QueueList
	err := c.do(ctx, http.MethodGet, "/v1/queue", nil, nil, &out)
	return out, err
}
