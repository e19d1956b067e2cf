package daemon_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"rbee.dev/hive/internal/daemon"
)

// Simulator flags that would be ignored or misread are refused before the
// hive connects anywhere.
func TestSimulateFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--simulate", "-3"}, "simulate: -3 hives"},
		{[]string{"--simulate-work", "5ms"}, "only with --simulate"},
		{[]string{"--simulate", "2", "--simulate-work", "-1s"}, "must be positive"},
		{[]string{"--simulate", "2", "--simulate-work", "0s"}, "must be positive"},
	} {
		args := append([]string{"--id", "t", "--nats-url", "nats://127.0.0.1:1", "--data-dir", t.TempDir()}, tc.args...)
		err := daemon.Run(context.Background(), args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}
