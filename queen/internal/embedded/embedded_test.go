package embedded_test

import (
	"testing"
	"time"

	"rbee.dev/queen/internal/embedded"
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
