package deploycheck_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The compose cluster's NATS servers state when they force writes to disk
// rather than inheriting nats-server's two minutes, and the file is one
// nats-server itself accepts.
func TestNATSConfigSyncsEverySecond(t *testing.T) {
	t.Setenv("NATS_SERVER_NAME", "n1")
	o, err := server.ProcessConfigFile(deployPath("nats", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if o.SyncAlways || o.SyncInterval != time.Second {
		t.Fatalf("sync always %v every %s, want every 1s", o.SyncAlways, o.SyncInterval)
	}
}
