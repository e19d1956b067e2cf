// Package store is the queen's side of NATS: it creates the streams and
// buckets, reads and writes job records by compare-and-set, writes the
// queen's own narration and dispatches, and hands out typed readers of
// what the other parts follow (records, heartbeats, narration). All of the
// cluster's state lives here, so several queens on one NATS serve the same
// jobs. No handle on the connection, a stream or a bucket leaves the
// package, only typed methods and the consumers the applier and the relay
// read from: every detail of how the queen's state sits in NATS has its
// home here, and the protocol both sides speak has its in shared/bus.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
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
	// NarrationMaxBytes bounds the bytes the narration stream holds; 0 is
	// no bound.
	NarrationMaxBytes int64
	// NarrationFit lets Open halve NarrationMaxBytes until the NATS server
	// can reserve it, for a bound that was a default rather than a choice.
	NarrationFit bool
	// Log receives the watches' warnings; nil discards them.
	Log *slog.Logger
}

// Store is the queen's state in NATS. Its zero value is not usable; call
// Open.
type Store struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	narr     jetstream.Stream
	get      narrGet
	dispatch jetstream.Stream
	jobs     jetstream.KeyValue
	hives    jetstream.KeyValue
	idem     jetstream.KeyValue
	keys     jetstream.KeyValue
	// limits holds API keys' rate-limit counters (package limits).
	limits jetstream.KeyValue
	// volatile are the buckets kept in memory (remakeVolatile).
	volatile []jetstream.KeyValueConfig
	// usage is the usage ledger; see RecordUsage.
	usage jetstream.Stream
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
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Store{nc: nc, js: js, get: narrGet{nc}, log: log.With("component", "store")}
	if s.narr, err = openNarr(ctx, js, o); err != nil {
		return nil, err
	}
	s.dispatch, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        bus.DispatchStream,
		Description: "rbee work queues, one subject per hive",
		Subjects:    []string{bus.DispatchAll},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		// A dispatch waits for a free slot as long as its job may run.
		MaxAge: JobsTTL(o.Retention),
		// The server wants the duplicates window within MaxAge.
		Duplicates: min(2*time.Minute, o.Retention),
		Replicas:   o.Replicas,
		// One work-queue consumer a hive: nats-server's default of 1,000
		// consumers a stream would leave the thousand-and-first hive
		// without one, and jobs placed there would wait for good.
		MaxConsumers: MaxConsumers,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", bus.DispatchStream, err)
	}
	if s.usage, err = openUsage(ctx, js, o); err != nil {
		return nil, err
	}
	buckets := []struct {
		kv  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&s.jobs, jetstream.KeyValueConfig{Bucket: bus.JobsBucket, Description: "rbee job records", TTL: JobsTTL(o.Retention), Storage: jetstream.FileStorage, Replicas: o.Replicas}},
		{&s.hives, jetstream.KeyValueConfig{Bucket: bus.HivesBucket, Description: "rbee hive heartbeats", TTL: o.HiveTTL, LimitMarkerTTL: max(o.HiveTTL, time.Second), Storage: jetstream.MemoryStorage, Replicas: o.Replicas}},
		{&s.idem, jetstream.KeyValueConfig{Bucket: bus.IdempotencyBucket, Description: "rbee Idempotency-Key to job id", TTL: 24 * time.Hour, Storage: jetstream.FileStorage, Replicas: o.Replicas}},
		{&s.keys, jetstream.KeyValueConfig{Bucket: bus.KeysBucket, Description: "rbee API keys (hashes only)", Storage: jetstream.FileStorage, Replicas: o.Replicas}},
		// Counters of the current minute and leases of running requests:
		// a NATS restart that forgets them forgets at most a minute's
		// counts.
		{&s.limits, jetstream.KeyValueConfig{Bucket: bus.LimitsBucket, Description: "rbee API key rate-limit counters", TTL: LimitsTTL, Storage: jetstream.MemoryStorage, Replicas: o.Replicas}},
	}
	for _, b := range buckets {
		if *b.kv, err = js.CreateOrUpdateKeyValue(ctx, b.cfg); err != nil {
			return nil, fmt.Errorf("create bucket %s: %w", b.cfg.Bucket, err)
		}
		if b.cfg.Storage == jetstream.MemoryStorage {
			s.volatile = append(s.volatile, b.cfg)
		}
	}
	return s, nil
}

// remakeVolatile makes the buckets kept in memory again where they are
// gone: a lone NATS server that restarts loses them (a cluster keeps them
// on its other nodes), and heartbeats and rate-limit counters have nowhere
// to go until a queen makes them. Buckets on disk are never remade: a
// server still recovering them must not be handed an empty one.
func (s *Store) remakeVolatile(ctx context.Context) {
	for _, cfg := range s.volatile {
		if _, err := s.js.KeyValue(ctx, cfg.Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
			continue
		}
		if _, err := s.js.CreateKeyValue(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			s.log.Warn("remake bucket", "bucket", cfg.Bucket, "err", err)
			continue
		}
		s.log.Warn("bucket was gone from NATS (a restart of a server that kept it in memory); made it again", "bucket", cfg.Bucket)
	}
}

// LimitsTTL drops a rate-limit counter untouched this long: longer than
// the minute its window is read and than a lease lives between renewals.
const LimitsTTL = 3 * time.Minute

// JetStream's refusals to reserve storage: a single server answers the
// first, a cluster's placement the second or third. nats.go names none.
const (
	errCodeStorageExceeded       jetstream.ErrorCode = 10047
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeNoSuitablePeers       jetstream.ErrorCode = 10005
)

// minNarrationFit is the least a fitted narration bound shrinks to.
const minNarrationFit = 64 << 20

// MaxConsumers bounds the consumers of the narration and dispatch
// streams: far above what a cluster needs, and set, because nats-server
// otherwise applies its own default of 1,000 to each stream.
const MaxConsumers = 100_000

// openNarr creates or updates the narration stream. With NarrationFit, a
// bound the server cannot reserve is halved until it can.
func openNarr(ctx context.Context, js jetstream.JetStream, o Options) (jetstream.Stream, error) {
	cfg := jetstream.StreamConfig{
		Name:              bus.NarrStream,
		Description:       "rbee job narration, one subject per job, writer and kind",
		Subjects:          []string{bus.NarrAll},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		MaxAge:            o.Retention,
		MaxBytes:          o.NarrationMaxBytes,
		MaxMsgsPerSubject: o.MaxEventsPerJob,
		// A full stream refuses new events rather than dropping old ones.
		// DiscardOld would make room by silently deleting the oldest
		// narration, which belongs to other jobs: events a client was
		// promised and may not have read yet would vanish, and one noisy
		// job could erase the story of every quiet one. With DiscardNew
		// the writer that does not fit gets an error: a hive's job fails
		// saying so, nothing stored is lost, and space comes back as old
		// jobs age out (MaxAge). Each job's own budget, enforced by the
		// hive where it writes, keeps any one job far from the bound.
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: o.MaxEventsPerJob > 0,
		Replicas:             o.Replicas,
		AllowDirect:          true,
		// Each stored message is sent on at once to whoever follows its
		// job live (bus.LiveJob); nobody subscribes to most jobs, and the
		// server then sends nothing.
		RePublish: &jetstream.RePublish{Source: bus.NarrAll, Destination: bus.LiveAll},
		// Every queen's tail and applier, and each long replay, is a
		// consumer: nats-server's default of 1,000 a stream would refuse
		// the thousand-and-first reader.
		MaxConsumers: MaxConsumers,
	}
	if o.NarrationMaxBytes <= 0 {
		cfg.MaxBytes = -1
	}
	for {
		st, err := js.CreateOrUpdateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		if err != nil && o.NarrationFit && cfg.MaxBytes/2 >= minNarrationFit &&
			errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeStorageExceeded || apiErr.ErrorCode == errCodeInsufficientResources || apiErr.ErrorCode == errCodeNoSuitablePeers) {
			cfg.MaxBytes /= 2
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create stream %s (max %d bytes; set --narration-max-bytes to what NATS can hold): %w", bus.NarrStream, cfg.MaxBytes, err)
		}
		return st, nil
	}
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

// Ready reports whether NATS is connected and the streams answer.
func (s *Store) Ready(ctx context.Context) error {
	if !s.nc.IsConnected() {
		return errors.New("nats is not connected")
	}
	if _, err := s.narr.Info(ctx); err != nil {
		return fmt.Errorf("stream %s: %w", bus.NarrStream, err)
	}
	return nil
}

// NarrationMaxBytes is the narration stream's bound as the server holds
// it: less than Options.NarrationMaxBytes when Open had to fit it, -1 for
// none.
func (s *Store) NarrationMaxBytes() int64 {
	return s.narr.CachedInfo().Config.MaxBytes
}
