package workers

import "errors"

// Errors the supervisor returns; callers match them with errors.Is.
var (
	// ErrNotFound means no worker has the id asked for.
	ErrNotFound = errors.New("worker not found")
	// ErrUnknownBackend means the backend is not in the hive's catalog.
	ErrUnknownBackend = errors.New("unknown worker backend")
	// ErrClosed means the supervisor is stopping and starts no workers.
	ErrClosed = errors.New("worker supervisor stopped")
)
