// Package openai is the queen's OpenAI-compatible API: /v1/models,
// /v1/chat/completions and /v1/completions. Every request is an infer job,
// routed to a hive with a ready worker for the model (starting one where
// the model is on disk), and its token narration is re-encoded as OpenAI
// responses or chunks.
package openai

import (
	"encoding/json"

	"github.com/labstack/echo/v4"

	"rbee.dev/shared/api"
)

// request is the part of a chat or completion request rbee reads; other
// fields OpenAI clients send are accepted and ignored.
type request struct {
	Model         string        `json:"model"`
	Messages      []api.Message `json:"messages"`
	Prompt        any           `json:"prompt"`
	MaxTokens     *int          `json:"max_tokens"`
	MaxCompletion *int          `json:"max_completion_tokens"`
	Temperature   *float64      `json:"temperature"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	N *int `json:"n"`
	// Download is rbee's extension: a model source (hf:org/repo[:file] or
	// an http(s) URL) to fetch, as the model's id, onto a hive when no hive
	// serves or holds the model yet.
	Download string `json:"download"`
}

type message struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

type choice struct {
	Index        int      `json:"index"`
	Message      *message `json:"message,omitempty"`
	Delta        *message `json:"delta,omitempty"`
	Text         *string  `json:"text,omitempty"`
	FinishReason *string  `json:"finish_reason"`
	Logprobs     any      `json:"logprobs"`
}

type response struct {
	ID      string     `json:"id"`
	Object  string     `json:"object"`
	Created int64      `json:"created"`
	Model   string     `json:"model"`
	Choices []choice   `json:"choices"`
	Usage   *api.Usage `json:"usage,omitempty"`
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string       `json:"object"`
	Data   []modelEntry `json:"data"`
}

// errorBody is OpenAI's error shape.
type errorBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

// fail answers with OpenAI's error shape.
func fail(c echo.Context, status int, typ, code, msg string) error {
	var b errorBody
	b.Error.Message, b.Error.Type, b.Error.Code = msg, typ, code
	return c.JSON(status, b)
}

func failJSON(status int, typ, code, msg string) []byte {
	var b errorBody
	b.Error.Message, b.Error.Type, b.Error.Code = msg, typ, code
	data, _ := json.Marshal(b)
	return data
}
