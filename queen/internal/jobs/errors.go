package jobs

import "errors"

// Errors the HTTP layer turns into statuses.
var (
	// ErrNotFound: no such job (never created, or past retention).
	ErrNotFound = errors.New("job not found")
	// ErrTerminal: the job already ended, so it cannot be cancelled.
	ErrTerminal = errors.New("job already ended")
	// ErrNoCapableHive: no live hive can take the job now.
	ErrNoCapableHive = errors.New("no capable hive")
	// ErrUnavailable: NATS did not answer for longer than a retry covers.
	ErrUnavailable = errors.New("cluster storage unavailable")
)
