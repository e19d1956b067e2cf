package app_test

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"rbee.dev/shared/api"
)

// A hive's pull request waits long (30 s). After the NATS server restarts
// under it, a job sent to the hive still starts in seconds, not when that
// request would have run out. (Here the hive pulls again at reconnect,
// pullGate.follow; this nats-server also recovered without that in a run
// of this test, so the test guards the outcome, not the mechanism.)
func TestPullAfterNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS")
	}
	opts := &server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true}
	start := func() *server.Server {
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats not ready")
		}
		return s
	}
	ns := start()
	opts.Port = ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	// Let the hive's pull loops settle into one long request.
	time.Sleep(time.Second)

	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start()
	waitHive(t, base, "h1")

	began := time.Now()
	id := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(1)}})
	var j api.Job
	waitFor(t, 15*time.Second, func() bool {
		return doQuiet(base+"/v1/jobs/"+id, nil, &j) == 200 && api.Terminal(j.State)
	})
	if j.State != api.StateDone {
		t.Fatalf("job ended %s: %q", j.State, j.Error)
	}
	if took := time.Since(began); took > 8*time.Second {
		t.Errorf("the job took %s after the restart", took)
	} else {
		t.Logf("job done %s after the restart", took.Round(time.Millisecond))
	}
}
