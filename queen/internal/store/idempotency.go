package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// IdempotencyClaim is what the idempotency bucket keeps for a key: the job
// it created and a hash of the request that created it.
type IdempotencyClaim struct {
	JobID   string `json:"job_id"`
	Request string `json:"request"`
}

// ClaimIdempotencyKey stores c under key unless the key is claimed
// already, which is ErrExists: of concurrent requests with one key, one
// wins.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, key string, c IdempotencyClaim) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode idempotency claim: %w", err)
	}
	_, err = s.idem.Create(ctx, key, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("idempotency key: %w", ErrExists)
	}
	if err != nil {
		return fmt.Errorf("idempotency key: %w", err)
	}
	return nil
}

// IdempotencyKey reads the claim on key; it reports false when the key is
// unused.
func (s *Store) IdempotencyKey(ctx context.Context, key string) (IdempotencyClaim, bool, error) {
	var c IdempotencyClaim
	e, err := s.idem.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return c, false, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("idempotency key: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return c, false, fmt.Errorf("idempotency key: %w", err)
	}
	return c, true, nil
}
