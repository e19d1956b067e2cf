package limits_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"rbee.dev/queen/internal/limits"
	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// mustBucket is a limits bucket on an in-process NATS server.
func mustBucket(t testing.TB) *store.Bucket {
	t.Helper()
	nc := testkit.Connect(t, testkit.NATS(t))
	st, err := store.Open(context.Background(), nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return st.LimitsBucket()
}

// clock is a settable clock shared by limiters, as queens share time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// pair is two limiters on one bucket, as two queens on one NATS.
func pair(t *testing.T) (*clock, [2]*limits.Limiter) {
	kv := mustBucket(t)
	clk := &clock{t: time.Unix(1_800_000_000, 0).Truncate(time.Minute).Add(10 * time.Second)}
	var out [2]*limits.Limiter
	for i := range out {
		out[i] = limits.New(kv, slog.New(slog.NewTextHandler(io.Discard, nil)))
		out[i].Now = clk.now
	}
	return clk, out
}

func refused(t *testing.T, err error, limit string, retry time.Duration) {
	t.Helper()
	var le *limits.Error
	if !errors.As(err, &le) || le.Limit != limit || le.RetryAfter != retry {
		t.Fatalf("got %v (%+v), want a %s refusal retrying after %s", err, le, limit, retry)
	}
}

func TestLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("rpm is shared and rolls with the minute", func(t *testing.T) {
		clk, l := pair(t)
		lim := api.KeyLimits{RPM: 3}
		for i := 0; i < 3; i++ {
			release, err := l[i%2].Admit(ctx, "k1", lim)
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			release()
		}
		_, err := l[1].Admit(ctx, "k1", lim)
		refused(t, err, limits.RPM, 50*time.Second)
		if _, err := l[0].Admit(ctx, "k2", lim); err != nil {
			t.Fatalf("another key: %v", err)
		}
		clk.add(time.Minute)
		if _, err := l[0].Admit(ctx, "k1", lim); err != nil {
			t.Fatalf("next minute: %v", err)
		}
	})
	t.Run("tpm refuses once the minute's tokens are used", func(t *testing.T) {
		clk, l := pair(t)
		lim := api.KeyLimits{TPM: 100}
		for _, n := range []int{60, 50} {
			release, err := l[0].Admit(ctx, "k1", lim)
			if err != nil {
				t.Fatalf("before %d tokens: %v", n, err)
			}
			if err := l[1].AddTokens(ctx, "k1", lim, n); err != nil {
				t.Fatal(err)
			}
			release()
		}
		_, err := l[1].Admit(ctx, "k1", lim)
		refused(t, err, limits.TPM, 50*time.Second)
		clk.add(time.Minute)
		if _, err := l[1].Admit(ctx, "k1", lim); err != nil {
			t.Fatalf("next minute: %v", err)
		}
	})
	t.Run("max concurrent is shared, freed on release", func(t *testing.T) {
		_, l := pair(t)
		lim := api.KeyLimits{MaxConcurrent: 2}
		r1, err := l[0].Admit(ctx, "k1", lim)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := l[1].Admit(ctx, "k1", lim)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l[1].Admit(ctx, "k1", lim)
		refused(t, err, limits.MaxConcurrent, time.Second)
		r1()
		r1() // twice is once
		r3, err := l[0].Admit(ctx, "k1", lim)
		if err != nil {
			t.Fatalf("after a release: %v", err)
		}
		r2()
		r3()
	})
	t.Run("a slot never released expires with its lease", func(t *testing.T) {
		clk, l := pair(t)
		l[0].Lease, l[1].Lease = time.Hour, time.Hour // no renewal within the test
		lim := api.KeyLimits{MaxConcurrent: 1}
		// A queen that dies never calls release.
		if _, err := l[0].Admit(ctx, "k1", lim); err != nil {
			t.Fatal(err)
		}
		_, err := l[1].Admit(ctx, "k1", lim)
		refused(t, err, limits.MaxConcurrent, time.Second)
		clk.add(time.Hour + time.Second)
		if _, err := l[1].Admit(ctx, "k1", lim); err != nil {
			t.Fatalf("after the lease: %v", err)
		}
	})
	t.Run("rpm refusal gives the slot back", func(t *testing.T) {
		_, l := pair(t)
		lim := api.KeyLimits{RPM: 1, MaxConcurrent: 1}
		r, err := l[0].Admit(ctx, "k1", lim)
		if err != nil {
			t.Fatal(err)
		}
		r()
		_, err = l[0].Admit(ctx, "k1", lim)
		refused(t, err, limits.RPM, 50*time.Second)
		// The slot is free: with room in rpm, concurrency would admit.
		if r, err := l[1].Admit(ctx, "k1", api.KeyLimits{MaxConcurrent: 1}); err != nil {
			t.Fatalf("slot leaked: %v", err)
		} else {
			r()
		}
	})
	t.Run("racing queens never admit past the limit", func(t *testing.T) {
		_, l := pair(t)
		lim := api.KeyLimits{RPM: 10, MaxConcurrent: 4}
		var mu sync.Mutex
		var admitted []func()
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r, err := l[i%2].Admit(ctx, "k1", lim); err == nil {
					mu.Lock()
					admitted = append(admitted, r)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(admitted) != 4 {
			t.Fatalf("%d admitted at once, want 4", len(admitted))
		}
		for _, r := range admitted {
			r()
		}
	})
	t.Run("a key without limits never touches NATS", func(t *testing.T) {
		l := limits.New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		r, err := l.Admit(ctx, "k1", api.KeyLimits{})
		if err != nil {
			t.Fatal(err)
		}
		r()
		if err := l.AddTokens(ctx, "k1", api.KeyLimits{}, 10); err != nil {
			t.Fatal(err)
		}
	})
}
