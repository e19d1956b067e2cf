package refworker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"rbee.dev/shared/api"
)

// maxBody bounds a request body; the worker has no use for large prompts.
const maxBody = 4 << 20

// Handler routes the worker's endpoints, all in one place.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", only(http.MethodGet, s.health))
	mux.HandleFunc("/stats", only(http.MethodGet, s.stats))
	mux.HandleFunc("/v1/models", only(http.MethodGet, s.loaded(s.models)))
	mux.HandleFunc("/v1/chat/completions", only(http.MethodPost, s.loaded(s.rec.wrap(s.chat))))
	mux.HandleFunc("/v1/completions", only(http.MethodPost, s.loaded(s.rec.wrap(s.completions))))
	mux.HandleFunc("/v1/embeddings", only(http.MethodPost, s.loaded(s.rec.wrap(s.embeddings))))
	mux.HandleFunc("/v1/rerank", only(http.MethodPost, s.loaded(s.rec.wrap(s.rerank))))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func only(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", fmt.Sprintf("%s takes %s, not %s", r.URL.Path, method, r.Method))
			return
		}
		h(w, r)
	}
}

// loaded answers 503 while the model is loading, as llama-server does.
func (s *Server) loaded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeError(w, http.StatusServiceUnavailable, "unavailable_error", "model_loading", "Loading model")
			return
		}
		h(w, r)
	}
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	if !s.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.ModelEntryList{Object: "list", Data: []api.ModelEntry{{ID: s.modelID, Object: "model", Created: s.created, OwnedBy: "rbee"}}})
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decode(w, r, &req) || !s.knownModel(w, req.Model) {
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_request", "messages is required: a list of {role, content}")
		return
	}
	maxTokens := req.MaxTokens
	if maxTokens == nil {
		maxTokens = req.MaxCompletionTokens
	}
	text, prefix, prompt := chatPrompt(req.Messages)
	limit, ok := s.limit(w, maxTokens, prompt)
	if !ok {
		return
	}
	s.requests.Add(1)
	g, id := newGenerator(text), s.newID("chatcmpl")
	g.skip(prefix)

	if req.Stream {
		st := newStream(w)
		first := chunk{ID: id, Object: "chat.completion.chunk", Created: s.created, Model: s.modelID,
			Choices: []chunkChoice{{Delta: &chunkDelta{Role: "assistant"}}}}
		if st.send(first) != nil {
			s.cancelled.Add(1)
			return
		}
		n, finish, err := s.generate(r.Context(), g, limit, func(tok string) error {
			return st.send(chunk{ID: id, Object: "chat.completion.chunk", Created: s.created, Model: s.modelID,
				Choices: []chunkChoice{{Delta: &chunkDelta{Content: tok}}}})
		})
		if err != nil {
			s.cancelled.Add(1)
			return
		}
		s.finishStream(st, chunk{ID: id, Object: "chat.completion.chunk", Created: s.created, Model: s.modelID,
			Choices: []chunkChoice{{Delta: &chunkDelta{}, FinishReason: &finish}}}, req.StreamOptions, prompt, n)
		return
	}

	var sb strings.Builder
	n, finish, err := s.generate(r.Context(), g, limit, func(tok string) error { sb.WriteString(tok); return nil })
	if err != nil {
		s.cancelled.Add(1)
		return
	}
	writeJSON(w, http.StatusOK, chatResponse{
		ID: id, Object: "chat.completion", Created: s.created, Model: s.modelID,
		Choices: []chatChoice{{Message: assistantMessage{Role: "assistant", Content: sb.String()}, FinishReason: finish}},
		Usage:   newUsage(prompt, n),
	})
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if !decode(w, r, &req) || !s.knownModel(w, req.Model) {
		return
	}
	text, err := promptText(req.Prompt)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_request", err.Error())
		return
	}
	prompt := countTokens(text)
	limit, ok := s.limit(w, req.MaxTokens, prompt)
	if !ok {
		return
	}
	s.requests.Add(1)
	g, id := newGenerator(text), s.newID("cmpl")

	if req.Stream {
		st := newStream(w)
		n, finish, err := s.generate(r.Context(), g, limit, func(tok string) error {
			return st.send(chunk{ID: id, Object: "text_completion", Created: s.created, Model: s.modelID,
				Choices: []chunkChoice{{Text: &tok}}})
		})
		if err != nil {
			s.cancelled.Add(1)
			return
		}
		empty := ""
		s.finishStream(st, chunk{ID: id, Object: "text_completion", Created: s.created, Model: s.modelID,
			Choices: []chunkChoice{{Text: &empty, FinishReason: &finish}}}, req.StreamOptions, prompt, n)
		return
	}

	var sb strings.Builder
	n, finish, err := s.generate(r.Context(), g, limit, func(tok string) error { sb.WriteString(tok); return nil })
	if err != nil {
		s.cancelled.Add(1)
		return
	}
	writeJSON(w, http.StatusOK, completionResponse{
		ID: id, Object: "text_completion", Created: s.created, Model: s.modelID,
		Choices: []completionChoice{{Text: sb.String(), FinishReason: finish}},
		Usage:   newUsage(prompt, n),
	})
}

// finishStream sends the chunk with the finish reason, the usage chunk when
// asked for, and the closing [DONE].
func (s *Server) finishStream(st *stream, last chunk, opts *streamOptions, prompt, n int) {
	if st.send(last) != nil {
		return
	}
	if opts != nil && opts.IncludeUsage {
		u := chunk{ID: last.ID, Object: last.Object, Created: last.Created, Model: last.Model, Choices: []chunkChoice{}, Usage: newUsage(prompt, n)}
		if st.send(u) != nil {
			return
		}
	}
	_ = st.raw("[DONE]")
}

// knownModel accepts an empty model name (llama-server does too) and the
// one this worker serves.
func (s *Server) knownModel(w http.ResponseWriter, model string) bool {
	if model == "" || model == s.modelID {
		return true
	}
	writeError(w, http.StatusNotFound, "invalid_request_error", "model_not_found",
		fmt.Sprintf("model %q not found; this worker serves %q", model, s.modelID))
	return false
}

// limit is how many tokens the answer may have: max_tokens (default 16),
// cut to what the context leaves after the prompt.
func (s *Server) limit(w http.ResponseWriter, maxTokens *int, prompt int) (int, bool) {
	n := DefaultMaxTokens
	if maxTokens != nil {
		n = *maxTokens
	}
	if n < 1 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_max_tokens", fmt.Sprintf("max_tokens must be at least 1, not %d", n))
		return 0, false
	}
	if prompt >= s.cfg.CtxSize {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "context_length_exceeded",
			fmt.Sprintf("the prompt is %d tokens; the context holds %d", prompt, s.cfg.CtxSize))
		return 0, false
	}
	return min(n, s.cfg.CtxSize-prompt), true
}

func (s *Server) newID(prefix string) string {
	return fmt.Sprintf("%s-%012x", prefix, s.ids.Add(1))
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "payload_too_large", fmt.Sprintf("body is over %d bytes", maxBody))
	default:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "invalid JSON body: "+err.Error())
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	writeJSON(w, status, apiError{Error: errorDetail{Message: msg, Type: typ, Code: code}})
}

// stream writes Server-Sent Events, flushing each one.
type stream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newStream(w http.ResponseWriter) *stream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &stream{w: w, rc: http.NewResponseController(w)}
}

func (st *stream) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return st.raw(string(b))
}

// raw sends one event; data of several lines goes as several data lines.
func (st *stream) raw(data string) error {
	if _, err := fmt.Fprintf(st.w, "data: %s\n\n", strings.ReplaceAll(data, "\n", "\ndata: ")); err != nil {
		return err
	}
	return st.rc.Flush()
}
