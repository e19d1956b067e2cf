package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
)

// ErrNotFound means no record exists for the job (never created, or expired).
var ErrNotFound = errors.New("job not found")

// CreateJob stores a new record and returns its revision; it fails if the
// id is taken.
func (s *Store) CreateJob(ctx context.Context, j api.Job) (uint64, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return 0, fmt.Errorf("encode job %s: %w", j.JobID, err)
	}
	rev, err := s.Jobs.Create(ctx, j.JobID, data)
	if err != nil {
		return 0, fmt.Errorf("create job %s: %w", j.JobID, err)
	}
	return rev, nil
}

// GetJob reads a record and its revision.
func (s *Store) GetJob(ctx context.Context, id string) (api.Job, uint64, error) {
	var j api.Job
	e, err := s.Jobs.Get(ctx, id)
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
// the record as it is.
func (s *Store) UpdateJob(ctx context.Context, id string, change func(*api.Job) bool) (api.Job, error) {
	return s.UpdateJobAt(ctx, api.Job{JobID: id}, 0, change)
}

// UpdateJobAt is UpdateJob starting from a record the caller holds at
// revision rev (0: unknown), which saves reading it when it is current. A
// copy that may be stale is trusted only for a change: when change declines
// it, the record is read and asked again.
func (s *Store) UpdateJobAt(ctx context.Context, known api.Job, rev uint64, change func(*api.Job) bool) (api.Job, error) {
	id := known.JobID
	for attempt := 0; ; attempt++ {
		j, fresh := known, false
		if attempt > 0 || rev == 0 {
			var err error
			if j, rev, err = s.GetJob(ctx, id); err != nil {
				return j, err
			}
			fresh = true
		}
		if !change(&j) {
			if !fresh {
				rev = 0
				continue
			}
			return j, nil
		}
		data, err := json.Marshal(j)
		if err != nil {
			return j, fmt.Errorf("encode job %s: %w", id, err)
		}
		_, err = s.Jobs.Update(ctx, id, data, rev)
		if err == nil {
			return j, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) || attempt >= 20 {
			return j, fmt.Errorf("update job %s: %w", id, err)
		}
		time.Sleep(time.Duration(rand.IntN(2000*(attempt+1))) * time.Microsecond)
	}
}
