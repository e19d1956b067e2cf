package bus

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
)

// CancelRequest asks a hive to stop one job, on the hive's Cancel subject.
type CancelRequest struct {
	JobID string `json:"job_id"`
}

// CancelReply is the hive's answer: whether it had the job running, in
// which case it stops the work and stores the job's end itself.
type CancelReply struct {
	Running bool `json:"running"`
}

// RequestCancel asks hive to cancel a job and waits for its reply until ctx
// ends.
func RequestCancel(ctx context.Context, nc *nats.Conn, hive string, req CancelRequest) (CancelReply, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return CancelReply{}, fmt.Errorf("encode cancel of job %s: %w", req.JobID, err)
	}
	m, err := nc.RequestWithContext(ctx, Cancel(hive), data)
	if err != nil {
		return CancelReply{}, fmt.Errorf("cancel job %s on hive %s: %w", req.JobID, hive, err)
	}
	var reply CancelReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return CancelReply{}, fmt.Errorf("decode cancel reply of hive %s: %w", hive, err)
	}
	return reply, nil
}

// ServeCancel answers hive's cancel requests with handle until the
// subscription is drained or unsubscribed. A request that does not decode
// is answered as a job not running.
func ServeCancel(nc *nats.Conn, hive string, handle func(CancelRequest) CancelReply) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(Cancel(hive), func(m *nats.Msg) {
		var req CancelRequest
		var reply CancelReply
		if err := json.Unmarshal(m.Data, &req); err == nil {
			reply = handle(req)
		}
		data, _ := json.Marshal(reply)
		_ = m.Respond(data)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to cancels of hive %s: %w", hive, err)
	}
	return sub, nil
}
