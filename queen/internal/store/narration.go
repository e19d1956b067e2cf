package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/subject"
)

// ErrAlreadyEnded means the job's one end event is stored already.
var ErrAlreadyEnded = errors.New("job already ended")

// Narrate stores one queen-written event of kind on the job's subject.
func (s *Store) Narrate(ctx context.Context, kind string, e api.Event) error {
	fill(&e)
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if _, err := s.JS.Publish(ctx, subject.Narr(e.JobID, subject.QueenWriter, kind), data); err != nil {
		return fmt.Errorf("narrate job %s: %w", e.JobID, err)
	}
	return nil
}

// End stores e as the job's end event unless one exists. The server checks
// and writes in one step, so a hive and any number of queens racing to end
// a job store exactly one end between them.
func (s *Store) End(ctx context.Context, e api.Event) error {
	if e.Seq == 0 {
		last, err := s.LastSeq(ctx, e.JobID)
		if err != nil {
			return err
		}
		e.Seq = last + 1
	}
	e.Action = "end"
	if e.Level == "" {
		e.Level = api.LevelError
		if e.State == api.StateDone {
			e.Level = api.LevelInfo
		}
	}
	fill(&e)
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode end: %w", err)
	}
	_, err = s.JS.Publish(ctx, subject.NarrEndSubject(e.JobID, subject.QueenWriter, e.Attempt), data,
		jetstream.WithExpectLastSequenceForSubject(0, subject.NarrEnd(e.JobID, e.Attempt)))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return ErrAlreadyEnded
	}
	if err != nil {
		return fmt.Errorf("end job %s: %w", e.JobID, err)
	}
	return nil
}

func fill(e *api.Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Actor == "" {
		e.Actor = "queen"
	}
	if e.Level == "" {
		e.Level = api.LevelInfo
	}
}

// LastSeq is the per-job sequence of the job's newest event, 0 if none.
func (s *Store) LastSeq(ctx context.Context, job string) (uint64, error) {
	m, err := s.Narr.GetLastMsgForSubject(ctx, subject.NarrJob(job))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last event of job %s: %w", job, err)
	}
	var e struct {
		Seq uint64 `json:"seq"`
	}
	_ = json.Unmarshal(m.Data, &e)
	return e.Seq, nil
}

// LastStreamSeq is the stream sequence of the job's newest event, 0 if none.
func (s *Store) LastStreamSeq(ctx context.Context, job string) (uint64, error) {
	m, err := s.Narr.GetLastMsgForSubject(ctx, subject.NarrJob(job))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last event of job %s: %w", job, err)
	}
	return m.Sequence, nil
}

// EndOf returns the job's end event and its stream sequence, or nil.
func (s *Store) EndOf(ctx context.Context, job string) (*api.EndInfo, uint64, error) {
	m, err := s.Narr.GetLastMsgForSubject(ctx, subject.NarrEndAny(job))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("end of job %s: %w", job, err)
	}
	var end api.EndInfo
	if err := json.Unmarshal(m.Data, &end); err != nil {
		return nil, 0, fmt.Errorf("decode end of job %s: %w", job, err)
	}
	end.Attempt = max(subject.EndAttempt(m.Subject), 1)
	return &end, m.Sequence, nil
}

// ApplyEnd copies an end event into a record; it reports whether anything
// changed, for use with UpdateJob.
func ApplyEnd(j *api.Job, end api.EndInfo) bool {
	// An end of an earlier attempt, from a hive that was lost and came
	// back, does not end the attempt that replaced it.
	if api.Terminal(j.State) || max(end.Attempt, 1) < j.Attempt {
		return false
	}
	j.State, j.Error, j.ExitCode = end.State, end.Error, end.ExitCode
	t := end.Time
	j.FinishedAt = &t
	return true
}
