package store

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/bus"
)

// ApplierConsumer makes or updates the durable consumer of the starts and
// ends of every job, shared by all queens, so each is applied once while
// any queen runs, and those stored while none ran are applied when one
// starts.
func (s *Store) ApplierConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, bus.NarrStream, jetstream.ConsumerConfig{
		Durable:        bus.ApplierConsumer,
		FilterSubjects: []string{bus.NarrStartAll, bus.NarrEndAll},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        30 * time.Second,
		MaxAckPending:  4096,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("applier consumer: %w", err)
	}
	return cons, nil
}

// NarrationReader reads the narration stream for the relay: the stream's
// newest sequence, single messages by direct get, and ordered consumers
// from a sequence on. It writes nothing.
type NarrationReader struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

// NarrationReader returns the relay's reader of the narration stream.
func (s *Store) NarrationReader() *NarrationReader {
	return &NarrationReader{nc: s.nc, js: s.js, stream: s.narr}
}

// Live hands each message the stream stores for job from now on to
// handle, as the stream republishes it (bus.LiveJob), one at a time and in
// order. When Live returns, the server holds the subscription, so nothing
// stored after that is missed but by a message dropped for a slow handler
// (each job has its own pending limit, so one job's flood drops only its
// own) or a lost connection, which the reader must watch for.
func (r *NarrationReader) Live(job string, handle func(*nats.Msg)) (*nats.Subscription, error) {
	sub, err := r.nc.Subscribe(bus.LiveJob(job), handle)
	if err != nil {
		return nil, err
	}
	if err := r.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

// LiveAhead is Live without waiting for the server: for a job none of
// whose messages is stored yet. The server reads a connection's commands
// in order, so every message stored after the queen's own next write
// (the job's first event, on this connection) reaches handle.
func (r *NarrationReader) LiveAhead(job string, handle func(*nats.Msg)) (*nats.Subscription, error) {
	return r.nc.Subscribe(bus.LiveJob(job), handle)
}

// Reconnects counts the connection's reconnects: a core subscription
// misses what was published while it was away.
func (r *NarrationReader) Reconnects() uint64 { return r.nc.Stats().Reconnects }

// LastSeq is the stream sequence of the newest message in the stream.
func (r *NarrationReader) LastSeq(ctx context.Context) (uint64, error) {
	info, err := r.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// Last is the newest message on subject, or jetstream.ErrMsgNotFound.
func (r *NarrationReader) Last(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	return narrGet{r.nc}.last(ctx, subject)
}

// Get is the message at stream sequence seq or, with a subject, the first
// message on subject from seq on; jetstream.ErrMsgNotFound if none.
func (r *NarrationReader) Get(ctx context.Context, seq uint64, subject string) (*jetstream.RawStreamMsg, error) {
	return narrGet{r.nc}.at(ctx, seq, subject)
}

// Follow makes an ordered consumer of the messages on subject from stream
// sequence from on. The server drops it once unused for inactive; Delete
// drops it sooner.
func (r *NarrationReader) Follow(ctx context.Context, subject string, from uint64, inactive time.Duration) (jetstream.Consumer, error) {
	return r.js.OrderedConsumer(ctx, bus.NarrStream, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subject},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: inactive,
	})
}

// Delete drops a consumer Follow made.
func (r *NarrationReader) Delete(ctx context.Context, name string) error {
	return r.js.DeleteConsumer(ctx, bus.NarrStream, name)
}
