package embedded_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/embedded"
	"rbee.dev/queen/internal/natsauth"
)

// The embedded server holds no more than it is told, so narration cannot
// take the disk.
func TestMaxStore(t *testing.T) {
	s, err := embedded.Start(t.TempDir(), embedded.Options{MaxStore: 96 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if got := s.JetStreamConfig().MaxStore; got != 96<<20 {
		t.Fatalf("max store %d, want %d", got, 96<<20)
	}
}

// The sync policy reaches JetStream as the server's own settings.
func TestSync(t *testing.T) {
	for _, c := range []struct {
		in       string
		always   bool
		interval time.Duration
	}{
		{"always", true, embedded.ServerDefaultSync},
		{"250ms", false, 250 * time.Millisecond},
		{"default", false, embedded.ServerDefaultSync},
	} {
		var s embedded.Sync
		if err := s.Set(c.in); err != nil {
			t.Fatal(err)
		}
		ns, err := embedded.Start(t.TempDir(), embedded.Options{Sync: s})
		if err != nil {
			t.Fatal(err)
		}
		got := ns.JetStreamConfig()
		ns.Shutdown()
		ns.WaitForShutdown()
		if got.SyncAlways != c.always || got.SyncInterval != c.interval {
			t.Errorf("%s: sync always %v every %s, want %v every %s", c.in, got.SyncAlways, got.SyncInterval, c.always, c.interval)
		}
	}
}

// A queen given NATS identities, or no longer given them, keeps what its
// server stored: JetStream keeps each account's data apart, and the
// queens' account differs from the global one.
func TestDataFollowsTheQueensAccount(t *testing.T) {
	dir := t.TempDir()
	f, err := natsauth.Generate([]string{"h1"})
	if err != nil {
		t.Fatal(err)
	}
	for i, auth := range []*natsauth.File{nil, &f, &f, nil} {
		s, err := embedded.Start(dir, embedded.Options{Auth: auth})
		if err != nil {
			t.Fatal(err)
		}
		var opts []nats.Option
		if auth != nil {
			opts = append(opts, nats.UserInfo(natsauth.QueenUser, auth.QueenPassword))
		}
		nc, err := nats.Connect("", append(opts, nats.InProcessServer(s))...)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if i == 0 {
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, "keep", []byte("stored")); err != nil {
				t.Fatal(err)
			}
		}
		str, err := js.Stream(ctx, "KEEP")
		var m *jetstream.RawStreamMsg
		if err == nil {
			m, err = str.GetMsg(ctx, 1)
		}
		if err != nil || string(m.Data) != "stored" {
			t.Errorf("start %d (identities %v): the stored message: %v", i+1, auth != nil, err)
		}
		cancel()
		nc.Close()
		s.Shutdown()
		s.WaitForShutdown()
	}
}
