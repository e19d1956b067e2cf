package bench

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHivesAgainstExistingCluster runs the hives scenario as an operator
// would against a cluster the bench did not start (-queen, -nats, -token):
// its simulated hives join that cluster, are listed, take jobs placed by
// its queen, and the queen is measured through its /metrics.
func TestHivesAgainstExistingCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	t.Setenv("RBEE_TOKEN", "")
	// -bin needs only the hive: the queen is the cluster's.
	bin, queenBin := t.TempDir(), t.TempDir()
	for dir, pkg := range map[string]string{bin: "rbee.dev/hive/cmd/hive", queenBin: "rbee.dev/queen/cmd/queen"} {
		if out, err := exec.Command("go", "build", "-o", dir+"/", pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The cluster is not the bench's child: started here, the bench
	// neither stops it nor measures it as its own.
	const key = "bench-existing-admin-key-0123456789"
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	url, natsAddr := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	queen := exec.Command(queenBin+"/queen", "--http-addr", strings.TrimPrefix(url, "http://"), "--data-dir", t.TempDir(),
		"--nats-listen", natsAddr, "--insecure", "--admin-key", key)
	var queenLog bytes.Buffer
	queen.Stdout, queen.Stderr = &queenLog, &queenLog
	if err := queen.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- queen.Wait() }()
	defer func() {
		_ = queen.Process.Kill()
		<-exited
	}()
	if err := waitOK(ctx, url+"/readyz", "", &Proc{Name: "queen", exited: make(chan struct{})}, time.Minute); err != nil {
		t.Fatal(err)
	}
	alive := func() {
		t.Helper()
		select {
		case err := <-exited:
			t.Fatalf("the cluster's queen exited: %v\n%s", err, queenLog.String())
		default:
		}
	}

	run := func(args ...string) (int, string, string) {
		var out, errs bytes.Buffer
		code := Main(ctx, append([]string{"-bin", bin, "-queen", url, "-nats", "nats://" + natsAddr, "-runs", "1",
			"-hives", "20", "-hive-jobs", "200", "-hive-work", "1ms", "-settle", "0s", "-idle-for", "1s", "-quiet-wait", "0s"}, args...), &out, &errs)
		return code, out.String(), errs.String()
	}
	code, report, log := run("-token", key)
	if code != ExitOK {
		t.Fatalf("exit %d\n%s\n%s", code, log, report)
	}
	for _, want := range []string{"Against the cluster at " + url, "all hives listed by GET /v1/hives", "idle: queen and its NATS", "jobs/s across the hives", "lost | **0"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "run 1:") {
		t.Errorf("the run failed:\n%s", report)
	}
	alive()

	// A queen that requires keys refuses the bench without one.
	if code, report, log := run(); code == ExitOK || !strings.Contains(report, "401 Unauthorized") {
		t.Errorf("without -token: exit %d\n%s\n%s", code, log, report)
	}
	// Scenarios that start their own cluster do not run against one.
	if code, _, log := run("-token", key, "-scenarios", "hives,roundtrip"); code != ExitUsage || !strings.Contains(log, "roundtrip starts its own cluster") {
		t.Errorf("-scenarios hives,roundtrip against a cluster: exit %d\n%s", code, log)
	}
	alive()
}
