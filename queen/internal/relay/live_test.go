package relay

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
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

// own publishes as the hub's queen does: on the hub's own connection, so
// the server reads a subscription Expect made before the frame.
func (r *liveRig) own(t *testing.T, job string, f Frame) {
	t.Helper()
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	(&liveRig{js: js}).publish(t, job, f)
}

// historyReads counts the queen's requests for single narration messages
// (the JSON API's message gets), as a client on the server sees them.
func historyReads(t *testing.T, r *liveRig) func() int {
	t.Helper()
	nc, err := nats.Connect(r.nc.ConnectedUrl(), bus.QueenOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var n atomic.Int64
	if _, err := nc.Subscribe("$JS.API.STREAM.MSG.GET."+bus.NarrStream, func(*nats.Msg) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() int {
		_ = nc.Flush()
		return int(n.Load())
	}
}

// followToEnd follows j1 from its start as a new client, ends it with the
// queen's end event last once the client follows, and asserts that the client
// got events 1 to last, in order and once, then the close.
func (r *liveRig) followToEnd(t *testing.T, last uint64) {
	t.Helper()
	g := &gated{release: make(chan struct{})}
	close(g.release)
	streamed := make(chan error, 1)
	go func() { streamed <- r.hub.Stream(context.Background(), g, "j1", 0, time.Minute) }()
	testkit.WaitFor(t, 5*time.Second, "the client to follow", func() bool { return r.hub.Clients() == 1 })
	r.own(t, "j1", end(bus.QueenWriter, last, 1, "done"))
	if err := <-streamed; err != nil {
		t.Fatal(err)
	}
	g.gotAll(t, last)
}

// gotAll asserts that g got events 1 to last, in order and once, then the
// close.
func (g *gated) gotAll(t *testing.T, last uint64) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if uint64(len(g.seqs)) != last {
		t.Fatalf("the client got %v, want 1 to %d", g.seqs, last)
	}
	for i, s := range g.seqs {
		if s != uint64(i)+1 {
			t.Fatalf("the client got %v, want 1 to %d", g.seqs, last)
		}
	}
	if !g.done {
		t.Fatal("the client got no close after the end")
	}
}

// A client of a job its queen created (Hub.Expect) reads the job's opening
// from the queen's memory: the queen asks the stream for no message. A
// client of a job the queen did not create asks it for several.
func TestExpectedJobReadsNoHistory(t *testing.T) {
	for _, expected := range []bool{true, false} {
		r, _ := newLiveRig(t)
		reads := historyReads(t, r)
		if expected {
			r.hub.Expect("j1")
		}
		for seq := uint64(1); seq <= 4; seq++ {
			r.own(t, "j1", ev(bus.QueenWriter, seq, 1, "tick"))
		}
		before := reads()
		r.followToEnd(t, 5)
		n := reads() - before
		if expected && n != 0 {
			t.Fatalf("the client of an expected job cost %d history reads, want none", n)
		}
		if !expected && n < 3 {
			t.Fatalf("the client of a job read from history cost %d reads, want one for its newest and one each for 1 to 3", n)
		}
	}
}

// missedFirst is a queen that expects j1 and whose feed misses its first
// event.
func missedFirst(t *testing.T) *liveRig {
	t.Helper()
	r, _ := newLiveRig(t)
	r.hub.Expect("j1")
	r.cut(t, "j1", false)
	r.own(t, "j1", ev(bus.QueenWriter, 1, 1, "tick"))
	r.cut(t, "j1", true)
	return r
}

// An opening the live feed did not get whole is read from history: a
// first frame the feed missed, and a hive's frame the feed leaves to
// history, reach the client all the same, in order and once.
func TestExpectedJobOpeningMended(t *testing.T) {
	t.Run("first frame missed", func(t *testing.T) {
		r := missedFirst(t)
		r.own(t, "j1", ev(bus.QueenWriter, 2, 1, "tick"))
		r.followToEnd(t, 3)
	})
	t.Run("first frame missed, then silence", func(t *testing.T) {
		r := missedFirst(t)
		g := &gated{release: make(chan struct{})}
		close(g.release)
		streamed := make(chan error, 1)
		go func() { streamed <- r.hub.Stream(context.Background(), g, "j1", 0, time.Minute) }()
		testkit.WaitFor(t, 5*time.Second, "the missed first event", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.seqs) == 1 })
		r.own(t, "j1", end(bus.QueenWriter, 2, 1, "done"))
		if err := <-streamed; err != nil {
			t.Fatal(err)
		}
		g.gotAll(t, 2)
	})
	t.Run("a hive's frame no record vouches for", func(t *testing.T) {
		r, _ := newLiveRig(t)
		r.hub.Records = records{} // no record: no hive's frame goes live
		r.hub.Expect("j1")
		r.own(t, "j1", placed(1, 1, "job_created", "h1"))
		r.publish(t, "j1", ev("h1", 2, 1, "started"))
		r.own(t, "j1", ev(bus.QueenWriter, 3, 1, "tick"))
		r.followToEnd(t, 4)
	})
}

// A job its queen created and nobody follows is followed for expectFor
// only.
func TestExpectedJobNobodyFollows(t *testing.T) {
	r, _ := newLiveRig(t)
	r.hub.Expect("j1")
	r.own(t, "j1", ev(bus.QueenWriter, 1, 1, "tick"))
	subs := r.nc.NumSubscriptions()
	follows := func() bool {
		r.hub.mu.RLock()
		defer r.hub.mu.RUnlock()
		return r.hub.feeds["j1"] != nil
	}
	if !follows() {
		t.Fatal("the queen does not follow the job it expects a client for")
	}
	testkit.WaitFor(t, expectFor+5*time.Second, "the queen to stop following", func() bool { return !follows() })
	if n := r.nc.NumSubscriptions(); n != subs-1 {
		t.Fatalf("the queen's connection has %d subscriptions, %d while it followed the job", n, subs)
	}
}

// A job's opening larger than a feed keeps is read from history, whole.
func TestExpectedJobLargeOpeningFromHistory(t *testing.T) {
	r, _ := newLiveRig(t)
	reads := historyReads(t, r)
	r.hub.Expect("j1")
	big := strings.Repeat("x", openingMaxBytes/2)
	for seq := uint64(1); seq <= 3; seq++ {
		f := ev(bus.QueenWriter, seq, 1, "tick")
		f.Data = []byte(fmt.Sprintf(`{"job_id":"j1","seq":%d,"attempt":1,"action":"tick","message":%q}`, seq, big))
		r.own(t, "j1", f)
	}
	before := reads()
	r.followToEnd(t, 4)
	if n := reads() - before; n < 3 {
		t.Fatalf("a client of an opening too large to keep cost %d history reads; it was kept", n)
	}
}

// A burst of jobs nobody follows is followed ahead only up to expectMax:
// each costs a subscription and its goroutine for expectFor.
func TestExpectedJobsBounded(t *testing.T) {
	r, _ := newLiveRig(t)
	followed := func() int {
		r.hub.mu.RLock()
		defer r.hub.mu.RUnlock()
		return len(r.hub.feeds)
	}
	for i := 0; i < expectMax+10; i++ {
		r.hub.Expect(fmt.Sprintf("burst%d", i))
	}
	if n := followed(); n != expectMax {
		t.Fatalf("the queen follows %d jobs nobody follows yet, want at most %d", n, expectMax)
	}
	// A client coming to one frees its place.
	s, _, err := r.hub.subscribe(context.Background(), "burst0", false, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.hub.unsubscribe(s)
	r.hub.Expect("j1")
	if n := followed(); n != expectMax+1 {
		t.Fatalf("the queen follows %d jobs, want %d once a client came to one", n, expectMax+1)
	}
	testkit.WaitFor(t, expectFor+5*time.Second, "the queen to stop following the jobs nobody followed", func() bool { return followed() == 1 })
}
