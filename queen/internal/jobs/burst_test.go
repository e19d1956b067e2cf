package jobs_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/queentest"
	"rbee.dev/shared/api"
)

// A burst of jobs is placed by what the queen has just sent each hive, not
// by heartbeats that do not know of it yet: spread alternates, binpack
// fills one hive's free slots before the next. A hive's free slots are
// what its heartbeat says or what the jobs placed on it leave, the fewer.
func TestPlacementCountsWhatItSent(t *testing.T) {
	beat := time.Unix(1, 0)
	for _, c := range []struct {
		policy string
		want   []string
	}{
		{jobs.Spread, []string{"a", "b", "a", "b", "a", "b"}},
		{jobs.Binpack, []string{"a", "a", "a", "a", "b", "b"}},
	} {
		p := queentest.New(t, api.Hive{ID: "a", Slots: 4, SlotsFree: 4, HeartbeatAt: beat}, api.Hive{ID: "b", Slots: 4, SlotsFree: 4, HeartbeatAt: beat})
		p.Jobs.Policy = c.policy
		var got []string
		for range c.want {
			got = append(got, create(t, p, api.JobRequest{Operation: api.OpHiveCheck}))
		}
		if !slices.Equal(got, c.want) {
			t.Fatalf("%s placed on %v, want %v", c.policy, got, c.want)
		}
	}

	p := queentest.New(t, api.Hive{ID: "a", Slots: 4, SlotsFree: 4, HeartbeatAt: beat}, api.Hive{ID: "b", Slots: 4, SlotsFree: 4, HeartbeatAt: beat})
	for range 3 {
		create(t, p, api.JobRequest{Operation: api.OpHiveCheck, Hive: "b"})
	}
	if to := create(t, p, api.JobRequest{Operation: api.OpHiveCheck}); to != "a" {
		t.Fatalf("placed on %s, want a: b has 3 jobs it has not reported", to)
	}
	p.PutHive(t, api.Hive{ID: "a", Slots: 4, SlotsFree: 4, HeartbeatAt: time.Unix(2, 0)})
	if to := create(t, p, api.JobRequest{Operation: api.OpHiveCheck}); to != "a" {
		t.Fatalf("placed on %s, want a: 3 slots free against b's 1", to)
	}
}

func create(t *testing.T, p *queentest.Parts, req api.JobRequest) string {
	t.Helper()
	j, _, err := p.Jobs.Create(context.Background(), req, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return j.Hive
}
