// Package store is the queen's side of NATS: it creates the streams and
// buckets, reads and writes job records by compare-and-set, and writes the
// queen's own narration. All of the cluster's state lives here, so several
// queens on one NATS serve the same jobs.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/subject"
)

// Options shape the streams and buckets.
type Options struct {
	// Replicas is 1 on the embedded server and 3 on a NATS cluster.
	Replicas int
	// Retention is how long job records and narration are kept.
	Retention time.Duration
	// HiveTTL is how long a hive's heartbeat lives without a refresh.
	HiveTTL time.Duration
	// MaxEventsPerJob caps one writer's events of one kind per job in the
	// stream, a server-side backstop behind the hive's own cap; 0 is none.
	MaxEventsPerJob int64
}

// Store holds the queen's handles on NATS.
type Store struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Narr     jetstream.Stream
	Dispatch jetstream.Stream
	Jobs     jetstream.KeyValue
	Hives    jetstream.KeyValue
	Idem     jetstream.KeyValue
	Keys     jetstream.KeyValue
}

// Pulls of the queen's long-lived consumers expire after PullExpiry and
// carry a heartbeat every PullHeartbeat, so a consumer whose NATS server
// died is noticed, and recreated on another, within seconds; nats.go's
// defaults take half a minute.
const (
	PullExpiry    = 5 * time.Second
	PullHeartbeat = time.Second
)

// Open creates or updates every stream and bucket, so a queen of a newer
// version can start on an older cluster's data.
func Open(ctx context.Context, nc *nats.Conn, o Options) (*Store, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	s := &Store{NC: nc, JS: js}
	s.Narr, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              subject.NarrStream,
		Description:       "rbee job narration, one subject per job, writer and kind",
		Subjects:          []string{subject.NarrAll},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxAge:            o.Retention,
		MaxMsgsPerSubject: o.MaxEventsPerJob,
		// With a per-job cap, refuse new events rather than drop old ones:
		// the hive sees the refusal and says so, nothing vanishes silently.
		Discard:              discard(o.MaxEventsPerJob),
		DiscardNewPerSubject: o.MaxEventsPerJob > 0,
		Replicas:             o.Replicas,
		AllowDirect:          true,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", subject.NarrStream, err)
	}
	s.Dispatch, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        subject.DispatchStream,
		Description: "rbee work queues, one subject per hive",
		Subjects:    []string{subject.DispatchAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		// A dispatch waits for a free slot as long as its job may run.
		MaxAge: JobsTTL(o.Retention),
		// The server wants the duplicates window within MaxAge.
		Duplicates: min(2*time.Minute, o.Retention),
		Replicas:   o.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", subject.DispatchStream, err)
	}
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&s.Jobs, jetstream.KeyValueConfig{Bucket: subject.JobsBucket, Description: "rbee job records", TTL: JobsTTL(o.Retention), Storage: jetstream.FileStorage, Replicas: o.Replicas}},
		{&s.Hives, jetstream.KeyValueConfig{Bucket: subject.HivesBucket, Description: "rbee hive heartbeats", TTL: o.HiveTTL, LimitMarkerTTL: max(o.HiveTTL, time.Second), Storage: jetstream.MemoryStorage, Replicas: o.Replicas}},
		{&s.Idem, jetstream.KeyValueConfig{Bucket: subject.IdempotencyBucket, Description: "rbee Idempotency-Key to job id", TTL: 24 * time.Hour, Storage: jetstream.FileStorage, Replicas: o.Replicas}},
		{&s.Keys, jetstream.KeyValueConfig{Bucket: subject.KeysBucket, Description: "rbee API keys (hashes only)", Storage: jetstream.FileStorage, Replicas: o.Replicas}},
	}
	for _, b := range buckets {
		if *b.kv, err = js.CreateOrUpdateKeyValue(ctx, b.cfg); err != nil {
			return nil, fmt.Errorf("create bucket %s: %w", b.cfg.Bucket, err)
		}
	}
	return s, nil
}

// recordSlack covers what may pass between a job's deadline and its last
// record write: the reaper's grace, a cancel's confirmation, a slow queen.
const recordSlack = time.Hour

// JobsTTL is the jobs bucket's TTL: a backstop behind the queens' own
// expiry, which purges a record once retention has passed and its job can
// no longer run. A record may go unwritten from its job's start until its
// end, which is as late as the longest deadline allows, and must then stay
// for the retention; a shorter TTL would drop the records of running jobs.
func JobsTTL(retention time.Duration) time.Duration {
	return retention + api.MaxTimeout + recordSlack
}

func discard(perSubject int64) jetstream.DiscardPolicy {
	if perSubject > 0 {
		return jetstream.DiscardNew
	}
	return jetstream.DiscardOld
}

// Ready reports whether NATS is connected and the streams answer.
func (s *Store) Ready(ctx context.Context) error {
	if !s.NC.IsConnected() {
		return errors.New("nats is not connected")
	}
	if _, err := s.Narr.Info(ctx); err != nil {
		return fmt.Errorf("stream %s: %w", subject.NarrStream, err)
	}
	return nil
}
