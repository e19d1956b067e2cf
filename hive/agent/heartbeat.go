package agent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// heartbeat puts the hive's record into the hives bucket until ctx ends.
// The key expires by itself if the hive dies; queens watching the bucket
// see that, so a hive is lost a bucket TTL after its last beat whatever
// the beat's pace.
//
// A hive with work beats at a third of the TTL, keeping the free slots
// queens place by fresh. A steady one (nothing running at this beat nor
// the one before) beats at half the TTL: with a thousand idle hives that
// is a third fewer writes for every queen to store and decode. A change
// queens should see at once beats at once (beatSoon), and a failed beat
// is tried again after a tenth of the TTL, so one failure does not cost
// the hive its key either way.
func (a *Agent) heartbeat(ctx context.Context, kv jetstream.KeyValue) {
	ttl := 15 * time.Second
	if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 {
		ttl = st.TTL()
	}
	failures, idleBeats := 0, 0
	for {
		idle, err := a.beat(ctx, kv, min(max(ttl/5, time.Second), 5*time.Second))
		if err != nil && ctx.Err() == nil {
			failures++
			a.m.heartbeatFailures.Inc()
			a.log.Warn("heartbeat", "err", err, "failures", failures)
		} else {
			failures = 0
		}
		if idle {
			idleBeats++
		} else {
			idleBeats = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(beatInterval(ttl, idleBeats, failures)):
		case <-a.changed:
		}
	}
}

// beatInterval is the wait before the next beat, from the bucket's TTL,
// how many beats in a row found nothing running, and how many in a row
// failed.
func beatInterval(ttl time.Duration, idleBeats, failures int) time.Duration {
	d := ttl / 3
	switch {
	case failures > 0:
		d = ttl / 10
	case idleBeats >= 2:
		d = ttl / 2
	}
	return max(d, 100*time.Millisecond)
}

// beatSoon asks for a heartbeat now, after a change queens should see at
// once (a model or worker added or gone).
func (a *Agent) beatSoon() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// beat writes one heartbeat and says whether it found nothing running.
// A write waits at most wait, so a slow one leaves time for another try
// before the key expires.
func (a *Agent) beat(ctx context.Context, kv jetstream.KeyValue, wait time.Duration) (idle bool, err error) {
	h := a.info(ctx)
	data, err := json.Marshal(h)
	if err != nil {
		return false, err
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	_, err = kv.Put(pctx, a.cfg.ID, data)
	return len(h.Running) == 0, err
}
