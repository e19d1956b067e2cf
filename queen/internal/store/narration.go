package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// ErrAlreadyEnded means the job's one end event is stored already.
var ErrAlreadyEnded = bus.ErrAlreadyEnded

// meta is what the headers of a queen-written event of kind say. The
// queen's events that hand an attempt to a hive name it.
func meta(kind string, e api.Event) bus.Meta {
	m := bus.Meta{Job: e.JobID, Writer: bus.QueenWriter, Kind: kind, Seq: e.Seq, Attempt: e.Attempt}
	if kind == bus.KindEvent {
		m.Hive = e.Hive
	}
	return m
}

// Narrate stores one queen-written event of kind on the job's subject.
func (s *Store) Narrate(ctx context.Context, kind string, e api.Event) error {
	fill(&e)
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if _, err := s.js.PublishMsg(ctx, meta(kind, e).Msg(data)); err != nil {
		return fmt.Errorf("narrate job %s: %w", e.JobID, err)
	}
	return nil
}

// NarrateNext stores a queen-written event numbered after the job's newest
// event and returns the number it got and its stream sequence. A hive that is slow rather than gone
// may store an event between the read and the write; the write expects the
// job's last stream sequence as read, so it is refused then and tried again
// with the next number: two events never share one. The numbering follows
// the queen's events and those of hive, the hive of the job's attempt so far
// ("" for none): other hives' frames in the job are not its story.
func (s *Store) NarrateNext(ctx context.Context, kind string, e api.Event, hive string) (seq, streamSeq uint64, err error) {
	fill(&e)
	return s.publishNext(ctx, e, kind, "", hive, false)
}

// NarrateMove stores e, the queen's event that moves a job from hive lost
// to attempt e.Attempt, numbered as NarrateNext numbers, unless the
// queen's newest event of the job already belongs to that attempt: then it
// returns that one. The look and the write are one step (the write
// expects the job's newest event as read before the look), so queens
// finishing one move at once (jobs.replace, jobs.finishMove) store one
// event between them, and the new hive numbers after it.
func (s *Store) NarrateMove(ctx context.Context, e api.Event, lost string) (seq, streamSeq uint64, err error) {
	fill(&e)
	return s.publishNext(ctx, e, bus.KindEvent, "", lost, true)
}

// End stores e as the job's end event unless one exists. The server checks
// and writes in one step, so a hive and any number of queens racing to end
// a job store exactly one end between them. Without a sequence, e is
// numbered after the job's newest event of the queen or of e.Hive, the
// hive of the attempt it ends.
func (s *Store) End(ctx context.Context, e api.Event) error {
	e.Action = "end"
	if e.Level == "" {
		e.Level = api.LevelError
		if e.State == api.StateDone {
			e.Level = api.LevelInfo
		}
	}
	fill(&e)
	if e.Seq == 0 {
		_, _, err := s.publishNext(ctx, e, bus.KindEnd, bus.NarrEnd(e.JobID, e.Attempt), e.Hive, false)
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode end: %w", err)
	}
	return bus.PublishEnd(ctx, s.js, meta(bus.KindEnd, e), data)
}

// nextTries bounds how often publishNext loses to another writer before it
// gives up.
const nextTries = 50

// publishNext stores e as an event of kind numbered after the job's newest event,
// expecting nothing to have been stored for the job since it looked. With
// an end slot, it first checks that the slot is empty; the expectation
// then also covers an end stored meanwhile. With once, it stores nothing
// when the queen's newest event belongs to e's attempt, and returns that
// event.
func (s *Store) publishNext(ctx context.Context, e api.Event, kind, endSlot, hive string, once bool) (seq, streamSeq uint64, err error) {
	for try := 0; ; try++ {
		if endSlot != "" {
			_, err := s.get.last(ctx, endSlot)
			if err == nil {
				return 0, 0, ErrAlreadyEnded
			}
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				return 0, 0, fmt.Errorf("end of job %s: %w", e.JobID, err)
			}
		}
		lastStream, last, err := s.last(ctx, e.JobID, hive)
		if err != nil {
			return 0, 0, err
		}
		if once {
			// Read after lastStream: an event stored after this look
			// fails the write below, and the next try finds it.
			if seq, at, ok, err := s.QueenEventOf(ctx, e.JobID, e.Attempt); err != nil || ok {
				return seq, at, err
			}
		}
		e.Seq = last + 1
		data, err := json.Marshal(e)
		if err != nil {
			return 0, 0, fmt.Errorf("encode event: %w", err)
		}
		ack, err := s.js.PublishMsg(ctx, meta(kind, e).Msg(data), jetstream.WithExpectLastSequenceForSubject(lastStream, bus.NarrJob(e.JobID)))
		if err == nil {
			return e.Seq, ack.Sequence, nil
		}
		if !bus.LostRace(err) || try == nextTries {
			return 0, 0, fmt.Errorf("narrate job %s: %w", e.JobID, err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Duration(try+1) * time.Millisecond):
		}
	}
}

// NarrateWaiting stores e, an event about a job that waits for a hive, as
// the job's next event, but only while its newest event is the queen's
// own and hands the job to no hive. Once a queen places the job, the hive
// numbers the events that follow its placing event (api.Dispatch.NextSeq):
// an event slipped in after it would take a number the hive uses. The
// write expects the newest event it looked at, so a placing event stored
// meanwhile makes it look again. It reports false, storing nothing, once
// the job no longer waits.
func (s *Store) NarrateWaiting(ctx context.Context, e api.Event) (bool, error) {
	fill(&e)
	for try := 0; ; try++ {
		m, err := s.get.last(ctx, bus.NarrJob(e.JobID))
		if err != nil {
			return false, fmt.Errorf("last event of job %s: %w", e.JobID, err)
		}
		_, writer, kind, _ := bus.ParseNarr(m.Subject)
		if writer != bus.QueenWriter || kind != bus.KindEvent || m.Header.Get(bus.HeaderHive) != "" {
			return false, nil
		}
		e.Seq = eventSeq(m) + 1
		data, err := json.Marshal(e)
		if err != nil {
			return false, fmt.Errorf("encode event: %w", err)
		}
		_, err = s.js.PublishMsg(ctx, meta(bus.KindEvent, e).Msg(data), jetstream.WithExpectLastSequenceForSubject(m.Sequence, bus.NarrJob(e.JobID)))
		if err == nil {
			return true, nil
		}
		if !bus.LostRace(err) || try == nextTries {
			return false, fmt.Errorf("narrate job %s: %w", e.JobID, err)
		}
	}
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

// last is the stream sequence of the job's newest message and the job
// sequence of the newest event the queen or hive ("" for none) wrote, 0 if
// there is none. The newest message is almost always theirs; when another
// hive wrote it, their own newest events are read instead, so that a forged
// number does not carry over into the queen's.
func (s *Store) last(ctx context.Context, job, hive string) (streamSeq, seq uint64, err error) {
	m, err := s.get.last(ctx, bus.NarrJob(job))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("last event of job %s: %w", job, err)
	}
	if _, writer, _, _ := bus.ParseNarr(m.Subject); writer == bus.QueenWriter || (writer == hive && hive != "") {
		return m.Sequence, eventSeq(m), nil
	}
	for _, w := range []string{bus.QueenWriter, hive} {
		if w == "" {
			continue
		}
		own, err := s.get.last(ctx, bus.NarrJobWriter(job, w))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("last event of job %s: %w", job, err)
		}
		seq = max(seq, eventSeq(own))
	}
	return m.Sequence, seq, nil
}

// eventSeq is a stored event's job sequence, from its header, or from its
// body when an older writer stored it without headers.
func eventSeq(m *jetstream.RawStreamMsg) uint64 {
	if seq, ok := bus.HeaderSeqOf(m.Header); ok {
		return seq
	}
	seq, _ := bus.BodySeq(m.Data)
	return seq
}

// Wrote reports whether writer stored any event of job.
func (s *Store) Wrote(ctx context.Context, job, writer string) (bool, error) {
	_, err := s.get.last(ctx, bus.NarrJobWriter(job, writer))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return err == nil, err
}

// QueenEventOf returns the job and stream sequences of the queen's newest
// event of job when that event belongs to attempt; ok is false when the
// queen wrote none of that attempt last.
func (s *Store) QueenEventOf(ctx context.Context, job string, attempt int) (seq, streamSeq uint64, ok bool, err error) {
	m, err := s.get.last(ctx, bus.NarrJobWriter(job, bus.QueenWriter))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, fmt.Errorf("last queen event of job %s: %w", job, err)
	}
	if meta, bad := bus.ParseMeta(m.Subject, m.Header); bad != "" || meta.Attempt != attempt {
		return 0, 0, false, nil
	}
	return eventSeq(m), m.Sequence, true, nil
}

// LastStreamSeq is the stream sequence of the job's newest event, 0 if none.
func (s *Store) LastStreamSeq(ctx context.Context, job string) (uint64, error) {
	streamSeq, _, err := s.last(ctx, job, "")
	return streamSeq, err
}

// LastSeq is the job sequence of the newest event the queen or hive wrote
// for job, 0 if none.
func (s *Store) LastSeq(ctx context.Context, job, hive string) (uint64, error) {
	_, seq, err := s.last(ctx, job, hive)
	return seq, err
}

// Writes reports whether writer may write attempt of j's story, in a
// frame stored at stream sequence seq (0: not known): the queen always, a
// hive only for an attempt j was dispatched to it for, the current one or,
// up to the moment the job moved on, an earlier one (api.Job.PastHives).
// While that moment is not stored yet (Until 0), every frame of the
// earlier attempt passes here: a reader, reading in stream order, drops
// those after the queen's event that moved the job (the relay's fence).
// A hive may publish narration subjects of any job under its own name;
// readers keep it from speaking for jobs it was not given.
func Writes(j api.Job, writer string, attempt int, seq uint64) bool {
	if writer == bus.QueenWriter {
		return true
	}
	attempt = max(attempt, 1)
	if attempt == j.Attempt {
		return writer == j.Hive && j.Hive != ""
	}
	if attempt > j.Attempt || attempt > len(j.PastHives) {
		return false
	}
	p := j.PastHives[attempt-1]
	return writer == p.Hive && writer != "" && seq > 0 && (p.Until == 0 || seq <= p.Until)
}

// MayEnd reports whether end may end j: it is terminal, and its writer
// writes its attempt (Writes).
func MayEnd(j api.Job, end api.EndInfo) bool {
	return api.Terminal(end.State) && Writes(j, end.Writer, end.Attempt, 0)
}

// EndOf returns the job's end event and its stream sequence, or nil.
func (s *Store) EndOf(ctx context.Context, job string) (*api.EndInfo, uint64, error) {
	m, err := s.get.last(ctx, bus.NarrEndAny(job))
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
	end.Attempt = max(bus.EndAttempt(m.Subject), 1)
	_, end.Writer, _, _ = bus.ParseNarr(m.Subject)
	return &end, m.Sequence, nil
}

// ApplyEnd copies an end event into a record; it reports whether anything
// changed, for use with UpdateJob.
func ApplyEnd(j *api.Job, end api.EndInfo) bool {
	// An end of an earlier attempt, from a hive that was lost and came
	// back, does not end the attempt that replaced it.
	if api.Terminal(j.State) || max(end.Attempt, 1) < j.Attempt || !MayEnd(*j, end) {
		return false
	}
	j.State, j.Error, j.ExitCode = end.State, end.Error, end.ExitCode
	t := end.Time
	j.FinishedAt = &t
	return true
}

// DeleteEvent removes the narration message at stream sequence seq: an
// end the applier rejected, which would otherwise hold its attempt's one
// end slot.
func (s *Store) DeleteEvent(ctx context.Context, seq uint64) error {
	if err := s.narr.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("delete event %d: %w", seq, err)
	}
	return nil
}

// PurgeNarration deletes every event of job.
func (s *Store) PurgeNarration(ctx context.Context, job string) error {
	if err := s.narr.Purge(ctx, jetstream.WithPurgeSubject(bus.NarrJob(job))); err != nil {
		return fmt.Errorf("purge narration of job %s: %w", job, err)
	}
	return nil
}

// NarrationFill is how many bytes the narration stream holds and its
// bound, 0 or less for none.
func (s *Store) NarrationFill(ctx context.Context) (bytes uint64, maxBytes int64, err error) {
	info, err := s.narr.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", bus.NarrStream, err)
	}
	return info.State.Bytes, info.Config.MaxBytes, nil
}

// LastData is the body of the newest data event writer stored for job, nil
// if there is none.
func (s *Store) LastData(ctx context.Context, job, writer string) ([]byte, error) {
	m, err := s.get.last(ctx, bus.Narr(job, writer, bus.KindData))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("data of job %s: %w", job, err)
	}
	return m.Data, nil
}
