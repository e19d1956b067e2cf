package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DispatchMsg describes one dispatch message on a hive's work queue; its body
// (the job's request, its deadline and the like) is the caller's JSON.
type DispatchMsg struct {
	Hive      string
	Job       string
	Attempt   int
	Operation string
}

// MsgID is the dispatch's message id: a publish retried within the
// stream's duplicates window is stored once per attempt.
func (d DispatchMsg) MsgID() string { return d.Job + "-" + strconv.Itoa(d.Attempt) }

// PublishDispatch puts a dispatch on its hive's work queue and returns its
// stream sequence, by which a queen can delete it again.
func PublishDispatch(ctx context.Context, js jetstream.JetStream, d DispatchMsg, body []byte) (uint64, error) {
	msg := &nats.Msg{Subject: Dispatch(d.Hive), Data: body, Header: nats.Header{
		OperationHeader: []string{d.Operation},
		HeaderAttempt:   []string{strconv.Itoa(max(d.Attempt, 1))},
	}}
	ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(d.MsgID()))
	if err != nil {
		return 0, fmt.Errorf("dispatch job %s: %w", d.Job, err)
	}
	return ack.Sequence, nil
}

// DispatchOperation is a pulled dispatch's operation, from its header
// alone, "" when a queen did not send one.
func DispatchOperation(msg jetstream.Msg) string {
	return msg.Headers().Get(OperationHeader)
}

// NextDispatch pulls one dispatch from a hive's work-queue consumer,
// waiting until ctx ends. Pulling one at a time, only when a slot is free,
// keeps dispatches from waiting in a buffer with their ack timers running.
// While the request waits, the server says every PullHeartbeat that it
// still holds it, so a request the server lost (a restart, a new consumer
// leader) fails after two missed ones rather than at ctx's end.
func NextDispatch(ctx context.Context, cons jetstream.Consumer) (jetstream.Msg, error) {
	opts := []jetstream.FetchOpt{jetstream.FetchContext(ctx)}
	if d, ok := ctx.Deadline(); ok && time.Until(d) >= 2*PullHeartbeat {
		opts = append(opts, jetstream.FetchHeartbeat(PullHeartbeat))
	}
	return cons.Next(opts...)
}

// PullHeartbeat is how often the server confirms a waiting pull request
// of NextDispatch that waits at least twice as long.
const PullHeartbeat = 10 * time.Second
