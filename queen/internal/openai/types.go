// Package openai is the queen's OpenAI-compatible API: /v1/models,
// /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/rerank.
// Every request is an infer job, routed to a hive with a ready worker for
// the model (starting one where the model is on disk), that carries the
// client's body to the worker; the worker's answer, a body or each chunk
// of a stream, comes back as it was, but for the model's name.
package openai

import (
	"encoding/json"

	"github.com/labstack/echo/v4"

	"rbee.dev/shared/api"
)

// request is the part of a client's body the queen reads; the body itself
// travels to the worker.
type request struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// Download is rbee's extension: a model source (hf:org/repo[:file] or
	// an http(s) URL) to fetch, as the model's id, onto a hive when no hive
	// serves or holds the model yet. The hive drops it from the body.
	Download string `json:"download"`
}

// fail answers with OpenAI's error shape.
func fail(c echo.Context, status int, typ, code, msg string) error {
	return c.JSON(status, api.OpenAIError(typ, code, msg))
}

func failJSON(status int, typ, code, msg string) []byte {
	data, _ := json.Marshal(api.OpenAIError(typ, code, msg))
	return data
}
