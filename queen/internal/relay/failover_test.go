package relay

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// gated records what reaches a client that stalls on its first frame until
// let through, as a client on a slow link would.
type gated struct {
	release chan struct{}
	once    sync.Once

	mu    sync.Mutex
	seqs  []uint64
	pings int
	done  bool
}

func (g *gated) Frame(f Frame) error {
	g.once.Do(func() { <-g.release })
	var e struct{ Seq uint64 }
	_ = json.Unmarshal(f.Data, &e)
	g.mu.Lock()
	g.seqs = append(g.seqs, e.Seq)
	g.mu.Unlock()
	return nil
}

func (g *gated) Comment(string) error {
	g.mu.Lock()
	g.pings++
	g.mu.Unlock()
	return nil
}

func (g *gated) Done() error {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
	return nil
}

func (g *gated) Flush() error { return nil }

// A queen whose NATS server dies keeps its clients: a client that must read
// history while the server is gone (it fell behind its live feed just then)
// is kept open, pinged, and served from where it stood once the queen is
// connected again, through the end and the close. It never reconnects.
func TestStreamRidesOutNATSLoss(t *testing.T) {
	dir := t.TempDir()
	ns := testkit.NATS(t, func(o *server.Options) { o.StoreDir = dir })
	port := ns.Addr().(*net.TCPAddr).Port
	nc := testkit.Connect(t, ns, bus.QueenOptions()...)
	ctx := context.Background()
	st, err := store.Open(ctx, nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	hub := NewHub(st.NarrationReader(), log, 64)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { _ = hub.Run(runCtx); close(ran) }()
	t.Cleanup(func() { stop(); <-ran })
	<-hub.Ready()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(f Frame) {
		t.Helper()
		subj := bus.Narr("j1", f.Writer, f.Kind)
		if f.Kind == bus.KindEnd {
			subj = bus.NarrEndSubject("j1", f.Writer, f.Attempt)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := js.PublishMsg(pctx, &nats.Msg{Subject: subj, Header: f.Header, Data: f.Data}); err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
	}
	const before, total = 200, 300
	publish(ev(bus.QueenWriter, 1, 1, "tick"))

	g := &gated{release: make(chan struct{})}
	streamed := make(chan error, 1)
	go func() { streamed <- hub.Stream(ctx, g, "j1", 0, 100*time.Millisecond) }()
	// The client is held on its first frame while more than its live
	// buffer arrives: its feed is closed, and it must read the rest from
	// the stream.
	for seq := uint64(2); seq <= before; seq++ {
		publish(ev(bus.QueenWriter, seq, 1, "tick"))
	}
	testkit.WaitFor(t, 10*time.Second, "the client's feed to overflow", func() bool { return hub.Overflows() > 0 })

	ns.Shutdown()
	ns.WaitForShutdown()
	lost := time.Now()
	close(g.release)
	// A client resuming while the server is gone is kept as well.
	resumed := &gated{release: make(chan struct{})}
	close(resumed.release)
	resumedDone := make(chan error, 1)
	go func() { resumedDone <- hub.Stream(ctx, resumed, "j1", 100, 100*time.Millisecond) }()
	// Longer than a JetStream request waits for its answer: the history
	// read the client needs has failed by now.
	select {
	case err := <-streamed:
		t.Fatalf("the stream ended while NATS was gone (%s after): %v", time.Since(lost).Round(time.Millisecond), err)
	case err := <-resumedDone:
		t.Fatalf("the resumed stream ended while NATS was gone (%s after): %v", time.Since(lost).Round(time.Millisecond), err)
	case <-time.After(6 * time.Second):
	}
	testkit.NATS(t, func(o *server.Options) { o.StoreDir, o.Port = dir, port })
	testkit.WaitFor(t, 10*time.Second, "the queen's connection to come back", nc.IsConnected)
	back := time.Now()
	for seq := uint64(before + 1); seq < total; seq++ {
		publish(ev(bus.QueenWriter, seq, 1, "tick"))
	}
	publish(end(bus.QueenWriter, total, 1, "done"))

	select {
	case err := <-streamed:
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not end within 20s of NATS coming back")
	}
	t.Logf("the stream ended %s after NATS came back", time.Since(back).Round(time.Millisecond))
	select {
	case err := <-resumedDone:
		if err != nil {
			t.Fatalf("resumed stream: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the resumed stream did not end")
	}
	g.check(t, "the client", 1, total)
	resumed.check(t, "the resuming client", 101, total)
}

// check asserts that g got events first to last, in order, then the close,
// and was pinged while it waited.
func (g *gated) check(t *testing.T, who string, first, last uint64) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if uint64(len(g.seqs)) != last-first+1 {
		t.Fatalf("%s got %d events, want %d", who, len(g.seqs), last-first+1)
	}
	for i, s := range g.seqs {
		if s != first+uint64(i) {
			t.Fatalf("%s: event %d has seq %d", who, i, s)
		}
	}
	if !g.done {
		t.Fatalf("%s got no close after the end", who)
	}
	if g.pings == 0 {
		t.Fatalf("%s was not pinged while it waited", who)
	}
}
