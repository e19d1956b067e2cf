package store_test

import (
	"context"
	"testing"
	"time"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

func mustStore(t testing.TB) *store.Store {
	t.Helper()
	nc := testkit.Connect(t, testkit.NATS(t))
	st, err := store.Open(context.Background(), nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A job's usage is recorded once however often it is offered, and a scan
// reads one key's records or all of them, from a time on.
func TestUsageLedgerCountsEachJobOnce(t *testing.T) {
	st := mustStore(t)
	ctx := context.Background()
	now := time.Now().UTC()
	recs := []api.UsageRecord{
		{JobID: "j1", KeyID: "k1", Model: "m", PromptTokens: 3, CompletionTokens: 5, Time: now},
		{JobID: "j2", KeyID: "k1", Model: "m", PromptTokens: 7, CompletionTokens: 11, Time: now},
		{JobID: "j3", KeyID: "k2", Model: "m", PromptTokens: 1, CompletionTokens: 1, Time: now},
	}
	for _, r := range recs {
		for i, want := range []bool{true, false, false} {
			added, err := st.RecordUsage(ctx, r)
			if err != nil || added != want {
				t.Fatalf("record %s, try %d: added %v, %v; want %v", r.JobID, i, added, err, want)
			}
		}
	}
	for _, tc := range []struct {
		key       string
		from      time.Time
		jobs, tok int64
	}{
		{"k1", time.Time{}, 2, 26},
		{"k2", time.Time{}, 1, 2},
		{"", time.Time{}, 3, 28},
		{"", now.Add(-time.Minute), 3, 28},
		{"", now.Add(2 * time.Hour), 0, 0},
		{"nobody", time.Time{}, 0, 0},
	} {
		var jobs, tok int64
		if err := st.ScanUsage(ctx, tc.key, tc.from, func(r api.UsageRecord) { jobs++; tok += r.PromptTokens + r.CompletionTokens }); err != nil {
			t.Fatal(err)
		}
		if jobs != tc.jobs || tok != tc.tok {
			t.Errorf("key %q from %v: %d jobs, %d tokens; want %d, %d", tc.key, tc.from, jobs, tok, tc.jobs, tc.tok)
		}
	}
}
