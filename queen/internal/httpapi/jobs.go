package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/relay"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// maxIdempotencyKey bounds the Idempotency-Key header.
const maxIdempotencyKey = 255

func (h *handlers) createJob(c echo.Context) error {
	idem := c.Request().Header.Get("Idempotency-Key")
	if len(idem) > maxIdempotencyKey || strings.IndexFunc(idem, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
		return badRequest("Idempotency-Key must be 1-%d printable ASCII characters", maxIdempotencyKey)
	}
	req, err := api.DecodeJobRequest(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		var he *echo.HTTPError // the body limit's error when no Content-Length warned it
		if errors.As(err, &mbe) || errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge || strings.Contains(err.Error(), "http: request body too large") {
			return newError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "request body is larger than the limit of %d bytes", maxBody)
		}
		return newError(http.StatusBadRequest, api.CodeInvalidJSON, "%s", err.Error())
	}
	if err := req.Validate(); err != nil {
		return newError(http.StatusBadRequest, api.CodeValidation, "%s", err.Error())
	}
	// A job certain to pass its budget is refused now rather than run
	// until it fails; jobs whose output is not known in advance are held
	// to the budget by their hive.
	if b, est := h.JobMaxNarrationBytes, req.NarrationEstimate(); b > 0 && est > b {
		return newError(http.StatusBadRequest, api.CodeValidation,
			"%s would narrate at least %d bytes (events × payload_bytes), more than the per-job narration budget of %s (%s)",
			req.Operation, est, api.FormatBytes(b), api.BudgetFlag)
	}
	if err := authorize(c, api.ScopeForOperation(req.Operation)); err != nil {
		return err
	}
	// A key's rate limits are counted where its requests are answered, on
	// the OpenAI routes; an infer job submitted here would go around them.
	if p := principal(c); req.Operation == api.OpInfer && p.Limits.Any() {
		return newError(http.StatusForbidden, api.CodeForbidden,
			"this API key has rate limits, which apply to the OpenAI routes: send inference to /v1/chat/completions, /v1/completions, /v1/embeddings or /v1/rerank")
	}
	j, created, err := h.Jobs.Create(c.Request().Context(), req, principal(c).KeyID, idem)
	if err != nil {
		return serviceError(err, "")
	}
	if !created {
		c.Response().Header().Set("Idempotent-Replayed", "true")
	}
	base := "/v1/jobs/" + j.JobID
	c.Response().Header().Set(echo.HeaderLocation, base)
	return c.JSON(http.StatusCreated, api.CreateJobResponse{JobID: j.JobID, StreamURL: base + "/stream", JobURL: base})
}

func (h *handlers) listJobs(c echo.Context) error {
	f := view.Filter{State: c.QueryParam("state"), Operation: c.QueryParam("operation"), Hive: c.QueryParam("hive"), Limit: 100}
	switch f.State {
	case "", api.StateQueued, api.StateDispatched, api.StateRunning, api.StateCancelling, api.StateDone, api.StateFailed, api.StateCancelled:
	default:
		return badRequest("state %q is not a job state", clip(f.State))
	}
	if _, ok := api.Operations[f.Operation]; f.Operation != "" && !ok {
		return badRequest("operation %q is not known", clip(f.Operation))
	}
	if f.Hive != "" && !bus.ValidToken(f.Hive) {
		return badRequest("hive %q is not a valid hive id", clip(f.Hive))
	}
	if l := c.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			return badRequest("limit must be a number from 1 to 10000")
		}
		f.Limit = n
	}
	p := principal(c)
	if !p.Has(api.ScopeAdmin) {
		f.Owner = p.KeyID
	}
	list, err := h.View.Jobs(c.Request().Context(), f)
	if err != nil {
		return err
	}
	if !p.Has(api.ScopeAdmin) {
		for i := range list {
			list[i].Request = redact(list[i].Request)
		}
	}
	return c.JSON(http.StatusOK, api.JobList{Jobs: list})
}

func (h *handlers) getJob(c echo.Context) error {
	id := c.Param("id")
	if !bus.ValidToken(id) {
		return jobNotFound(clip(id))
	}
	j, err := h.Jobs.Get(c.Request().Context(), id)
	if err != nil {
		return serviceError(err, id)
	}
	if !owns(c, j) {
		return jobNotFound(id)
	}
	if !principal(c).Has(api.ScopeAdmin) {
		j.Request = redact(j.Request)
	}
	return c.JSON(http.StatusOK, j)
}

func (h *handlers) cancelJob(c echo.Context) error {
	id := c.Param("id")
	if !bus.ValidToken(id) {
		return jobNotFound(clip(id))
	}
	j, err := h.owned(c, id)
	if err != nil {
		return err
	}
	if j.Operation != api.OpInfer {
		// Without operate a key may cancel its own inference only.
		if err := authorize(c, api.ScopeOperate); err != nil {
			return err
		}
	}
	j, err = h.Jobs.Cancel(c.Request().Context(), id)
	if err != nil {
		return serviceError(err, id)
	}
	return c.JSON(http.StatusAccepted, api.CancelResponse{JobID: j.JobID, State: j.State})
}

// streamJob relays a job's narration as SSE. Last-Event-ID (or the
// last_event_id query parameter, for clients that cannot set headers)
// resumes after that event; follow=false sends only what is stored now.
func (h *handlers) streamJob(c echo.Context) error {
	id := c.Param("id")
	if !bus.ValidToken(id) {
		return jobNotFound(clip(id))
	}
	after, err := lastEventID(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	j, err := h.owned(c, id)
	if err != nil {
		return err
	}
	follow := true
	switch c.QueryParam("follow") {
	case "", "true":
	case "false":
		follow = false
	default:
		return badRequest("follow must be true or false, not %q", clip(c.QueryParam("follow")))
	}
	openAI := false
	switch c.QueryParam("format") {
	case "":
	case "openai":
		// The answer as its OpenAI request would have had it.
		if in, ok := j.Request.Payload.(*api.Infer); !ok || len(in.Body) == 0 {
			return badRequest("format=openai is for jobs made by the OpenAI-compatible routes; job %s is a %s job", id, j.Operation)
		}
		openAI = true
	default:
		return badRequest("format must be openai or absent, not %q", clip(c.QueryParam("format")))
	}
	if h.pastEnd(ctx, id, after) {
		// Nothing follows the end. 204 closes a browser's EventSource,
		// which would otherwise reconnect after every [DONE] for good.
		return c.NoContent(http.StatusNoContent)
	}
	if after > 0 {
		// Every id a stream sends is a stored event. Past the newest in
		// the stream, a stream would skip the events still to come, the
		// end among them, and stay open for good. The stream's leader
		// says which is newest: a replica may lag behind what a client
		// was sent.
		newest, err := h.Store.NarrationReader().LastSeq(ctx)
		if err != nil {
			return err
		}
		if after > newest {
			return badRequest("Last-Event-ID %d is past the newest event stored (%d): resume from an id a stream sent", after, newest)
		}
	}
	if openAI {
		if !follow {
			return badRequest("follow=false is for the narration format, not format=openai")
		}
		return h.OpenAI.Resume(c, j, after)
	}
	hdr := c.Response().Header()
	hdr.Set(echo.HeaderContentType, "text/event-stream")
	hdr.Set(echo.HeaderCacheControl, "no-cache")
	hdr.Set(echo.HeaderConnection, "keep-alive")
	hdr.Set("X-Accel-Buffering", "no")
	if follow && h.takeOverStream(c, id, after) {
		return nil
	}
	c.Response().WriteHeader(http.StatusOK)
	if _, err := io.WriteString(c.Response(), retryLine); err != nil {
		return nil
	}
	w := relay.NewWriter(c.Response())
	if err := w.Comment("rbee narration for job " + id); err != nil {
		return nil
	}
	if err := w.Flush(); err != nil {
		return nil
	}
	if !follow {
		if err := h.Hub.History(ctx, w, id, after); err != nil && ctx.Err() == nil {
			h.Log.Warn("history read failed", "job_id", id, "err", err)
		}
		return nil
	}
	if err := h.Hub.Stream(ctx, w, id, after, h.Heartbeat); err != nil && ctx.Err() == nil {
		h.Log.Warn("stream ended early", "job_id", id, "err", err)
	}
	return nil
}

// resumeAfter is the reconnection delay a stream asks of an EventSource.
const resumeAfter = time.Second

// pastEnd reports whether a resume point is at or after the job's end
// event: the job is over and the client has seen all of it.
func (h *handlers) pastEnd(ctx context.Context, id string, after uint64) bool {
	if after == 0 {
		return false
	}
	if state, ok := h.View.State(id); !ok || !api.Terminal(state) {
		return false
	}
	// The last end stored for the job is at or after the end that counts,
	// whoever wrote it, so a client at or past it has seen that end.
	end, seq, err := h.Store.EndOf(ctx, id)
	return err == nil && end != nil && after >= seq
}

// recentJob is how young a job must be for owned to look for it again:
// long enough for a NATS replica to catch up after losing its leader.
const recentJob = 30 * time.Second

// awaitJob waits up to 3 s for job id to reach the view, which the
// bucket's watch brings it to, looking every 50 ms, then reads the bucket
// once more: a key asking for ids that do not exist costs the queen two
// reads each, not one every 50 ms.
func (h *handlers) awaitJob(ctx context.Context, id string) (api.Job, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(3 * time.Second)
	for {
		if j, ok := h.View.Job(id); ok {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return api.Job{}, ctx.Err()
		case <-t.C:
			continue
		case <-deadline:
		}
		j, _, err := h.Store.GetJob(ctx, id)
		return j, err
	}
}

// owns reports whether the request's key may see job j: admin sees every
// job, any other key only the jobs it created.
func owns(c echo.Context, j api.Job) bool {
	p := principal(c)
	return p.Has(api.ScopeAdmin) || (j.Owner != "" && j.Owner == p.KeyID)
}

// owned is the record of a job the request's key may see. It answers 404
// when the job does not exist or belongs to another key; the same answer
// for both, so a key cannot probe for others' jobs.
func (h *handlers) owned(c echo.Context, id string) (api.Job, error) {
	// The view knows almost every job; one created a moment ago on another
	// queen may not have reached it yet.
	j, ok := h.View.Job(id)
	if !ok {
		var err error
		j, _, err = h.Store.GetJob(c.Request().Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			// Read from a replica that is behind, a job made a moment
			// ago on another queen may not be there yet: it is looked
			// for again, for a little while, before it is called absent.
			if at, ok := jobs.IDTime(id); ok && time.Since(at) < recentJob {
				j, err = h.awaitJob(c.Request().Context(), id)
			}
		}
		if errors.Is(err, store.ErrNotFound) {
			return j, jobNotFound(id)
		} else if err != nil {
			return j, err
		}
	}
	if !owns(c, j) {
		return api.Job{}, jobNotFound(id)
	}
	return j, nil
}

// redacted replaces what a record shows of a secret to keys without the
// admin scope.
const redacted = "REDACTED"

// redact hides what a request may carry of secrets: the values of a run's
// environment, and the credentials and query (signed URLs, tokens) of a
// download source. Names stay, so a reader still sees what was asked.
func redact(r api.JobRequest) api.JobRequest {
	// The payload is shared with the record it came from: it is copied
	// before it changes.
	switch p := r.Payload.(type) {
	case *api.Run:
		if len(p.Env) > 0 {
			run := *p
			run.Env = make(map[string]string, len(p.Env))
			for k := range p.Env {
				run.Env[k] = redacted
			}
			r.Payload = &run
		}
	case *api.ModelDownload:
		if u, err := url.Parse(p.Source); err == nil && (u.User != nil || u.RawQuery != "" || u.Fragment != "") {
			if u.User != nil {
				u.User = url.User(redacted)
			}
			if u.RawQuery != "" {
				u.RawQuery = redacted
			}
			u.Fragment = ""
			dl := *p
			dl.Source = u.String()
			r.Payload = &dl
		}
	}
	return r
}

// lastEventID parses the resume point strictly: decimal digits only.
func lastEventID(c echo.Context) (uint64, error) {
	name, v := "Last-Event-ID", c.Request().Header.Get("Last-Event-ID")
	if v == "" {
		name, v = "last_event_id", c.QueryParam("last_event_id")
	}
	if v == "" {
		return 0, nil
	}
	n, err := api.ParseLastEventID(v)
	if err != nil {
		return 0, badRequest("%s: %v", name, err)
	}
	return n, nil
}

// clip shortens hostile input before it is echoed in an error.
func clip(s string) string {
	if len(s) > 64 {
		return strings.ToValidUTF8(s[:64], "?") + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
