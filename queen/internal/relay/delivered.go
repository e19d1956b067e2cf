package relay

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// History sends job's stored narration after stream sequence after, up to
// the newest event stored when it begins, then the closing line, whether
// or not the job has ended: a look at a job so far, for a client that
// does not follow it.
func (h *Hub) History(ctx context.Context, w Sink, job string, after uint64) error {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	fw, err := h.fenceAt(ctx, w, job, after)
	if err != nil {
		return err
	}
	if _, err := h.replay(ctx, fw, job, &after); err != nil {
		return err
	}
	if err := fw.Done(); err != nil {
		return err
	}
	return fw.Flush()
}

// Delivered is what the clients of an inference were sent before its
// attempt `attempt`: the chunks of earlier attempts that the fence let
// through, read from the stored narration exactly as a client's stream
// reads them, so every client of the job had these and no others. It is
// nil when they had no chunk. The queen reads it when it hands the
// generation to the later attempt's hive, after the event that marks that
// attempt, past which the fence drops whatever earlier attempts still
// write.
func (h *Hub) Delivered(ctx context.Context, job string, attempt int) (*api.Continuation, error) {
	select {
	case <-h.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c := &collect{attempt: attempt}
	var last uint64
	fw, err := h.fenceAt(ctx, c, job, 0)
	if err != nil {
		return nil, err
	}
	if _, err := h.replay(ctx, fw, job, &last); err != nil {
		return nil, err
	}
	if !c.any {
		return nil, nil
	}
	return &c.got, nil
}

// collect is the sink of Delivered.
type collect struct {
	attempt int
	got     api.Continuation
	any     bool
}

func (c *collect) Frame(f Frame) error {
	if f.Kind != bus.KindEvent || f.Writer == bus.QueenWriter || f.c.attempt >= c.attempt {
		return nil
	}
	var e struct {
		Action  string `json:"action"`
		Message string `json:"message"`
		Data    any    `json:"data"`
	}
	if json.Unmarshal(f.Data, &e) != nil || e.Action != api.ActionChunk {
		return nil
	}
	c.any = true
	if s, ok := e.Data.(string); ok {
		chunk := gjson.Parse(s)
		if c.got.ID == "" {
			c.got.ID = chunk.Get("id").String()
		}
		chunk.Get("choices.#.finish_reason").ForEach(func(_, r gjson.Result) bool {
			if r.Type == gjson.String && r.Str != "" {
				c.got.FinishReason = r.Str
			}
			return true
		})
		var u api.Usage
		if usage := chunk.Get("usage"); usage.IsObject() && json.Unmarshal([]byte(usage.Raw), &u) == nil {
			c.got.Usage = &u
		}
	}
	if e.Message != "" {
		c.got.Text += e.Message
		c.got.Tokens++
	}
	return nil
}

func (c *collect) Comment(string) error { return nil }
func (c *collect) Done() error          { return nil }
func (c *collect) Flush() error         { return nil }
