package embedded_test

import (
	"testing"

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
