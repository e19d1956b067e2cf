package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
)

// ErrNoKey means a bucket holds no value under the key.
var ErrNoKey = errors.New("no such key")

// ErrChanged means a compare-and-set found the key written since it was
// read.
var ErrChanged = errors.New("key changed since it was read")

// Bucket is one of the queen's small key-value buckets as keys and bytes,
// for the parts that keep their own records in one: API keys (auth) and
// rate-limit counters (limits).
type Bucket struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	// remake, when set, makes the bucket again once a watch finds it gone.
	remake func(context.Context)
}

// KeysBucket holds API keys: id to name, scopes, limits and the hash of
// the secret.
func (s *Store) KeysBucket() *Bucket { return &Bucket{kv: s.keys, log: s.log} }

// LimitsBucket holds rate-limit counters and leases.
func (s *Store) LimitsBucket() *Bucket { return &Bucket{kv: s.limits, log: s.log} }

// Get reads key's value and revision, or ErrNoKey.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, ErrNoKey
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// Create stores val under key unless the key holds a value, which is
// ErrExists.
func (b *Bucket) Create(ctx context.Context, key string, val []byte) (uint64, error) {
	rev, err := b.kv.Create(ctx, key, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, ErrExists
	}
	return rev, err
}

// Update stores val under key if its revision is still rev, else it is
// ErrChanged.
func (b *Bucket) Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	rev, err := b.kv.Update(ctx, key, val, rev)
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, ErrChanged
	}
	return rev, err
}

// Purge deletes key and its history.
func (b *Bucket) Purge(ctx context.Context, key string) error { return b.kv.Purge(ctx, key) }

// Entry is one change a watch of a bucket sees.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	// Deleted is a deleted or purged key; Value is empty.
	Deleted bool
}

// Watch calls apply with every key's value, then synced, then every change
// until ctx ends, watching again after an error; a watch again calls
// synced again after its initial values.
func (b *Bucket) Watch(ctx context.Context, apply func(Entry), synced func()) {
	for ctx.Err() == nil {
		w, err := b.kv.WatchAll(ctx)
		if err != nil {
			b.log.Warn("watch bucket", "bucket", b.kv.Bucket(), "err", err)
			if b.remake != nil {
				// It may be gone (remake looks before it makes).
				b.remake(ctx)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil {
				synced()
				continue
			}
			apply(Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut})
		}
		_ = w.Stop()
	}
}

// WatchHives is Watch over the heartbeats, decoded; h is nil for a hive
// whose heartbeat expired or was deleted. A heartbeat that does not decode
// is logged and skipped.
func (s *Store) WatchHives(ctx context.Context, apply func(id string, h *api.Hive), synced func()) {
	watchDecoded(ctx, &Bucket{kv: s.hives, log: s.log, remake: s.remakeVolatile}, "bad heartbeat", "hive_id", func(id string, h *api.Hive, _ uint64) { apply(id, h) }, synced)
}

// WatchJobs is Watch over the job records, decoded, with their revisions;
// j is nil for a deleted record. A record that does not decode is logged
// and skipped.
func (s *Store) WatchJobs(ctx context.Context, apply func(id string, j *api.Job, rev uint64), synced func()) {
	watchDecoded(ctx, &Bucket{kv: s.jobs, log: s.log}, "bad job record", "job_id", apply, synced)
}

// watchDecoded is b.Watch with each value decoded from JSON; a value that
// does not decode is logged as bad, under idKey, and skipped.
func watchDecoded[T any](ctx context.Context, b *Bucket, bad, idKey string, apply func(id string, v *T, rev uint64), synced func()) {
	b.Watch(ctx, func(e Entry) {
		if e.Deleted {
			apply(e.Key, nil, e.Revision)
			return
		}
		v := new(T)
		if err := json.Unmarshal(e.Value, v); err != nil {
			b.log.Warn(bad, idKey, e.Key, "err", err)
			return
		}
		apply(e.Key, v, e.Revision)
	}, synced)
}

// PutHive writes a heartbeat as its hive would, for the queen's tests and
// tools.
func (s *Store) PutHive(ctx context.Context, h api.Hive) error {
	data, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode hive %s: %w", h.ID, err)
	}
	if _, err := s.hives.Put(ctx, h.ID, data); err != nil {
		return fmt.Errorf("put hive %s: %w", h.ID, err)
	}
	return nil
}
