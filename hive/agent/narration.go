package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// narrator tells one job's story as the hive sees it: it fills in what
// every event of the job carries and caps how many events are stored, and
// leaves ordering, acknowledgements and the one end to bus.Publisher.
type narrator struct {
	p       *bus.Publisher
	job     string
	attempt int
	// maxEvents caps the events of one job; past it events are counted and
	// dropped, and the end event says how many.
	maxEvents uint64

	mu      sync.Mutex
	events  uint64
	dropped uint64
}

func newNarrator(js jetstream.JetStream, job, writer string, attempt int, nextSeq, maxEvents uint64) *narrator {
	return &narrator{p: bus.NewPublisher(js, job, writer, attempt, nextSeq), job: job, attempt: attempt, maxEvents: maxEvents}
}

// encode numbers e for the publisher and fills what the hive leaves out.
func (n *narrator) encode(e api.Event) bus.Encode {
	return func(seq uint64) ([]byte, error) {
		e.JobID, e.Seq = n.job, seq
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		if e.Attempt == 0 {
			e.Attempt = n.attempt
		}
		if e.Level == "" {
			e.Level = api.LevelInfo
		}
		return json.Marshal(e)
	}
}

// SetBudget bounds the bytes the job's events may store (bus.Publisher).
func (n *narrator) SetBudget(budget int64, exceeded func()) { n.p.SetBudget(budget, exceeded) }

// Start publishes the event that marks the job running, or returns
// bus.ErrAlreadyEnded when the job ended before it could start.
func (n *narrator) Start(ctx context.Context, e api.Event) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.p.Start(ctx, n.encode(e)); err != nil {
		return err
	}
	n.events++
	return nil
}

// Begin sends the event that marks the job running and returns at once;
// wait reports what Start would have. Events emitted meanwhile wait for
// the start's answer and are stored after it, or, when it was refused or
// failed, not at all (bus.Publisher.Begin). ctx must last until wait
// returns.
func (n *narrator) Begin(ctx context.Context, e api.Event) (wait func() error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// Counted at once: an event emitted before the answer counts after it.
	n.events++
	return n.p.Begin(ctx, n.encode(e))
}

// Emit publishes one narration event. It blocks while too many publishes
// are unacknowledged, which is the backpressure a fast producer needs.
func (n *narrator) Emit(e api.Event) error { return n.emit(bus.KindEvent, e) }

// Data publishes a structured result.
func (n *narrator) Data(e api.Event) error { return n.emit(bus.KindData, e) }

func (n *narrator) emit(kind string, e api.Event) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.maxEvents > 0 && n.events >= n.maxEvents {
		n.dropped++
		if n.dropped > 1 {
			return nil
		}
		kind, e = bus.KindEvent, api.Event{
			Actor: "narration", Action: "cap_reached", Level: api.LevelWarn,
			Message: fmt.Sprintf("this job reached its cap of %d narration events; further events are counted, not stored", n.maxEvents),
		}
	} else {
		n.events++
	}
	return n.p.Publish(kind, n.encode(e))
}

// Finish waits until every event is stored; nothing is published after.
func (n *narrator) Finish() error { return n.p.Finish() }

// End waits until every event is stored, then stores the job's one end
// event: failed, if the events could not all be stored. If another writer
// ended the job first it returns bus.ErrAlreadyEnded.
func (n *narrator) End(ctx context.Context, e api.Event) error {
	err := n.p.Finish()
	if errors.Is(err, bus.ErrAlreadyEnded) {
		return err
	}
	if err != nil && e.State == api.StateDone {
		e.State, e.Error = api.StateFailed, err.Error()
	}
	if e.Level == "" && e.State != api.StateDone {
		e.Level = api.LevelError
	}
	n.mu.Lock()
	dropped := n.dropped
	n.mu.Unlock()
	if dropped > 0 && e.Error == "" {
		e.Error = fmt.Sprintf("%d narration events past the cap of %d were not stored", dropped-1, n.maxEvents)
	}
	e.Action = "end"
	return n.p.End(ctx, n.encode(e))
}
