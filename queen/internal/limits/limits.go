// Package limits enforces API keys' rate limits (requests and tokens per
// minute, requests at once) with counters in a NATS bucket that every queen
// shares, so a key's limit holds for the cluster, not per queen.
//
// Every counter is one key of the bucket changed by compare-and-set: read
// it, decide, write it back with the revision read, and start over when
// another queen wrote in between. A refused request writes nothing.
//
//   - <key>.rpm.<minute> counts the requests admitted in a minute (Unix
//     minutes by the admitting queen's clock).
//   - <key>.tpm.<minute> sums the tokens of the requests that ended in it.
//   - <key>.conc holds the key's running requests as leases: a random id
//     each, with an expiry. Admission drops expired leases, counts the rest
//     and adds its own; the end of a request removes its lease. A running
//     request renews its lease every lease/3, so a queen that dies mid
//     request holds its slots for at most one lease, never forever. One key
//     for all of a key's leases keeps admission a single compare-and-set,
//     where a key per request would need a listing that another queen can
//     race.
//
// The bucket's TTL (store.LimitsTTL) drops the windows of past minutes and the lease key of
// a key at rest. Queens' clocks decide minute boundaries and lease expiry:
// a skew of a few seconds moves a boundary by as much, which a limit per
// minute tolerates.
package limits

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
)

// The kinds of limit, as Error.Limit names them.
const (
	RPM           = "rpm"
	TPM           = "tpm"
	MaxConcurrent = "max_concurrent"
)

// DefaultLease is how long a running request's slot outlives its last
// renewal; it must stay below the bucket's TTL (store.LimitsTTL).
const DefaultLease = 30 * time.Second

// maxAttempts bounds compare-and-set retries of one counter. Conflicts
// come only from requests of the same key at the same moment.
const maxAttempts = 50

// Error is a refusal: the request passes a limit.
type Error struct {
	Limit string // RPM, TPM or MaxConcurrent
	Max   int
	// RetryAfter is when to try again: the next minute for RPM and TPM,
	// a second for MaxConcurrent.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	switch e.Limit {
	case TPM:
		return fmt.Sprintf("rate limit reached: this key's %d tokens per minute are used up", e.Max)
	case MaxConcurrent:
		return fmt.Sprintf("rate limit reached: this key may run %d requests at once", e.Max)
	}
	return fmt.Sprintf("rate limit reached: this key may make %d requests per minute", e.Max)
}

// Limiter checks and counts keys' use.
type Limiter struct {
	kv  *store.Bucket
	log *slog.Logger
	// Now is the clock; Lease how long a slot outlives its last renewal.
	Now   func() time.Time
	Lease time.Duration
}

// New makes a limiter on the limits bucket.
func New(kv *store.Bucket, log *slog.Logger) *Limiter {
	return &Limiter{kv: kv, log: log.With("component", "limits"), Now: time.Now, Lease: DefaultLease}
}

// Admit admits one request of key under lim, or refuses it with an *Error.
// release ends the request's hold on a concurrency slot; it must be called
// when the request ends, may be called again, and is never nil when err is
// nil. A key without
// limits costs no round trip.
func (l *Limiter) Admit(ctx context.Context, key string, lim api.KeyLimits) (release func(), err error) {
	release = func() {}
	if !lim.Any() {
		return release, nil
	}
	now := l.Now()
	minute := now.Unix() / 60
	untilNext := time.Unix((minute+1)*60, 0).Sub(now)
	if lim.TPM > 0 {
		used, err := l.read(ctx, windowKey(key, TPM, minute))
		if err != nil {
			return nil, err
		}
		if used >= int64(lim.TPM) {
			return nil, &Error{Limit: TPM, Max: lim.TPM, RetryAfter: untilNext}
		}
	}
	// The slot first: it can be given back if the request count then
	// refuses, where a counted request cannot be uncounted.
	if lim.MaxConcurrent > 0 {
		if release, err = l.acquire(ctx, key, lim.MaxConcurrent); err != nil {
			return nil, err
		}
	}
	if lim.RPM > 0 {
		err := l.update(ctx, windowKey(key, RPM, minute), func(old []byte) ([]byte, error) {
			n := count(old)
			if n >= int64(lim.RPM) {
				return nil, &Error{Limit: RPM, Max: lim.RPM, RetryAfter: untilNext}
			}
			return []byte(strconv.FormatInt(n+1, 10)), nil
		})
		if err != nil {
			release()
			return nil, err
		}
	}
	return release, nil
}

// AddTokens counts n tokens of a finished request of key in the current
// minute, if the key has a token limit.
func (l *Limiter) AddTokens(ctx context.Context, key string, lim api.KeyLimits, n int) error {
	if lim.TPM <= 0 || n <= 0 {
		return nil
	}
	return l.update(ctx, windowKey(key, TPM, l.Now().Unix()/60), func(old []byte) ([]byte, error) {
		return []byte(strconv.FormatInt(count(old)+int64(n), 10)), nil
	})
}

func windowKey(key, kind string, minute int64) string {
	return key + "." + kind + "." + strconv.FormatInt(minute, 10)
}

func count(v []byte) int64 {
	n, _ := strconv.ParseInt(string(v), 10, 64)
	return n
}

// read is a counter's value, 0 when it does not exist.
func (l *Limiter) read(ctx context.Context, k string) (int64, error) {
	val, _, err := l.kv.Get(ctx, k)
	if errors.Is(err, store.ErrNoKey) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read limit %s: %w", k, err)
	}
	return count(val), nil
}

// update sets k to what fn makes of its value (nil when k does not
// exist) by compare-and-set, retrying when another writer came between.
// fn's error ends it without a write, as does a nil value.
func (l *Limiter) update(ctx context.Context, k string, fn func(old []byte) ([]byte, error)) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		var old []byte
		var rev uint64
		cur, r, err := l.kv.Get(ctx, k)
		switch {
		case errors.Is(err, store.ErrNoKey):
		case err != nil:
			return fmt.Errorf("read limit %s: %w", k, err)
		default:
			old, rev = cur, r
		}
		val, err := fn(old)
		if err != nil || val == nil {
			return err
		}
		if rev == 0 {
			_, err = l.kv.Create(ctx, k, val)
		} else {
			_, err = l.kv.Update(ctx, k, val, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrExists) && !errors.Is(err, store.ErrChanged) {
			return fmt.Errorf("write limit %s: %w", k, err)
		}
		// Reads may be served stale by a follower: back off with jitter.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(rand.Int64N(int64(time.Millisecond) * int64(attempt+1)))):
		}
	}
	return fmt.Errorf("write limit %s: %d conflicting writers in a row", k, maxAttempts)
}

// leases are a key's running requests: lease id to expiry, Unix
// milliseconds.
type leases map[string]int64

// acquire takes one of key's slots, or refuses with an *Error. The
// slot is renewed until release, which gives it back.
func (l *Limiter) acquire(ctx context.Context, key string, slots int) (func(), error) {
	var b [8]byte
	_, _ = crand.Read(b[:])
	id, k := hex.EncodeToString(b[:]), key+".conc"
	// change applies fn to the live leases and writes them back.
	change := func(ctx context.Context, fn func(leases) error) error {
		return l.update(ctx, k, func(old []byte) ([]byte, error) {
			ls := leases{}
			if len(old) > 0 {
				if err := json.Unmarshal(old, &ls); err != nil {
					ls = leases{}
				}
			}
			now := l.Now().UnixMilli()
			for lid, exp := range ls {
				if exp <= now {
					delete(ls, lid)
				}
			}
			if err := fn(ls); err != nil {
				return nil, err
			}
			return json.Marshal(ls)
		})
	}
	expiry := func() int64 { return l.Now().Add(l.Lease).UnixMilli() }
	err := change(ctx, func(ls leases) error {
		if len(ls) >= slots {
			return &Error{Limit: MaxConcurrent, Max: slots, RetryAfter: time.Second}
		}
		ls[id] = expiry()
		return nil
	})
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(l.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				rctx, cancel := context.WithTimeout(context.Background(), l.Lease/3)
				err := change(rctx, func(ls leases) error { ls[id] = expiry(); return nil })
				cancel()
				if err != nil {
					l.log.Warn("renew concurrency slot", "key_id", key, "err", err)
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// A slot not given back expires with its lease.
			if err := change(rctx, func(ls leases) error { delete(ls, id); return nil }); err != nil {
				l.log.Warn("release concurrency slot", "key_id", key, "err", err)
			}
		})
	}, nil
}
