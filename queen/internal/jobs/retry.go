package jobs

import (
	"context"
	"fmt"
	"time"

	"rbee.dev/queen/internal/store"
)

// retryFor bounds how long a step of job creation is retried while
// JetStream is briefly unavailable: a NATS node died and its streams are
// electing a new leader, which takes a few seconds.
const retryFor = 15 * time.Second

// retry runs step until it succeeds, fails for good, or retryFor passes.
// Each try gets its own timeout, so a request without a deadline still
// ends. A step must be safe to repeat: retried is true from the second try
// on, so a step can tell a write its first try already stored.
func retry(ctx context.Context, step func(ctx context.Context, retried bool) error) error {
	deadline := time.Now().Add(retryFor)
	for try := 0; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := step(tctx, try > 0)
		cancel()
		if err == nil || !store.Transient(err) {
			return err
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		case <-time.After(time.Duration(min(try+1, 10)) * 100 * time.Millisecond):
		}
	}
}
