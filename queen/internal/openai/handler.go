package openai

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/tidwall/gjson"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/limits"
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/relay"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// API serves the OpenAI-compatible endpoints.
type API struct {
	r    *router
	hub  *relay.Hub
	jobs *jobs.Service
	m    *metrics.Queen
	log  *slog.Logger
	// limits enforces keys' rate limits across queens.
	limits *limits.Limiter
}

// New makes the API.
func New(v *view.View, j *jobs.Service, st *store.Store, hub *relay.Hub, m *metrics.Queen, cfg Config, log *slog.Logger) *API {
	return &API{r: newRouter(v, j, st.LimitsBucket(), cfg), hub: hub, jobs: j, m: m, log: log.With("component", "openai"), limits: limits.New(st.LimitsBucket(), log)}
}

// Models answers GET /v1/models.
func (a *API) Models(c echo.Context) error {
	data := a.r.models()
	if data == nil {
		data = []api.ModelEntry{}
	}
	return c.JSON(http.StatusOK, api.ModelEntryList{Object: "list", Data: data})
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
func (a *API) Chat(c echo.Context) error { return a.infer(c, api.InferChat) }

// Completions answers POST /v1/completions.
func (a *API) Completions(c echo.Context) error { return a.infer(c, api.InferCompletions) }

// Embeddings answers POST /v1/embeddings.
func (a *API) Embeddings(c echo.Context) error { return a.infer(c, api.InferEmbeddings) }

// Rerank answers POST /v1/rerank, in llama-server's shape.
func (a *API) Rerank(c echo.Context) error { return a.infer(c, api.InferRerank) }

// infer runs one request as an infer job that carries the client's body to
// a worker's same path, and answers with what the worker answered.
func (a *API) infer(c echo.Context, path string) error {
	start := time.Now()
	// Every request is counted, those refused before their model is known
	// as bad requests for "unknown": request bodies must not mint metric
	// series.
	status, label := metrics.InferBadRequest, metrics.UnknownModel
	defer func() { a.m.InferRequests.WithLabelValues(label, status).Inc() }()
	if d := c.Request().Header.Get(DetachHeader); d != "" && !strings.EqualFold(d, "true") && !strings.EqualFold(d, "false") {
		return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_request", DetachHeader+" must be true or false, not "+strconv.Quote(clip(d)))
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return fail(c, he.Code, "invalid_request_error", "payload_too_large", fmt.Sprintf("request body is over %d bytes", api.MaxInferBody))
		}
		return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_request", "read request body: "+clip(err.Error()))
	}
	var in request
	if err := json.Unmarshal(body, &in); err != nil {
		return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_json", "request body is not a valid JSON object: "+clip(err.Error()))
	}
	// A generation may take longer than the server's deadlines allow an
	// ordinary request.
	relay.KeepOpen(http.NewResponseController(c.Response()))
	model := a.Resolve(in.Model)
	req := api.JobRequest{Operation: api.OpInfer, Payload: &api.Infer{Model: model, Path: path, Body: body}}
	if err := req.Validate(); err != nil {
		return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error())
	}
	status, label = metrics.InferOK, model
	if in.Download != "" {
		// The route needs only infer; fetching a file onto a hive is an
		// operator's act, so the download field needs operate too, checked
		// before anything about the source is looked at.
		if !auth.FromContext(c.Request().Context()).Has(api.ScopeOperate) {
			status, label = metrics.InferForbidden, metrics.UnknownModel
			return fail(c, http.StatusForbidden, "invalid_request_error", api.CodeForbidden,
				"the download field needs an API key with the operate scope; this key may only use models hives already hold")
		}
		dl := api.JobRequest{Operation: api.OpModelDownload, Payload: &api.ModelDownload{Source: in.Download, ModelID: model}}
		if err := dl.Validate(); err != nil {
			status, label = metrics.InferBadRequest, metrics.UnknownModel
			return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_request", "download: "+err.Error())
		}
	}
	if in.Download == "" && !a.known(model) {
		status, label = metrics.InferModelNotFound, metrics.UnknownModel
		return fail(c, http.StatusNotFound, "invalid_request_error", "model_not_found",
			fmt.Sprintf("model %q is not served or held by any hive; add \"download\": \"hf:org/repo\" (or a URL) to fetch it", in.Model))
	}
	if label != metrics.UnknownModel {
		a.m.KnowModel(label)
	}
	releaseKey, answered, err := a.admitKey(c)
	if answered {
		status = metrics.InferRateLimited
		return err
	}
	defer func() { releaseKey() }()
	ctx := c.Request().Context()
	if err := a.r.ready(ctx, model, in.Download, func(msg string) { a.log.Info(msg, "model", model) }); err != nil {
		status = metrics.InferUnavailable
		return a.routeError(c, err)
	}
	j, _, err := a.jobs.Create(ctx, req, auth.FromContext(ctx).KeyID, "")
	if errors.Is(err, jobs.ErrQueueFull) {
		status = metrics.InferBusy
		c.Response().Header().Set("Retry-After", "1")
		return fail(c, http.StatusTooManyRequests, "rate_limit_error", api.CodeQueueFull, err.Error())
	}
	if errors.Is(err, jobs.ErrTooLarge) {
		status = metrics.InferBadRequest
		return fail(c, http.StatusRequestEntityTooLarge, "invalid_request_error", "payload_too_large",
			"request body is too large for the cluster's NATS server as a job: "+err.Error())
	}
	if err != nil {
		status = metrics.InferUnavailable
		c.Response().Header().Set("Retry-After", "1")
		return fail(c, http.StatusServiceUnavailable, "server_error", "no_capacity", err.Error())
	}
	if j.Hive == "" {
		// It waits in the model's queue: its place is told on its
		// narration, which any queen relays, until it is placed.
		pctx, cancel := context.WithDeadline(context.Background(), j.DeadlineAt)
		go func() {
			defer cancel()
			a.jobs.TellPosition(pctx, j.JobID, func(pos, _ int) time.Duration { return a.r.eta(model, pos) })
		}()
		go a.r.keepServed(pctx, j.JobID, model)
	}
	c.Response().Header().Set(JobHeader, j.JobID)
	s := &sink{c: c, model: in.Model, target: model, start: start, stream: in.Stream,
		dropUsage: in.Stream && (in.StreamOptions == nil || !in.StreamOptions.IncludeUsage)}
	err = a.hub.Stream(ctx, s, j.JobID, 0, 15*time.Second)
	if ctx.Err() != nil && strings.EqualFold(c.Request().Header.Get(DetachHeader), "true") {
		// The client left, and asked for the generation to go on: it keeps
		// its key's place, and its tokens count, until it ends.
		heldKey, p := releaseKey, auth.FromContext(ctx)
		releaseKey = func() {}
		go func() {
			defer heldKey()
			fctx, cancel := context.WithDeadline(context.Background(), j.DeadlineAt.Add(time.Minute))
			defer cancel()
			// From where the client's stream stood: what it read is
			// not read again.
			t := &tally{}
			_ = a.hub.Stream(fctx, t, j.JobID, s.last, 15*time.Second)
			a.addTokens(p, t.res.Usage)
		}()
		return nil
	}
	// The generation is over: its tokens count and its slot frees before
	// the client reads the end, so the client's next request sees both.
	a.countTokens(c, s)
	releaseKey()
	if ctx.Err() != nil {
		// The client left: stop the generation on the worker too.
		status = metrics.InferCancelled
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = a.jobs.Cancel(cctx, j.JobID)
		return nil
	}
	if err == nil && s.state != api.StateDone {
		err = errors.New(s.failure)
	}
	if err != nil {
		status = metrics.InferFailed
		return s.fail(err)
	}
	a.observe(s)
	if !s.began.IsZero() {
		a.r.observe(model, time.Since(s.began))
	}
	return s.finish()
}

// queuedComment is the SSE comment that tells a streaming client its
// place in the queue; OpenAI's clients skip comments.
func queuedComment(p api.QueuePlace) string {
	return fmt.Sprintf("queued position=%d eta_ms=%d", p.Position, p.ETAMs)
}

// Resume answers GET /v1/jobs/<id>/stream?format=openai for an inference
// job j that its caller may see: the worker's answer as the job's request
// would have had it, after stream sequence after (Last-Event-ID), on any
// queen. A client that leaves here stops nothing.
func (a *API) Resume(c echo.Context, j api.Job, after uint64) error {
	relay.KeepOpen(http.NewResponseController(c.Response()))
	var in api.Infer
	if p, ok := j.Request.Payload.(*api.Infer); ok {
		in = *p
	}
	body := in.Body
	stream := gjson.GetBytes(body, "stream").Type == gjson.True
	s := &sink{c: c, model: gjson.GetBytes(body, "model").Str, target: in.Model, start: time.Now(), stream: stream,
		dropUsage: stream && gjson.GetBytes(body, "stream_options.include_usage").Type != gjson.True}
	c.Response().Header().Set(JobHeader, j.JobID)
	if stream {
		// Open at once: what is left may be only the end.
		s.open()
	}
	ctx := c.Request().Context()
	err := a.hub.Stream(ctx, s, j.JobID, after, 15*time.Second)
	if ctx.Err() != nil {
		return nil
	}
	if err == nil && s.state != api.StateDone {
		err = errors.New(s.failure)
	}
	if err != nil {
		return s.fail(err)
	}
	return s.finish()
}

// JobHeader names the response header that carries the job id of an
// answer, so that a client can look the job up or reattach to its stream.
const JobHeader = "X-Rbee-Job"

// DetachHeader, set to true on a request, keeps the generation going when
// its client disconnects; the client reattaches with GET
// /v1/jobs/<job>/stream?format=openai and Last-Event-ID. Without it a
// disconnect stops the generation.
const DetachHeader = "Rbee-Detach"

// Resolve is the model a name asks for: an alias's model, or the name.
func (a *API) Resolve(name string) string {
	if target, ok := a.r.cfg.Aliases[name]; ok {
		return target
	}
	return name
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
	case errors.Is(err, errBadSource):
		return fail(c, http.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error())
	case errors.Is(err, context.Canceled):
		return nil
	}
	c.Response().Header().Set("Retry-After", "5")
	return fail(c, http.StatusServiceUnavailable, "server_error", "no_capacity", err.Error())
}

func (a *API) observe(s *sink) {
	u := s.res.Usage
	key := a.m.KeyLabel(keyName(auth.FromContext(s.c.Request().Context())))
	a.m.InferTokens.WithLabelValues(s.target, "in", key).Add(float64(u.PromptTokens))
	a.m.InferTokens.WithLabelValues(s.target, "out", key).Add(float64(u.CompletionTokens))
	// Only a stream shows when the first token came; a whole answer
	// arrives at once.
	if !s.first.IsZero() {
		a.m.InferTTFT.WithLabelValues(s.target).Observe(s.first.Sub(s.start).Seconds())
		if gen := time.Since(s.first).Seconds(); gen > 0 && u.CompletionTokens > 1 {
			a.m.InferTokensPerSecond.WithLabelValues(s.target).Observe(float64(u.CompletionTokens-1) / gen)
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

// sink writes an infer job's narration as the worker's answer: each chunk
// payload as an SSE event, or the whole body with the worker's status,
// changing nothing but the model, which is named as the client named it.
type sink struct {
	c             echo.Context
	model, target string // as the client asked, and as routed
	stream        bool   // the client asked for a stream
	dropUsage     bool   // the hive asked for usage the client did not
	start, first  time.Time
	// began is when the hive's first event came: the request's service
	// time, without its wait in the queue, runs from there.
	began time.Time

	w       *bufio.Writer
	status  int
	ctype   string
	body    []byte
	res     api.InferResult
	state   string
	failure string
	// last is the stream sequence of the last frame taken.
	last uint64
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
	s.last = f.Seq
	if s.began.IsZero() && f.Writer != bus.QueenWriter {
		s.began = time.Now()
	}
	if f.Kind == bus.KindEvent {
		return s.chunk(f.Seq, f.Data)
	}
	var e narration
	if err := json.Unmarshal(f.Data, &e); err != nil {
		return err
	}
	switch {
	case f.Kind == bus.KindData && e.Action == api.ActionResponse:
		var r api.InferResponse
		if err := json.Unmarshal(e.Data, &r); err != nil {
			return fmt.Errorf("response event: %w", err)
		}
		s.status, s.ctype = r.Status, r.ContentType
		s.body = append(s.body, r.Body...)
	case f.Kind == bus.KindData && e.Action == api.ActionResult:
		return json.Unmarshal(e.Data, &s.res)
	case f.Kind == bus.KindEnd:
		s.state, s.failure = e.State, e.Error
	}
	return nil
}

// chunk writes the worker's SSE payload a chunk event carries. It is the
// one frame of every token, so it reads the event in a single pass rather
// than decoding it whole.
func (s *sink) chunk(id uint64, event []byte) error {
	var action, message, data gjson.Result
	gjson.ParseBytes(event).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "action":
			action = v
		case "message":
			message = v
		case "data":
			data = v
		}
		return true
	})
	if action.Str == api.ActionQueued {
		return s.queued(data)
	}
	if action.Str != api.ActionChunk {
		return nil
	}
	if data.Type != gjson.String {
		return errors.New("chunk event: data is not a string")
	}
	// The first text, not the chunk that only names the role, is the
	// first token.
	if s.first.IsZero() && message.Str != "" {
		s.first = time.Now()
	}
	payload := []byte(data.Str)
	if bytes.IndexByte(payload, '\r') >= 0 {
		// The hive reads a worker's event's data lines without their
		// ends: a CR, which ends an SSE line too, could add fields, an id
		// say, to the client's stream.
		return errors.New("chunk event: payload holds a carriage return")
	}
	if s.dropUsage && usageOnly(payload) {
		return nil
	}
	if s.w == nil {
		s.open()
	}
	payload = s.rename(payload)
	// The id is the event's, so a client can resume after it (Last-Event-ID);
	// OpenAI's clients ignore it.
	s.w.WriteString("id: ")
	s.w.WriteString(strconv.FormatUint(id, 10))
	// Data of several lines, as the worker sent it, goes as several data
	// lines, which the client joins again.
	for line := range bytes.SplitSeq(payload, []byte("\n")) {
		s.w.WriteString("\ndata: ")
		s.w.Write(line)
	}
	_, err := s.w.WriteString("\n\n")
	return err
}

// queued tells a streaming client where its request waits, as a comment:
// the stream opens at once, so the client knows it is heard.
func (s *sink) queued(data gjson.Result) error {
	if !s.stream {
		return nil
	}
	var p api.QueuePlace
	if err := json.Unmarshal([]byte(data.Raw), &p); err != nil {
		return fmt.Errorf("queued event: %w", err)
	}
	if s.w == nil {
		s.open()
	}
	return s.Comment(queuedComment(p))
}

func (s *sink) rename(payload []byte) []byte {
	if s.model == "" {
		return payload
	}
	return setModel(payload, s.model)
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

// open starts the SSE answer.
func (s *sink) open() {
	h := s.c.Response().Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.c.Response().WriteHeader(http.StatusOK)
	s.w = bufio.NewWriterSize(s.c.Response(), 16<<10)
}

// finish sends the end of a successful answer.
func (s *sink) finish() error {
	if s.w != nil {
		if _, err := s.w.WriteString(s.doneFrame()); err != nil {
			return err
		}
		return s.Flush()
	}
	if s.status == 0 {
		return fail(s.c, http.StatusBadGateway, "server_error", "upstream_error", "the worker answered nothing")
	}
	return s.answer()
}

// answer writes the worker's whole answer with its status.
func (s *sink) answer() error {
	ct := s.ctype
	if ct == "" {
		ct = echo.MIMEApplicationJSON
	}
	body := s.body
	if strings.HasPrefix(ct, echo.MIMEApplicationJSON) {
		body = s.rename(body)
	}
	return s.c.Blob(s.status, ct, body)
}

// fail reports a failed generation: the worker's own error answer, or an
// error answer, if nothing was sent yet; else an error event in the stream.
func (s *sink) fail(err error) error {
	if s.w == nil && s.status >= 400 {
		return s.answer()
	}
	msg := err.Error()
	code, status := "upstream_error", http.StatusBadGateway
	if strings.Contains(msg, "no ready worker") || strings.Contains(msg, "lost") {
		code, status = "no_capacity", http.StatusServiceUnavailable
		s.c.Response().Header().Set("Retry-After", "1")
	}
	if s.w == nil {
		return fail(s.c, status, "server_error", code, msg)
	}
	fmt.Fprintf(s.w, "data: %s\n\n%s", failJSON(status, "server_error", code, msg), s.doneFrame())
	return s.Flush()
}

// doneFrame is the stream's last frame. It carries the id of the job's
// last event the answer read, its end: a client that reconnects with it
// (an EventSource does) is told 204, nothing follows, and stops.
func (s *sink) doneFrame() string {
	if s.last == 0 {
		return "data: [DONE]\n\n"
	}
	return "id: " + strconv.FormatUint(s.last, 10) + "\ndata: [DONE]\n\n"
}

func clip(s string) string {
	if len(s) > 128 {
		return strings.ToValidUTF8(s[:128], "?") + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// tally follows a detached generation to its end for its usage alone.
type tally struct{ res api.InferResult }

func (t *tally) Frame(f relay.Frame) error {
	var e narration
	if f.Kind == bus.KindData && json.Unmarshal(f.Data, &e) == nil && e.Action == api.ActionResult {
		_ = json.Unmarshal(e.Data, &t.res)
	}
	return nil
}
func (*tally) Comment(string) error { return nil }
func (*tally) Done() error          { return nil }
func (*tally) Flush() error         { return nil }
