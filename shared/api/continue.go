package api

import (
	"encoding/json"
	"errors"
)

// Continuation is what a streamed generation's client already has when
// the generation moves to another worker: the queen reads it from the
// chunks of the job's narration that the relay's fence let through, the
// same ones every client of the job was sent. The next attempt continues
// from it (the text as an assistant prefix, or appended to the prompt)
// instead of starting over, so the client sees one stream.
type Continuation struct {
	// Text is the generated text the client has.
	Text string `json:"text"`
	// Tokens counts the chunks that carried text: one token each, as
	// llama-server and the reference worker stream them.
	Tokens int `json:"tokens"`
	// ID is the id of the chunks the client has; the continuation's
	// chunks are given it too.
	ID string `json:"id,omitempty"`
	// FinishReason is the finish reason the client has: its answer is
	// whole, and only what it lacks of the stream's end (Usage) is sent,
	// with nothing generated again.
	FinishReason string `json:"finish_reason,omitempty"`
	// Usage is the usage the client has, if any.
	Usage *Usage `json:"usage,omitempty"`
}

// ContinueRefusal says why an infer job cannot continue on another worker
// from what its client has, nil when it can: a streamed chat or text
// completion, with one choice and no structured output (a continuation
// could break a JSON schema the first worker was holding to), a string
// prompt for a completion.
func ContinueRefusal(in *Infer) error {
	if in == nil || len(in.Body) == 0 {
		return errors.New("only a client's OpenAI request can continue")
	}
	if in.Path != InferChat && in.Path != InferCompletions {
		return errors.New("only chat and text completions can continue")
	}
	var b struct {
		Stream         bool            `json:"stream"`
		N              *int            `json:"n"`
		Prompt         json.RawMessage `json:"prompt"`
		ResponseFormat *struct {
			Type string `json:"type"`
		} `json:"response_format"`
		Tools json.RawMessage `json:"tools"`
	}
	if err := json.Unmarshal(in.Body, &b); err != nil {
		return errors.New("the request body does not decode")
	}
	switch {
	case !b.Stream:
		return errors.New("only a streamed generation can continue")
	case b.N != nil && *b.N != 1:
		return errors.New("a request for several choices (n > 1) cannot continue")
	case b.ResponseFormat != nil && b.ResponseFormat.Type != "" && b.ResponseFormat.Type != "text":
		return errors.New("structured output cannot continue")
	case len(b.Tools) > 0 && string(b.Tools) != "null" && string(b.Tools) != "[]":
		return errors.New("a request with tools cannot continue")
	case in.Path == InferCompletions:
		var s string
		if json.Unmarshal(b.Prompt, &s) != nil {
			return errors.New("only a completion with one string prompt can continue")
		}
	}
	return nil
}

// Whole reports whether c, what the client of a streamed generation has,
// is its whole answer: the request asks for one streamed choice, and the
// client has its finish reason. Only the end of the stream (the usage) is missing
// then, which needs no worker, whatever else the request asks.
func (c *Continuation) Whole(in *Infer) bool {
	if c == nil || c.FinishReason == "" || in == nil {
		return false
	}
	var b struct {
		Stream bool            `json:"stream"`
		N      *int            `json:"n"`
		Prompt json.RawMessage `json:"prompt"`
	}
	if json.Unmarshal(in.Body, &b) != nil || !b.Stream || (b.N != nil && *b.N != 1) {
		return false
	}
	if in.Path == InferCompletions {
		var one string // a list of prompts has a choice for each
		return json.Unmarshal(b.Prompt, &one) == nil
	}
	return in.Path == InferChat
}
