package jobs

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
)

// A burst of jobs is spread over the hives by what the queen has just
// sent each, not by heartbeats that do not know of it yet; binpack fills
// one hive's free slots before the next.
func TestPlacementCountsWhatItSent(t *testing.T) {
	v, heartbeat := hivesView(t)
	heartbeat(api.Hive{ID: "a", Slots: 4, SlotsFree: 4, HeartbeatAt: time.Unix(1, 0)})
	heartbeat(api.Hive{ID: "b", Slots: 4, SlotsFree: 4, HeartbeatAt: time.Unix(1, 0)})
	waitHives(t, v, 2)

	for _, c := range []struct {
		policy string
		want   []string
	}{
		{Spread, []string{"a", "b", "a", "b", "a", "b"}},
		{Binpack, []string{"a", "a", "a", "a", "b", "b"}},
	} {
		s := &Service{v: v, Policy: c.policy, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		var got []string
		for range c.want {
			to, err := s.place(api.JobRequest{Operation: api.OpHiveCheck})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, to)
		}
		if !slices.Equal(got, c.want) {
			t.Fatalf("%s placed on %v, want %v", c.policy, got, c.want)
		}
	}

	// A new heartbeat tells what the hive really has; the tally restarts.
	s := &Service{v: v, Policy: Spread, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for range 3 {
		if _, err := s.place(api.JobRequest{Operation: api.OpHiveCheck, Hive: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat(api.Hive{ID: "b", Slots: 4, SlotsFree: 4, HeartbeatAt: time.Unix(2, 0)})
	waitFor(t, func() bool { h, _ := v.Hive("b"); return h.HeartbeatAt.Equal(time.Unix(2, 0)) })
	if to, _ := s.place(api.JobRequest{Operation: api.OpHiveCheck}); to != "b" {
		t.Fatalf("placed on %s, want b: a has 3 jobs it has not reported", to)
	}
}

func hivesView(t *testing.T) (*view.View, func(api.Hive)) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hives, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "hives"})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "jobs"})
	if err != nil {
		t.Fatal(err)
	}
	v := view.New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	go func() { _ = v.Run(ctx, hives, jobs) }()
	return v, func(h api.Hive) {
		data, _ := json.Marshal(h)
		if _, err := hives.Put(ctx, h.ID, data); err != nil {
			t.Fatal(err)
		}
	}
}

func waitHives(t *testing.T, v *view.View, n int) {
	t.Helper()
	waitFor(t, func() bool { return len(v.Hives()) == n })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
