package agent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heartbeat puts the hive's record into the hives bucket at a third of the
// bucket's TTL, so two missed beats in a row still leave it alive. The key
// expires by itself if the hive dies; queens watching the bucket see that.
func (a *Agent) heartbeat(ctx context.Context, kv jetstream.KeyValue) {
	interval := 3 * time.Second
	if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 {
		interval = max(st.TTL()/3, 100*time.Millisecond)
	}
	failures := 0
	for {
		if err := a.beat(ctx, kv); err != nil && ctx.Err() == nil {
			failures++
			a.m.heartbeatFailures.Inc()
			a.log.Warn("heartbeat", "err", err, "failures", failures)
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		case <-a.changed:
		}
	}
}

// beatSoon asks for a heartbeat now, after a change queens should see at
// once (a model or worker added or gone).
func (a *Agent) beatSoon() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

func (a *Agent) beat(ctx context.Context, kv jetstream.KeyValue) error {
	data, err := json.Marshal(a.info(ctx))
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = kv.Put(pctx, a.cfg.ID, data)
	return err
}
