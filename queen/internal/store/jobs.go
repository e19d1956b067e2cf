package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
)

// ErrNotFound means no record exists for the job (never created, or expired).
var ErrNotFound = errors.New("job not found")

// ErrExists means a record or key that was to be created exists already.
var ErrExists = errors.New("already exists")

// CreateJob stores a new record and returns its revision; it fails with
// ErrExists if the id is taken.
func (s *Store) CreateJob(ctx context.Context, j api.Job) (uint64, error) {
	data, err := s.EncodeJob(j)
	if err != nil {
		return 0, err
	}
	return s.CreateEncoded(ctx, j.JobID, data)
}

// ErrTooLarge means a job's record would not fit in one NATS message.
var ErrTooLarge = errors.New("job too large for the NATS server's max_payload")

// recordHeadroom is what a record may grow by after it is created (earlier
// hives, its end) and what a dispatch wraps around its request.
const recordHeadroom = 16 << 10

// maxRecord bounds a record whatever the server takes: a request body of
// up to 1 MiB carried as a string grows by its escapes (six bytes for a
// '<'), and records are kept for the whole retention.
const maxRecord = 2*api.MaxInferBody + recordHeadroom

// EncodeJob is j's record as CreateEncoded stores it, or ErrTooLarge when
// it would leave less than recordHeadroom below the connected server's
// max_payload (a large request body on a NATS server left at its 1 MB
// default) or pass maxRecord.
func (s *Store) EncodeJob(j api.Job) ([]byte, error) {
	data, err := api.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode job %s: %w", j.JobID, err)
	}
	limit := int64(maxRecord)
	if m := s.nc.MaxPayload(); m > 0 && m < limit {
		limit = m
	}
	if int64(len(data))+recordHeadroom > limit {
		return nil, fmt.Errorf("job record of %d bytes, limit %d: %w", len(data), limit-recordHeadroom, ErrTooLarge)
	}
	return data, nil
}

// CreateEncoded stores a new record encoded by EncodeJob and returns its
// revision.
func (s *Store) CreateEncoded(ctx context.Context, id string, data []byte) (uint64, error) {
	rev, err := s.jobs.Create(ctx, id, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("create job %s: %w", id, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("create job %s: %w", id, err)
	}
	return rev, nil
}

// GetJob reads a record and its revision.
func (s *Store) GetJob(ctx context.Context, id string) (api.Job, uint64, error) {
	var j api.Job
	e, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return j, 0, ErrNotFound
	}
	if err != nil {
		return j, 0, fmt.Errorf("get job %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return j, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return j, e.Revision(), nil
}

// UpdateJob applies change to the record by compare-and-set, retrying with
// jitter when another queen wrote in between. change returns false to leave
// the record as it is. It returns the record as written, or as read when
// change declined, and that record's revision.
func (s *Store) UpdateJob(ctx context.Context, id string, change func(*api.Job) bool) (api.Job, uint64, error) {
	return s.UpdateJobAt(ctx, api.Job{JobID: id}, 0, change)
}

// UpdateJobAt is UpdateJob starting from a record the caller holds at
// revision rev (0: unknown), which saves reading it when it is current. A
// copy that may be stale is trusted only for a change: when change declines
// it, the record is read and asked again.
func (s *Store) UpdateJobAt(ctx context.Context, known api.Job, rev uint64, change func(*api.Job) bool) (api.Job, uint64, error) {
	id := known.JobID
	for attempt := 0; ; attempt++ {
		j, fresh := known, false
		if attempt > 0 || rev == 0 {
			var err error
			if j, rev, err = s.GetJob(ctx, id); err != nil {
				return j, 0, err
			}
			fresh = true
		}
		if !change(&j) {
			if !fresh {
				rev = 0
				continue
			}
			return j, rev, nil
		}
		data, err := api.Marshal(j)
		if err != nil {
			return j, 0, fmt.Errorf("encode job %s: %w", id, err)
		}
		wrote, err := s.jobs.Update(ctx, id, data, rev)
		if err == nil {
			return j, wrote, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) || attempt >= 20 {
			return j, 0, fmt.Errorf("update job %s: %w", id, err)
		}
		time.Sleep(time.Duration(rand.IntN(2000*(attempt+1))) * time.Microsecond)
	}
}

// PurgeJob deletes a record; every queen's watch sees it leave.
func (s *Store) PurgeJob(ctx context.Context, id string) error {
	if err := s.jobs.Purge(ctx, id); err != nil {
		return fmt.Errorf("purge job %s: %w", id, err)
	}
	return nil
}

// Transient reports whether err, from a write to NATS, may go away by
// itself: no responders, a timeout, a reconnecting connection, or a 503
// from JetStream while a stream elects a new leader.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		(errors.As(err, &apiErr) && apiErr.Code == 503)
}
