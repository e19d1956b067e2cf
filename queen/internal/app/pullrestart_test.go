package app_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"rbee.dev/shared/api"
)

// A hive's pull request waits long (30 s). After the NATS server restarts
// under it, a job sent to the hive still runs. (Here the hive pulls again at reconnect,
// pullGate.follow; this nats-server also recovered without that in a run
// of this test, so the test guards the outcome, not the mechanism.)
func TestPullAfterNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS")
	}
	ns, start := restartableNATS(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true})
	base, _ := mustQueen(t, ns.ClientURL())
	mustHive(t, base, ns.ClientURL(), "h1")
	// Let the hive's pull loops settle into one long request.
	time.Sleep(time.Second)

	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start()
	restarted := time.Now()
	// The restarted server recovers its streams first; on a loaded
	// machine that takes a while. The hive is back once it beats again.
	waitFor(t, time.Minute, func() bool {
		var h api.Hive
		return doQuiet(base+"/v1/hives/h1", nil, &h) == 200 && h.HeartbeatAt.After(restarted)
	})

	began := time.Now()
	id := submit(t, base, api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(1)}})
	var j api.Job
	waitFor(t, time.Minute, func() bool {
		return doQuiet(base+"/v1/jobs/"+id, nil, &j) == 200 && api.Terminal(j.State)
	})
	if j.State != api.StateDone {
		t.Fatalf("job ended %s: %q", j.State, j.Error)
	}
	// How soon is for the benchmarks to say; this test asks that it runs
	// at all, well inside the 30 s the stale pull request would hold it.
	t.Logf("job done %s after the hive beat again", time.Since(began).Round(time.Millisecond))
}
