package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/bus"
)

// narrGet reads single narration messages through the stream's JSON API,
// never by direct get. A direct get's answer gives the message's subject
// and sequence as headers after the writer's own, and a hive writes its
// frames' headers: it could make its frame read as another writer's (the
// queen's), of another job, at another sequence; with a blank line in its
// header block the server's headers are not even read. The API's answer
// names subject and sequence in its JSON body, out of any writer's reach.
// Hives keep direct gets, on their own subjects only (natsauth).
type narrGet struct{ nc *nats.Conn }

// msgGetRequest is the JSON API's request: the message at Seq, the first
// on NextFor from Seq, or the last on LastFor.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// getTimeout bounds a read whose context has no deadline.
const getTimeout = 5 * time.Second

func (g narrGet) do(ctx context.Context, req msgGetRequest) (*jetstream.RawStreamMsg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, getTimeout)
		defer cancel()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	reply, err := g.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+bus.NarrStream, body)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs"`
			Data     []byte    `json:"data"`
			Time     time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("stream %s: message get answer: %w", bus.NarrStream, err)
	}
	if resp.Error != nil {
		if resp.Error.Code == 404 {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, fmt.Errorf("stream %s: message get: %s (%d)", bus.NarrStream, resp.Error.Description, resp.Error.ErrCode)
	}
	if resp.Message == nil {
		return nil, fmt.Errorf("stream %s: message get answered no message", bus.NarrStream)
	}
	m := resp.Message
	// A header block the client library cannot read leaves the frame to be
	// judged by its body, as one stored before writers set headers.
	hdr, _ := nats.DecodeHeadersMsg(m.Header)
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: hdr, Data: m.Data, Time: m.Time}, nil
}

// last is the newest message on subject, or jetstream.ErrMsgNotFound.
func (g narrGet) last(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	return g.do(ctx, msgGetRequest{LastFor: subject})
}

// at is the message at seq or, with a subject, the first on subject from
// seq on; jetstream.ErrMsgNotFound if none.
func (g narrGet) at(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	return g.do(ctx, msgGetRequest{Seq: seq, NextFor: subject})
}
