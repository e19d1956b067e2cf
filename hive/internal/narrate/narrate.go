// Package narrate publishes one job's narration onto its JetStream subjects:
// events in order with bounded in-flight acknowledgements, and exactly one
// end event per job, however many writers race to end it.
package narrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/subject"
)

// ErrAlreadyEnded means another writer stored the job's end event first.
var ErrAlreadyEnded = errors.New("job already ended")

// lostRace reports whether err is JetStream refusing a write because the
// expected last sequence did not match: single-node and replicated streams
// use different codes for it.
func lostRace(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Publisher narrates one job. It is safe for concurrent use: a command's
// stdout and stderr readers share one.
type Publisher struct {
	js      jetstream.JetStream
	job     string
	writer  string
	attempt int
	// MaxEvents caps the events of one job; past it events are counted and
	// dropped, and the end event says how many.
	maxEvents uint64

	mu      sync.Mutex
	seq     uint64
	events  uint64
	dropped uint64
	acks    chan jetstream.PubAckFuture
	failed  error
	done    chan struct{}
	ended   bool
}

// New starts a publisher whose first event gets sequence nextSeq.
func New(js jetstream.JetStream, job, writer string, attempt int, nextSeq, maxEvents uint64) *Publisher {
	p := &Publisher{
		js: js, job: job, writer: writer, attempt: attempt,
		maxEvents: maxEvents, seq: nextSeq,
		acks: make(chan jetstream.PubAckFuture, 1024),
		done: make(chan struct{}),
	}
	go p.collect()
	return p
}

// collect waits for each acknowledgement in publish order. A publish that
// failed (a full stream, a timeout) is retried synchronously so no event is
// silently lost; only if that fails too is the loss recorded for the end.
func (p *Publisher) collect() {
	defer close(p.done)
	for f := range p.acks {
		select {
		case <-f.Ok():
			continue
		case err := <-f.Err():
			if rerr := p.republish(f.Msg()); rerr != nil {
				p.mu.Lock()
				if p.failed == nil {
					p.failed = fmt.Errorf("narration event lost: %w (first error: %v)", rerr, err)
				}
				p.mu.Unlock()
			}
		}
	}
}

func (p *Publisher) republish(m *nats.Msg) error {
	var err error
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = p.js.PublishMsg(ctx, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(time.Duration(50*(i+1)) * time.Millisecond)
	}
	return err
}

// Emit publishes one narration event. It blocks while too many publishes
// are unacknowledged, which is the backpressure a fast producer needs.
func (p *Publisher) Emit(e api.Event) error { return p.emit(subject.KindEvent, e) }

// Start publishes the event that marks the job running, unless the job
// has ended already (cancelled while queued, say): then it returns
// ErrAlreadyEnded and the work must not begin. The check and the write are
// one step in the server, and need no right to read other narration.
func (p *Publisher) Start(ctx context.Context, e api.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fill(&e)
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode start: %w", err)
	}
	_, err = p.js.Publish(ctx, subject.Narr(p.job, p.writer, subject.KindStart), data,
		jetstream.WithExpectLastSequenceForSubject(0, subject.NarrEnd(p.job, p.attempt)))
	if lostRace(err) {
		p.ended = true
		close(p.acks)
		return ErrAlreadyEnded
	}
	if err != nil {
		return fmt.Errorf("publish start: %w", err)
	}
	p.events++
	return nil
}

// Data publishes a structured result.
func (p *Publisher) Data(e api.Event) error { return p.emit(subject.KindData, e) }

func (p *Publisher) emit(kind string, e api.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return ErrAlreadyEnded
	}
	if p.maxEvents > 0 && p.events >= p.maxEvents {
		if p.dropped == 0 {
			p.dropped++
			return p.publishLocked(subject.KindEvent, api.Event{
				Actor: "narration", Action: "cap_reached", Level: api.LevelWarn,
				Message: fmt.Sprintf("this job reached its cap of %d narration events; further events are counted, not stored", p.maxEvents),
			})
		}
		p.dropped++
		return nil
	}
	p.events++
	return p.publishLocked(kind, e)
}

func (p *Publisher) publishLocked(kind string, e api.Event) error {
	p.fill(&e)
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: subject.Narr(p.job, p.writer, kind), Data: data})
	if err != nil {
		return fmt.Errorf("publish event: %w", err)
	}
	p.acks <- f
	return nil
}

func (p *Publisher) fill(e *api.Event) {
	e.JobID = p.job
	e.Seq = p.seq
	p.seq++
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Attempt == 0 {
		e.Attempt = p.attempt
	}
	if e.Level == "" {
		e.Level = api.LevelInfo
	}
}

// Dropped is how many events went past the cap.
func (p *Publisher) Dropped() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// End waits until every event is stored, then stores the job's one end
// event. If another writer ended the job first it returns ErrAlreadyEnded.
func (p *Publisher) End(ctx context.Context, e api.Event) error {
	p.mu.Lock()
	if p.ended {
		p.mu.Unlock()
		return ErrAlreadyEnded
	}
	p.ended = true
	close(p.acks)
	p.mu.Unlock()
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	if p.failed != nil && e.State == api.StateDone {
		e.State, e.Error = api.StateFailed, p.failed.Error()
	}
	if e.Level == "" && e.State != api.StateDone {
		e.Level = api.LevelError
	}
	if p.dropped > 0 && e.Error == "" {
		e.Error = fmt.Sprintf("%d narration events past the cap of %d were not stored", p.dropped-1, p.maxEvents)
	}
	p.fill(&e)
	p.mu.Unlock()
	return PublishEnd(ctx, p.js, p.writer, e)
}

// PublishEnd stores e as the job's end event unless one is stored already.
// The check and the write are one atomic step in the server, so racing
// writers (a hive finishing, a queen cancelling) store exactly one end.
func PublishEnd(ctx context.Context, js jetstream.JetStream, writer string, e api.Event) error {
	e.Action = "end"
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Level == "" {
		e.Level = api.LevelInfo
		if e.State != api.StateDone {
			e.Level = api.LevelError
		}
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode end: %w", err)
	}
	_, err = js.Publish(ctx, subject.NarrEndSubject(e.JobID, writer, e.Attempt), data,
		jetstream.WithExpectLastSequenceForSubject(0, subject.NarrEnd(e.JobID, e.Attempt)))
	if lostRace(err) {
		return ErrAlreadyEnded
	}
	if err != nil {
		return fmt.Errorf("publish end of job %s: %w", e.JobID, err)
	}
	return nil
}
