package relay

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/store"
	"rbee.dev/shared/bus"
	"rbee.dev/shared/testkit"
)

// liveRig is a hub on its own connection to a NATS server with the
// narration stream, and a writer's connection publishing into it.
type liveRig struct {
	hub *Hub
	nc  *nats.Conn // the hub's
	js  jetstream.JetStream
}

func newLiveRig(t *testing.T) (*liveRig, func(t *testing.T) *liveRig) {
	t.Helper()
	ns := testkit.NATS(t)
	ctx := context.Background()
	writer := testkit.Connect(t, ns, bus.QueenOptions()...)
	if _, err := store.Open(ctx, writer, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(writer)
	if err != nil {
		t.Fatal(err)
	}
	queen := func(t *testing.T) *liveRig {
		nc := testkit.Connect(t, ns, bus.QueenOptions()...)
		st, err := store.Open(ctx, nc, store.Options{Replicas: 1, Retention: time.Hour, HiveTTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		hub := NewHub(st.NarrationReader(), slog.New(slog.NewTextHandler(io.Discard, nil)), 64)
		runCtx, stop := context.WithCancel(ctx)
		ran := make(chan struct{})
		go func() { _ = hub.Run(runCtx); close(ran) }()
		t.Cleanup(func() { stop(); <-ran })
		<-hub.Ready()
		return &liveRig{hub: hub, nc: nc, js: js}
	}
	return queen(t), queen
}

func (r *liveRig) publish(t *testing.T, job string, f Frame) {
	t.Helper()
	subj := bus.Narr(job, f.Writer, f.Kind)
	if f.Kind == bus.KindEnd {
		subj = bus.NarrEndSubject(job, f.Writer, f.Attempt)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Header: f.Header, Data: f.Data}); err != nil {
		t.Fatalf("publish %s: %v", subj, err)
	}
}

// cut takes the hub's subscription to job away behind its back, as a
// dropped message, a lost connection or a leader that died before
// republishing would, and gives it back if again is set.
func (r *liveRig) cut(t *testing.T, job string, again bool) {
	t.Helper()
	r.hub.mu.Lock()
	defer r.hub.mu.Unlock()
	f := r.hub.feeds[job]
	if f == nil || f.ns == nil {
		t.Fatalf("the hub does not follow %s", job)
	}
	_ = f.ns.Unsubscribe()
	if !again {
		return
	}
	ns, err := r.hub.narr.Live(job, func(m *nats.Msg) { r.hub.deliver(job, m) })
	if err != nil {
		t.Fatal(err)
	}
	f.ns = ns
}

// What the live feed misses reaches the client all the same, in order and
// once: a frame missed before others (the next one shows the gap) and the
// last frames of a job that then falls silent (the silent job's check
// finds them).
func TestLiveFeedMendsWhatItMisses(t *testing.T) {
	r, _ := newLiveRig(t)
	g := &gated{release: make(chan struct{})}
	close(g.release)
	streamed := make(chan error, 1)
	r.publish(t, "j1", ev(bus.QueenWriter, 1, 1, "tick"))
	go func() { streamed <- r.hub.Stream(context.Background(), g, "j1", 0, 100*time.Millisecond) }()
	for seq := uint64(2); seq <= 3; seq++ {
		r.publish(t, "j1", ev(bus.QueenWriter, seq, 1, "tick"))
	}
	got := func() int { g.mu.Lock(); defer g.mu.Unlock(); return len(g.seqs) }
	testkit.WaitFor(t, 5*time.Second, "the first events live", func() bool { return got() == 3 })

	// A gap: 4 is never sent live, 5 is.
	r.cut(t, "j1", false)
	r.publish(t, "j1", ev(bus.QueenWriter, 4, 1, "tick"))
	r.cut(t, "j1", true)
	r.publish(t, "j1", ev(bus.QueenWriter, 5, 1, "tick"))
	testkit.WaitFor(t, 5*time.Second, "the missed event", func() bool { return got() == 5 })

	// A silent end: nothing more comes live after 6..8 and the end.
	r.cut(t, "j1", false)
	for seq := uint64(6); seq <= 8; seq++ {
		r.publish(t, "j1", ev(bus.QueenWriter, seq, 1, "tick"))
	}
	r.publish(t, "j1", end(bus.QueenWriter, 9, 1, "done"))
	select {
	case err := <-streamed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the stream did not end; the client has %v", g.seqs)
	}
	g.check(t, "the client", 1, 9)
}

// A queen reads the narration of the jobs its clients follow and nothing
// of the others: a second queen costs the server one copy of what its own
// clients read, not of all narration.
func TestQueenReadsOnlyFollowedJobs(t *testing.T) {
	a, queen := newLiveRig(t)
	b := queen(t)
	g := &gated{release: make(chan struct{})}
	close(g.release)
	a.publish(t, "j1", ev(bus.QueenWriter, 1, 1, "tick"))
	streamed := make(chan error, 1)
	go func() { streamed <- a.hub.Stream(context.Background(), g, "j1", 0, time.Minute) }()
	testkit.WaitFor(t, 5*time.Second, "the client to follow", func() bool { return a.hub.Clients() == 1 })

	inA, inB := a.nc.Stats().InMsgs, b.nc.Stats().InMsgs
	const followed, other = 200, 2000
	for seq := uint64(2); seq <= followed; seq++ {
		a.publish(t, "j1", ev(bus.QueenWriter, seq, 1, "tick"))
	}
	a.publish(t, "j1", end(bus.QueenWriter, followed+1, 1, "done"))
	for seq := uint64(1); seq <= other; seq++ {
		a.publish(t, "j2", ev(bus.QueenWriter, seq, 1, "tick"))
	}
	select {
	case err := <-streamed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end")
	}
	g.mu.Lock()
	n := len(g.seqs)
	g.mu.Unlock()
	if n != followed+1 {
		t.Fatalf("the client got %d events, want %d", n, followed+1)
	}
	// Each queen's own requests (the silent job's check, say) are a few
	// messages more; a copy of the other job would be thousands.
	if d := a.nc.Stats().InMsgs - inA; d < followed || d > followed+50 {
		t.Fatalf("the following queen received %d messages for %d events of its job and %d of another", d, followed+1, other)
	}
	if d := b.nc.Stats().InMsgs - inB; d > 50 {
		t.Fatalf("a queen with no client received %d messages while %d events were stored", d, followed+1+other)
	}
}
