package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"rbee.dev/shared/api"
)

// ChatRequest is a streaming chat completion as rbee infer sends it to the
// queen's OpenAI-compatible API.
type ChatRequest struct {
	Model       string        `json:"model"`
	Messages    []api.Message `json:"messages"`
	MaxTokens   int           `json:"max_tokens,omitempty"`
	Temperature *float64      `json:"temperature,omitempty"`
	// Download is rbee's extension: where to fetch the model from if no
	// hive holds it.
	Download string `json:"download,omitempty"`
}

// ChatResult is what a streamed completion came to.
type ChatResult struct {
	ID           string    `json:"id"`
	JobID        string    `json:"job_id"`
	Model        string    `json:"model"`
	Content      string    `json:"content"`
	FinishReason string    `json:"finish_reason,omitempty"`
	Usage        api.Usage `json:"usage"`
}

// Chat streams a chat completion, calling onToken with each piece of
// content as it arrives. Leaving (ctx ending) cancels the generation: the
// queen cancels the request's job when its client goes away.
func (c *Client) Chat(ctx context.Context, req ChatRequest, onToken func(string)) (ChatResult, error) {
	body, err := json.Marshal(struct {
		ChatRequest
		Stream        bool            `json:"stream"`
		StreamOptions map[string]bool `json:"stream_options"`
	}{req, true, map[string]bool{"include_usage": true}})
	if err != nil {
		return ChatResult{}, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return ChatResult{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "text/event-stream")
	c.authorize(hr)
	resp, err := c.hc.Do(hr)
	if err != nil {
		return ChatResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ChatResult{}, readAPIError(resp)
	}
	res := ChatResult{Model: req.Model, JobID: resp.Header.Get("X-Rbee-Job")}
	var content strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), MaxEventBytes)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		if string(data) == api.SSEDone {
			res.Content = content.String()
			return res, nil
		}
		var ch struct {
			ID      string `json:"id"`
			Choices []struct {
				Delta        struct{ Content string } `json:"delta"`
				FinishReason *string                  `json:"finish_reason"`
			} `json:"choices"`
			Usage *api.Usage `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &ch); err != nil {
			return res, fmt.Errorf("bad chunk from the queen: %w", err)
		}
		if ch.Error != nil {
			return res, errors.New(ch.Error.Message)
		}
		if res.ID == "" && ch.ID != "" {
			res.ID = ch.ID
		}
		for _, choice := range ch.Choices {
			if t := choice.Delta.Content; t != "" {
				content.WriteString(t)
				if onToken != nil {
					onToken(t)
				}
			}
			if choice.FinishReason != nil {
				res.FinishReason = *choice.FinishReason
			}
		}
		if ch.Usage != nil {
			res.Usage = *ch.Usage
		}
	}
	if err := sc.Err(); err != nil {
		return res, err
	}
	return res, errors.New("the answer ended without [DONE]")
}
