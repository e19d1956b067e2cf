package openai

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/relay"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/subject"
)

// API serves the OpenAI-compatible endpoints.
type API struct {
	r    *router
	hub  *relay.Hub
	jobs *jobs.Service
	m    *metrics.Queen
	log  *slog.Logger
}

// New makes the API.
func New(v *view.View, j *jobs.Service, st *store.Store, hub *relay.Hub, m *metrics.Queen, cfg Config, log *slog.Logger) *API {
	return &API{r: newRouter(v, j, st, cfg), hub: hub, jobs: j, m: m, log: log.With("component", "openai")}
}

// Models answers GET /v1/models.
func (a *API) Models(c echo.Context) error {
	data := a.r.models()
	if data == nil {
		data = []modelEntry{}
	}
	return c.JSON(http.StatusOK, modelList{Object: "list", Data: data})
}

// Model answers GET /v1/models/<id>.
func (a *API) Model(c echo.Context) error {
	for _, m := range a.r.models() {
		if m.ID == c.Param("id") {
			return c.JSON(http.StatusOK, m)
		}
	}
	return fail(c, http.StatusNotFound, "invalid_request_error", "model_not_found", fmt.Sprintf("model %q is not served or held by any hive", clip(c.Param("id"))))
}

// Chat answers POST /v1/chat/completions.
func (a *API) Chat(c echo.Context) error { return a.complete(c, true) }

// Completions answers POST /v1/completions.
func (a *API) Completions(c echo.Context) error { return a.complete(c, false) }

func (a *API) complete(c echo.Context, chat bool) error {
	start := time.Now()
	var in request
	if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
		return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_json", "request body is not valid JSON: "+clip(err.Error()))
	}
	// A generation may take longer than the server's deadlines allow an
	// ordinary request.
	relay.KeepOpen(http.NewResponseController(c.Response()))
	req, err := toJob(in, chat)
	if err != nil {
		return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error())
	}
	status, label := "ok", req.Model
	// A model nobody has is counted as "unknown": request bodies must not
	// mint metric series.
	defer func() { a.m.InferRequests.WithLabelValues(label, status).Inc() }()
	if in.Download != "" {
		// The route needs only infer; fetching a file onto a hive is an
		// operator's act, so the download field needs operate too, checked
		// before anything about the source is looked at.
		if !auth.FromContext(c.Request().Context()).Has(api.ScopeOperate) {
			status, label = "forbidden", "unknown"
			return fail(c, http.StatusForbidden, "invalid_request_error", api.CodeForbidden,
				"the download field needs an API key with the operate scope; this key may only use models hives already hold")
		}
		dl := api.JobRequest{Operation: api.OpModelDownload, Source: in.Download, ModelID: req.Model}
		if err := dl.Validate(); err != nil {
			status, label = "bad_request", "unknown"
			return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_request", "download: "+err.Error())
		}
	}
	if in.Download == "" && !a.known(req.Model) {
		status, label = "model_not_found", "unknown"
		return fail(c, http.StatusNotFound, "invalid_request_error", "model_not_found",
			fmt.Sprintf("model %q is not served or held by any hive; add \"download\": \"hf:org/repo\" (or a URL) to fetch it", req.Model))
	}
	release, err := a.r.admit(req.Model)
	if err != nil {
		status = "busy"
		c.Response().Header().Set("Retry-After", "1")
		return fail(c, http.StatusServiceUnavailable, "server_error", "no_capacity", err.Error())
	}
	defer release()
	ctx := c.Request().Context()
	hive, done, err := a.r.place(ctx, req.Model, in.Download, func(msg string) { a.log.Info(msg, "model", req.Model) })
	if err != nil {
		status = "unavailable"
		return a.routeError(c, err)
	}
	defer done()
	req.Hive = hive
	j, _, err := a.jobs.Create(ctx, req, auth.FromContext(ctx).KeyID, "")
	if err != nil {
		status = "unavailable"
		c.Response().Header().Set("Retry-After", "1")
		return fail(c, http.StatusServiceUnavailable, "server_error", "no_capacity", err.Error())
	}
	s := &sink{c: c, chat: chat, stream: in.Stream, model: req.Model, created: start.Unix(), start: start,
		includeUsage: in.StreamOptions != nil && in.StreamOptions.IncludeUsage}
	s.id = "cmpl-" + j.JobID
	if chat {
		s.id = "chatcmpl-" + j.JobID
	}
	err = a.hub.Stream(ctx, s, j.JobID, 0, 15*time.Second)
	if ctx.Err() != nil {
		// The client left: stop the generation on the worker too.
		status = "cancelled"
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = a.jobs.Cancel(cctx, j.JobID)
		return nil
	}
	if err == nil && s.state != api.StateDone {
		err = errors.New(s.failure)
	}
	if err != nil {
		status = "failed"
		return s.fail(err)
	}
	a.observe(s)
	return s.finish()
}

func (a *API) known(model string) bool {
	for _, m := range a.r.models() {
		if m.ID == model {
			return true
		}
	}
	return false
}

func (a *API) routeError(c echo.Context, err error) error {
	switch {
	case errors.Is(err, errUnknownModel):
		return fail(c, http.StatusNotFound, "invalid_request_error", "model_not_found", err.Error())
	case errors.Is(err, context.Canceled):
		return nil
	}
	c.Response().Header().Set("Retry-After", "5")
	return fail(c, http.StatusServiceUnavailable, "server_error", "no_capacity", err.Error())
}

func (a *API) observe(s *sink) {
	u := s.res.Usage
	key := a.m.KeyLabel(keyName(auth.FromContext(s.c.Request().Context())))
	a.m.InferTokens.WithLabelValues(s.model, "in", key).Add(float64(u.PromptTokens))
	a.m.InferTokens.WithLabelValues(s.model, "out", key).Add(float64(u.CompletionTokens))
	if !s.first.IsZero() {
		a.m.InferTTFT.WithLabelValues(s.model).Observe(s.first.Sub(s.start).Seconds())
		if gen := time.Since(s.first).Seconds(); gen > 0 && u.CompletionTokens > 1 {
			a.m.InferTokensPerSecond.WithLabelValues(s.model).Observe(float64(u.CompletionTokens-1) / gen)
		}
	}
}

// keyName names a principal in metrics: a stored key by its name, the
// configured admin key as "admin", an open queen as "open"; never a secret.
func keyName(p auth.Principal) string {
	if p.KeyID == "admin" || p.KeyID == "open" {
		return p.KeyID
	}
	return p.Name
}

// toJob turns an OpenAI request into an infer job request.
func toJob(in request, chat bool) (api.JobRequest, error) {
	req := api.JobRequest{Operation: api.OpInfer, Model: in.Model, Temperature: in.Temperature, Stream: in.Stream}
	if in.N != nil && *in.N != 1 {
		return req, errors.New("n must be 1")
	}
	switch {
	case in.MaxCompletion != nil:
		req.MaxTokens = *in.MaxCompletion
	case in.MaxTokens != nil:
		req.MaxTokens = *in.MaxTokens
	}
	if chat {
		if len(in.Messages) == 0 {
			return req, errors.New("messages is required")
		}
		req.Messages = in.Messages
	} else {
		switch p := in.Prompt.(type) {
		case string:
			req.Prompt = p
		case []any:
			if len(p) != 1 {
				return req, errors.New("prompt must be one string")
			}
			s, ok := p[0].(string)
			if !ok {
				return req, errors.New("prompt must be a string")
			}
			req.Prompt = s
		default:
			return req, errors.New("prompt is required and must be a string")
		}
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

// sink turns an infer job's narration into an OpenAI answer: chunks as
// tokens arrive when streaming, one response at the end otherwise.
type sink struct {
	c            echo.Context
	chat, stream bool
	includeUsage bool
	id, model    string
	created      int64
	start, first time.Time

	w       *bufio.Writer
	text    strings.Builder
	res     api.InferResult
	state   string
	failure string
}

// narration is the part of an event the sink reads.
type narration struct {
	Action  string          `json:"action"`
	Message string          `json:"message"`
	State   string          `json:"state"`
	Error   string          `json:"error"`
	Data    json.RawMessage `json:"data"`
}

func (s *sink) Frame(f relay.Frame) error {
	var e narration
	if err := json.Unmarshal(f.Data, &e); err != nil {
		return err
	}
	switch {
	case f.Kind == subject.KindEvent && e.Action == "token":
		if s.first.IsZero() {
			s.first = time.Now()
		}
		if !s.stream {
			s.text.WriteString(e.Message)
			return nil
		}
		return s.chunk(e.Message, nil, nil)
	case f.Kind == subject.KindData && e.Action == "result":
		return json.Unmarshal(e.Data, &s.res)
	case f.Kind == subject.KindEnd:
		s.state, s.failure = e.State, e.Error
	}
	return nil
}

func (s *sink) Comment(text string) error {
	if s.w == nil {
		return nil
	}
	_, err := s.w.WriteString(": " + text + "\n\n")
	return err
}

func (s *sink) Done() error { return nil }

func (s *sink) Flush() error {
	if s.w == nil {
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return err
	}
	return relay.FlushWithin(http.NewResponseController(s.c.Response()))
}

// open starts the SSE answer; the first chunk carries the role.
func (s *sink) open() error {
	h := s.c.Response().Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.c.Response().WriteHeader(http.StatusOK)
	s.w = bufio.NewWriterSize(s.c.Response(), 16<<10)
	if s.chat {
		return s.write(response{Choices: []choice{{Delta: &message{Role: "assistant"}}}})
	}
	return nil
}

func (s *sink) chunk(text string, finish *string, usage *api.Usage) error {
	if s.w == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	ch := choice{FinishReason: finish}
	if s.chat {
		ch.Delta = &message{Content: text}
	} else {
		ch.Text = &text
	}
	r := response{Choices: []choice{ch}, Usage: usage}
	if usage != nil {
		r.Choices = []choice{}
	}
	return s.write(r)
}

func (s *sink) write(r response) error {
	r.ID, r.Created, r.Model = s.id, s.created, s.model
	r.Object = "text_completion"
	if s.chat {
		r.Object = "chat.completion.chunk"
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(s.w, "data: %s\n\n", data)
	return err
}

// finish sends the end of a successful answer.
func (s *sink) finish() error {
	reason := s.res.FinishReason
	if reason == "" {
		reason = "stop"
	}
	usage := s.res.Usage
	if !s.stream {
		text := s.text.String()
		ch := choice{FinishReason: &reason}
		obj := "text_completion"
		if s.chat {
			ch.Message, obj = &message{Role: "assistant", Content: text}, "chat.completion"
		} else {
			ch.Text = &text
		}
		return s.c.JSON(http.StatusOK, response{ID: s.id, Object: obj, Created: s.created, Model: s.model, Choices: []choice{ch}, Usage: &usage})
	}
	if err := s.chunk("", &reason, nil); err != nil {
		return err
	}
	if s.includeUsage {
		if err := s.chunk("", nil, &usage); err != nil {
			return err
		}
	}
	if _, err := s.w.WriteString("data: [DONE]\n\n"); err != nil {
		return err
	}
	return s.Flush()
}

// fail reports a failed generation: as an error answer if nothing was sent
// yet, else as an error event in the stream.
func (s *sink) fail(err error) error {
	msg := err.Error()
	code, status := "upstream_error", http.StatusBadGateway
	if strings.Contains(msg, "no ready worker") || strings.Contains(msg, "lost") {
		code, status = "no_capacity", http.StatusServiceUnavailable
		s.c.Response().Header().Set("Retry-After", "1")
	}
	if s.w == nil {
		return fail(s.c, status, "server_error", code, msg)
	}
	fmt.Fprintf(s.w, "data: %s\n\ndata: [DONE]\n\n", failJSON(status, "server_error", code, msg))
	return s.Flush()
}

func clip(s string) string {
	if len(s) > 128 {
		return strings.ToValidUTF8(s[:128], "?") + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
