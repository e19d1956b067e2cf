package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// DispatchConsumer makes or updates hive h's durable work-queue consumer,
// filtered on h's own dispatch subject. Queens make it, never the hive: a
// hive's NATS identity may only look it up, pull and ack, so it cannot
// choose what it reads. Making it again with the same settings is a no-op.
func (s *Store) DispatchConsumer(ctx context.Context, h api.Hive) error {
	_, err := s.js.CreateOrUpdateConsumer(ctx, bus.DispatchStream, DispatchConsumerConfig(h))
	if err != nil {
		return fmt.Errorf("dispatch consumer of hive %s: %w", h.ID, err)
	}
	return nil
}

// DispatchConsumerHives lists the hives that have a work-queue consumer.
func (s *Store) DispatchConsumerHives(ctx context.Context) ([]string, error) {
	var hives []string
	names := s.dispatch.ConsumerNames(ctx)
	for name := range names.Name() {
		if id, ok := strings.CutPrefix(name, bus.DispatchConsumer("")); ok {
			hives = append(hives, id)
		}
	}
	return hives, names.Err()
}

// DeleteDispatchConsumer removes hive's work-queue consumer; one already
// gone is no error.
func (s *Store) DeleteDispatchConsumer(ctx context.Context, hive string) error {
	err := s.dispatch.DeleteConsumer(ctx, bus.DispatchConsumer(hive))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete dispatch consumer of hive %s: %w", hive, err)
	}
	return nil
}

// DispatchConsumerConfig is hive h's work-queue consumer: as many jobs
// handed out at once as it has slots, job and inference together,
// redelivered after its ack wait.
func DispatchConsumerConfig(h api.Hive) jetstream.ConsumerConfig {
	wait := 30 * time.Second
	if h.AckWaitS > 0 {
		wait = min(max(time.Duration(h.AckWaitS*float64(time.Second)), time.Second), 10*time.Minute)
	}
	return jetstream.ConsumerConfig{
		Durable:       bus.DispatchConsumer(h.ID),
		FilterSubject: bus.Dispatch(h.ID),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       wait,
		MaxAckPending: min(max(h.Slots, 1)+max(h.InferSlots, 0), 4096),
	}
}

// PublishDispatch puts a job on its hive's work queue and returns the
// message's stream sequence; a repeat of the same attempt is a no-op that
// returns the first one's.
func (s *Store) PublishDispatch(ctx context.Context, m bus.DispatchMsg, data []byte) (uint64, error) {
	return bus.PublishDispatch(ctx, s.js, m, data)
}

// RemoveDispatch takes the dispatch message at seq out of its work queue;
// one a hive has taken already is gone, which is no error.
func (s *Store) RemoveDispatch(ctx context.Context, seq uint64) error {
	err := s.dispatch.DeleteMsg(ctx, seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("remove dispatch %d: %w", seq, err)
	}
	return nil
}

// RequestCancel asks hive to cancel a job and returns its answer.
func (s *Store) RequestCancel(ctx context.Context, hive string, r bus.CancelRequest) (bus.CancelReply, error) {
	return bus.RequestCancel(ctx, s.nc, hive, r)
}
