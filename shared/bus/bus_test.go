package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/shared/bus"
)

// natsServer starts an embedded NATS server with JetStream on a random
// port, storing under dir.
func natsServer(tb testing.TB, dir string, port int) *server.Server {
	tb.Helper()
	s, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dir, Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats not ready")
	}
	tb.Cleanup(s.Shutdown)
	return s
}

// narrStream connects to url as a hive would and makes the narration
// stream as a queen would.
func narrStream(tb testing.TB, url string) (*nats.Conn, jetstream.JetStream, jetstream.Stream) {
	tb.Helper()
	nc, err := nats.Connect(url, bus.HiveOptions("h1")...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := js.CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{
		Name: bus.NarrStream, Subjects: []string{bus.NarrAll}, Storage: jetstream.FileStorage, AllowDirect: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js, st
}

// event is what the tests narrate.
type event struct {
	JobID string `json:"job_id"`
	Seq   uint64 `json:"seq"`
	N     int    `json:"n,omitempty"`
	State string `json:"state,omitempty"`
}

func encode(job string, n int) bus.Encode {
	return func(seq uint64) ([]byte, error) { return json.Marshal(event{JobID: job, Seq: seq, N: n}) }
}

// stored reads every frame of job in stream order, checking that its
// headers and body agree.
func stored(tb testing.TB, js jetstream.JetStream, job string) []bus.Meta {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, bus.NarrStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.NarrJob(job)}})
	if err != nil {
		tb.Fatal(err)
	}
	var out []bus.Meta
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		meta, bad := bus.ParseMeta(m.Subject(), m.Headers())
		var e event
		if err := json.Unmarshal(m.Data(), &e); bad != "" || err != nil || e.Seq != meta.Seq || e.JobID != job {
			tb.Fatalf("frame %s %v %s: %s %v", m.Subject(), m.Headers(), m.Data(), bad, err)
		}
		out = append(out, meta)
	}
}

// Events are stored in order, 1..n, each with its headers, then one end.
func TestPublisherStoresInOrder(t *testing.T) {
	s := natsServer(t, t.TempDir(), -1)
	_, js, _ := narrStream(t, s.ClientURL())
	p := bus.NewPublisher(js, "j1", "h1", 2, 1)
	ctx := context.Background()
	if err := p.Start(ctx, encode("j1", 0)); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		kind := bus.KindEvent
		if i%100 == 99 {
			kind = bus.KindData
		}
		if err := p.Publish(kind, encode("j1", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.End(ctx, encode("j1", 0)); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(bus.KindEvent, encode("j1", 0)); !errors.Is(err, bus.ErrAlreadyEnded) {
		t.Fatalf("event after the end: %v", err)
	}
	got := stored(t, js, "j1")
	if len(got) != 502 {
		t.Fatalf("%d frames stored, want 502", len(got))
	}
	for i, m := range got {
		want := bus.KindEvent
		switch {
		case i == 0:
			want = bus.KindStart
		case i == 501:
			want = bus.KindEnd
		case i%100 == 0:
			want = bus.KindData
		}
		if m.Seq != uint64(i+1) || m.Attempt != 2 || m.Writer != "h1" || m.Kind != want {
			t.Fatalf("frame %d: %+v, want kind %s", i, m, want)
		}
	}
	last, err := bus.LastSeq(ctx, js.Conn(), "j1", "h1")
	if err != nil || last != 502 {
		t.Fatalf("LastSeq = %d, %v", last, err)
	}
}

// A NATS server that restarts mid-job loses nothing the publisher sent and
// stores nothing twice: it resends from the stream's last stored event.
func TestPublisherResendsAfterReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a NATS server")
	}
	dir := t.TempDir()
	s := natsServer(t, dir, -1)
	port := s.Addr().(*net.TCPAddr).Port
	nc, js, _ := narrStream(t, s.ClientURL())
	p := bus.NewPublisher(js, "j1", "h1", 1, 1)
	const n = 3000
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(20 * time.Millisecond)
		s.Shutdown()
		s.WaitForShutdown()
		natsServer(t, dir, port)
	}()
	for i := range n {
		if err := p.Publish(bus.KindEvent, encode("j1", i)); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	<-restarted
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.End(ctx, encode("j1", 0)); err != nil {
		t.Fatal(err)
	}
	if nc.Stats().Reconnects == 0 {
		t.Fatal("the connection never reconnected")
	}
	got := stored(t, js, "j1")
	if len(got) != n+1 {
		t.Fatalf("%d frames stored, want %d", len(got), n+1)
	}
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("frame %d has sequence %d", i, m.Seq)
		}
	}
}

// Each attempt stores one end, whoever races to write it; a start after
// the end is refused, and the work must not begin.
func TestOneEndPerAttempt(t *testing.T) {
	s := natsServer(t, t.TempDir(), -1)
	_, js, _ := narrStream(t, s.ClientURL())
	ctx := context.Background()
	end := func(writer string, attempt int) error {
		data, _ := json.Marshal(event{JobID: "j1", Seq: 9, State: "done"})
		return bus.PublishEnd(ctx, js, bus.Meta{Job: "j1", Writer: writer, Seq: 9, Attempt: attempt}, data)
	}
	if err := end(bus.QueenWriter, 1); err != nil {
		t.Fatal(err)
	}
	if err := end("h1", 1); !errors.Is(err, bus.ErrAlreadyEnded) {
		t.Fatalf("second end of attempt 1: %v", err)
	}
	if err := bus.NewPublisher(js, "j1", "h1", 1, 1).Start(ctx, encode("j1", 0)); !errors.Is(err, bus.ErrAlreadyEnded) {
		t.Fatalf("start after the end: %v", err)
	}
	if err := end("h2", 2); err != nil {
		t.Fatalf("end of attempt 2: %v", err)
	}
}

// Begin sends the start and returns at once; events published from other
// goroutines before its answer are stored after it, in order. After a
// start refused by a stored end, nothing more is stored.
func TestPublisherBegin(t *testing.T) {
	s := natsServer(t, t.TempDir(), -1)
	_, js, _ := narrStream(t, s.ClientURL())
	ctx := context.Background()
	p := bus.NewPublisher(js, "j1", "h1", 1, 1)
	wait := p.Begin(ctx, encode("j1", 0))
	published := make(chan error, 10)
	for i := range 10 {
		go func() { published <- p.Publish(bus.KindEvent, encode("j1", i+1)) }()
	}
	for range 10 {
		if err := <-published; err != nil {
			t.Fatal(err)
		}
	}
	if err := wait(); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if err := p.End(ctx, encode("j1", 0)); err != nil {
		t.Fatal(err)
	}
	got := stored(t, js, "j1")
	if len(got) != 12 || got[0].Kind != bus.KindStart || got[11].Kind != bus.KindEnd {
		t.Fatalf("stored %+v; want the start, 10 events, the end", got)
	}
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("frame %d has sequence %d", i, m.Seq)
		}
	}

	data, _ := json.Marshal(event{JobID: "j2", Seq: 1, State: "cancelled"})
	if err := bus.PublishEnd(ctx, js, bus.Meta{Job: "j2", Writer: bus.QueenWriter, Seq: 1, Attempt: 1}, data); err != nil {
		t.Fatal(err)
	}
	p = bus.NewPublisher(js, "j2", "h1", 1, 2)
	wait = p.Begin(ctx, encode("j2", 0))
	go func() { published <- p.Publish(bus.KindEvent, encode("j2", 1)) }()
	if err := wait(); !errors.Is(err, bus.ErrAlreadyEnded) {
		t.Fatalf("Begin after the end: %v", err)
	}
	if err := <-published; !errors.Is(err, bus.ErrAlreadyEnded) {
		t.Fatalf("event after a refused start: %v", err)
	}
	if got := stored(t, js, "j2"); len(got) != 1 || got[0].Writer != bus.QueenWriter {
		t.Fatalf("stored %+v; want the queen's end alone", got)
	}
}

// An event past the budget is not stored and gives its sequence back, so
// the end follows the last stored event without a gap.
func TestPublisherBudget(t *testing.T) {
	s := natsServer(t, t.TempDir(), -1)
	_, js, _ := narrStream(t, s.ClientURL())
	p := bus.NewPublisher(js, "j1", "h1", 1, 1)
	exceeded := 0
	p.SetBudget(300, func() { exceeded++ })
	var err error
	for i := 0; err == nil; i++ {
		err = p.Publish(bus.KindEvent, encode("j1", i))
	}
	if !errors.Is(err, bus.ErrBudgetExceeded) || exceeded != 1 {
		t.Fatalf("err %v, told %d times", err, exceeded)
	}
	if err := p.End(context.Background(), encode("j1", 0)); err != nil {
		t.Fatal(err)
	}
	got := stored(t, js, "j1")
	for i, m := range got {
		if m.Seq != uint64(i+1) {
			t.Fatalf("frame %d has sequence %d", i, m.Seq)
		}
	}
	if got[len(got)-1].Kind != bus.KindEnd {
		t.Fatalf("last frame %+v", got[len(got)-1])
	}
}

// LastSeq reads a frame's header, and the body of one stored without
// headers.
func TestLastSeqWithoutHeaders(t *testing.T) {
	s := natsServer(t, t.TempDir(), -1)
	nc, js, _ := narrStream(t, s.ClientURL())
	ctx := context.Background()
	if _, err := js.Publish(ctx, bus.Narr("j1", "h1", bus.KindEvent), []byte(`{"job_id":"j1","seq":41}`)); err != nil {
		t.Fatal(err)
	}
	if last, err := bus.LastSeq(ctx, nc, "j1", "h1"); err != nil || last != 41 {
		t.Fatalf("LastSeq = %d, %v", last, err)
	}
	if last, err := bus.LastSeq(ctx, nc, "j2", "h1"); err != nil || last != 0 {
		t.Fatalf("LastSeq of no events = %d, %v", last, err)
	}
}

// A cancel is a typed request and reply whose JSON is what queens and
// hives of earlier versions send.
func TestCancel(t *testing.T) {
	s := natsServer(t, t.TempDir(), -1)
	nc, _, _ := narrStream(t, s.ClientURL())
	sub, err := bus.ServeCancel(nc, "h1", func(r bus.CancelRequest) bus.CancelReply { return bus.CancelReply{Running: r.JobID == "j1"} })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for job, want := range map[string]bool{"j1": true, "j2": false} {
		r, err := bus.RequestCancel(ctx, nc, "h1", bus.CancelRequest{JobID: job})
		if err != nil || r.Running != want {
			t.Fatalf("cancel %s: %+v, %v", job, r, err)
		}
	}
	m, err := nc.RequestWithContext(ctx, bus.Cancel("h1"), []byte(`{"job_id":"j1"}`))
	if err != nil || string(m.Data) != `{"running":true}` {
		t.Fatalf("raw cancel: %s, %v", m.Data, err)
	}
}

func TestParseMeta(t *testing.T) {
	hdr := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		subj string
		h    nats.Header
		want bus.Meta
		bad  string
	}{
		{"narr.j1.h1.ev", hdr(bus.HeaderSeq, "3", bus.HeaderAttempt, "2", bus.HeaderWriter, "h1", bus.HeaderKind, "ev"), bus.Meta{Job: "j1", Writer: "h1", Kind: "ev", Seq: 3, Attempt: 2}, ""},
		{"narr.j1.queen.ev", hdr(bus.HeaderSeq, "1", bus.HeaderWriter, "queen", bus.HeaderKind, "ev", bus.HeaderHive, "h1"), bus.Meta{Job: "j1", Writer: "queen", Kind: "ev", Seq: 1, Attempt: 1, Hive: "h1"}, ""},
		{"narr.j1.h1.end.3", hdr(bus.HeaderSeq, "9", bus.HeaderAttempt, "1", bus.HeaderWriter, "h1", bus.HeaderKind, "end"), bus.Meta{Job: "j1", Writer: "h1", Kind: "end", Seq: 9, Attempt: 3}, ""},
		{"narr.j1.h1.ev", hdr(bus.HeaderSeq, "3", bus.HeaderWriter, "h2", bus.HeaderKind, "ev"), bus.Meta{}, bus.BadHeaders},
		{"narr.j1.h1.ev", hdr(bus.HeaderSeq, "3", bus.HeaderWriter, "h1", bus.HeaderKind, "data"), bus.Meta{}, bus.BadHeaders},
		{"narr.j1.h1.ev", hdr(bus.HeaderSeq, "-3", bus.HeaderWriter, "h1", bus.HeaderKind, "ev"), bus.Meta{}, bus.BadHeaders},
		{"narr.j1.h1.ev", hdr(bus.HeaderSeq, "3", bus.HeaderAttempt, "9999999999", bus.HeaderWriter, "h1", bus.HeaderKind, "ev"), bus.Meta{}, bus.BadHeaders},
		{"narr.j1.h1.ev", hdr(bus.HeaderSeq, "3", bus.HeaderWriter, "h1", bus.HeaderKind, "ev", bus.HeaderHive, "a.b"), bus.Meta{}, bus.BadHeaders},
		{"narr.j1.h1.ev", hdr(bus.HeaderSeq, "0", bus.HeaderWriter, "h1", bus.HeaderKind, "ev"), bus.Meta{}, bus.BadSeq},
		{"narr.j1.h1.ev", nil, bus.Meta{}, bus.BadHeaders},
		{"dispatch.hive.h1", hdr(), bus.Meta{}, bus.BadSubject},
	}
	for _, tt := range tests {
		got, bad := bus.ParseMeta(tt.subj, tt.h)
		if bad != tt.bad || (bad == "" && got != tt.want) {
			t.Errorf("ParseMeta(%s, %v) = %+v %q, want %+v %q", tt.subj, tt.h, got, bad, tt.want, tt.bad)
		}
	}
	// What Msg writes, ParseMeta reads back.
	for _, m := range []bus.Meta{{Job: "j1", Writer: "h1", Kind: bus.KindData, Seq: 7, Attempt: 2}, {Job: "j1", Writer: "h1", Kind: bus.KindEnd, Seq: 8, Attempt: 2}} {
		msg := m.Msg(nil)
		if got, bad := bus.ParseMeta(msg.Subject, msg.Header); bad != "" || got != m {
			t.Errorf("round trip of %+v: %+v %q", m, got, bad)
		}
	}
}

// BenchmarkMetaMsg is what a writer spends per event on its headers.
func BenchmarkMetaMsg(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = bus.Meta{Job: "0193a1b2c3d4e5f6a7b8c9d0", Writer: "gpuA", Kind: bus.KindEvent, Seq: uint64(i), Attempt: 1}.Msg(nil)
	}
}
