package jobs

import (
	"errors"

	"rbee.dev/queen/internal/store"
)

// Errors the HTTP layer turns into statuses.
var (
	// ErrNotFound: no such job (never created, or past retention).
	ErrNotFound = errors.New("job not found")
	// ErrTerminal: the job already ended, so it cannot be cancelled.
	ErrTerminal = errors.New("job already ended")
	// ErrNoCapableHive: no live hive can take the job now.
	ErrNoCapableHive = errors.New("no capable hive")
	// ErrIdempotencyMismatch: the Idempotency-Key was used before, by the
	// same principal, for a different request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused for a different request")
	// ErrIdempotencyPending: a request with the same Idempotency-Key is
	// still creating its job.
	ErrIdempotencyPending = errors.New("a request with this idempotency key is still in progress")
	// ErrQueueFull: the model's inference queue over the cluster is at
	// its bound (Service.InferQueueDepth).
	ErrQueueFull = errors.New("queue full")
	// ErrTooLarge: the job's record would not fit in a NATS message.
	ErrTooLarge = store.ErrTooLarge
	// ErrUnavailable: NATS did not answer for longer than a retry covers.
	ErrUnavailable = errors.New("cluster storage unavailable")
)
