// Package queentest assembles the queen's parts on an in-process NATS
// server for the unit tests of its packages: the store, a running view, the
// metrics, the job service and the relay hub, wired as app.Start wires
// them, without HTTP, a hive or the background loops that move jobs on
// (applier, reaper). Tests see exactly what the queen itself writes. Only
// tests import it.
package queentest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/relay"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// Parts are one queen's parts, running until the test ends.
type Parts struct {
	NC      *nats.Conn
	Store   *store.Store
	View    *view.View
	Metrics *metrics.Queen
	Jobs    *jobs.Service
	Hub     *relay.Hub
	Log     *slog.Logger
}

// New starts NATS, opens the store, writes a heartbeat for each hive, and
// starts the view and the hub; it returns once both are ready.
func New(tb testing.TB, hives ...api.Hive) *Parts {
	tb.Helper()
	nc := testkit.Connect(tb, testkit.NATS(tb))
	ctx := context.Background()
	st, err := store.Open(ctx, nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := &Parts{NC: nc, Store: st, View: view.New(log, view.DefaultRecent), Hub: relay.NewHub(st.NarrationReader(), log, 64), Log: log}
	for _, h := range hives {
		p.putHive(tb, h)
	}
	p.Metrics = metrics.New(metrics.Gauges{
		JobsByState: p.View.CountByState, HivesOnline: func() int { return len(p.View.Hives()) },
		SSEClients: p.Hub.Clients, Relayed: p.Hub.Relayed, SSEOverflows: p.Hub.Overflows,
		NATSConnected: nc.IsConnected, NATSTraffic: nc.Stats,
	})
	p.Hub.Records = p.View
	p.Jobs = jobs.New(st, p.View, p.Metrics, log)

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	go func() { _ = p.View.Run(runCtx, st); done <- struct{}{} }()
	go func() { _ = p.Hub.Run(runCtx); done <- struct{}{} }()
	tb.Cleanup(func() { cancel(); <-done; <-done })
	for _, ready := range []<-chan struct{}{p.View.Synced(), p.Hub.Ready()} {
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			tb.Fatal("view or hub not ready within 10s")
		}
	}
	return p
}

// PutHive writes a heartbeat for h and waits until the view has it.
func (p *Parts) PutHive(tb testing.TB, h api.Hive) {
	tb.Helper()
	p.putHive(tb, h)
	testkit.WaitFor(tb, 5*time.Second, "hive "+h.ID+" in the view", func() bool {
		got, ok := p.View.Hive(h.ID)
		return ok && got.HeartbeatAt.Equal(h.HeartbeatAt) && len(got.Workers) == len(h.Workers)
	})
}

// DropHive deletes hive id's heartbeat, as a hive that stops does, and
// waits until the view has let it go.
func (p *Parts) DropHive(tb testing.TB, id string) {
	tb.Helper()
	js, err := jetstream.New(p.NC)
	if err != nil {
		tb.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), bus.HivesBucket)
	if err != nil {
		tb.Fatal(err)
	}
	if err := kv.Delete(context.Background(), id); err != nil {
		tb.Fatal(err)
	}
	testkit.WaitFor(tb, 5*time.Second, "hive "+id+" gone from the view", func() bool {
		_, ok := p.View.Hive(id)
		return !ok
	})
}

func (p *Parts) putHive(tb testing.TB, h api.Hive) {
	tb.Helper()
	if err := p.Store.PutHive(context.Background(), h); err != nil {
		tb.Fatal(err)
	}
}
