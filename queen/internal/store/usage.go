package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// The usage ledger is a stream with one subject per finished inference
// job, usage.<key>.<job>, each holding at most one message. A record is
// published with an expected last subject sequence of 0, so the server
// stores the first and refuses every repeat (a redelivered end event, a
// queen that restarted between recording and acknowledging): each job is
// counted once, whichever queen records it and however often. Unlike a
// message-id dedupe this holds for as long as the record is kept, not for
// a two-minute window. Sums are made when read, so every queen answers
// from the same records; a key's records are read by subject alone.

// UsageRetention is how long usage records are kept: longer than any job
// record, so that a job whose end is applied again cannot be counted twice
// after its record left.
const UsageRetention = 400 * 24 * time.Hour

// clockMargin is how far before from a usage scan starts.
const clockMargin = time.Hour

func openUsage(ctx context.Context, js jetstream.JetStream, o Options) (jetstream.Stream, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        bus.UsageStream,
		Description: "rbee usage ledger, one record per finished inference job",
		Subjects:    []string{bus.UsageAll},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      max(UsageRetention, o.Retention),
		Replicas:    o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", bus.UsageStream, err)
	}
	return st, nil
}

// RecordUsage adds r to the ledger unless its job is there already; it
// reports whether it was added.
func (s *Store) RecordUsage(ctx context.Context, r api.UsageRecord) (bool, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	_, err = s.js.PublishMsg(ctx, &nats.Msg{Subject: bus.Usage(r.KeyID, r.JobID), Data: data},
		jetstream.WithExpectLastSequencePerSubject(0))
	if bus.LostRace(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record usage of job %s: %w", r.JobID, err)
	}
	return true, nil
}

// ScanUsage calls fn with every usage record of key ("" for every key)
// stored since shortly before from, oldest first; the caller filters by the
// time a record carries. A record is stored after its job ended, so the
// server skips most records of jobs that ended before from; the margin
// covers a hive whose clock runs ahead of the NATS server's.
func (s *Store) ScanUsage(ctx context.Context, key string, from time.Time, fn func(api.UsageRecord)) error {
	filter := bus.UsageAll
	if key != "" {
		filter = bus.UsageKey(key)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, InactiveThreshold: 30 * time.Second}
	if !from.IsZero() {
		start := from.Add(-clockMargin)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := s.js.OrderedConsumer(ctx, bus.UsageStream, cfg)
	if err != nil {
		return fmt.Errorf("read usage: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.js.DeleteConsumer(dctx, bus.UsageStream, cons.CachedInfo().Name)
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read usage: %w", err)
	}
	// Each batch asks for no more than are pending, so it completes as
	// soon as they arrive instead of waiting out its expiry; the last
	// record there was when the read began has NumPending 0.
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read usage: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r api.UsageRecord
			if err := json.Unmarshal(m.Data(), &r); err == nil {
				fn(r)
			}
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read usage: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("read usage: no records arrived")
		}
	}
	return nil
}
