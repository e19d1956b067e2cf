package app_test

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"rbee.dev/shared/testkit"
)

// queenProcess runs the queen binary and returns its base URL.
func queenProcess(t testing.TB, natsURL string, args ...string) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(queenBin, append([]string{"--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--nats-url", natsURL, "--hive-ttl", "2s", "--sse-heartbeat", "200ms"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logTo(t, cmd, "queen")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "queen listening on ")
	if err != nil || !ok {
		t.Fatalf("queen said %q: %v", line, err)
	}
	waitFor(t, 10*time.Second, func() bool { return status(t, base+"/readyz") == 200 })
	return base, cmd
}

// natsCluster runs three nats-server processes clustered with JetStream
// and returns their client URLs and processes.
func natsCluster(t testing.TB) ([]string, []*exec.Cmd) {
	t.Helper()
	ports := testkit.FreePorts(t, 6)
	var urls, routes []string
	for i := 0; i < 3; i++ {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3+i]))
	}
	var cmds []*exec.Cmd
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		cmd := exec.Command(natsBin, "-js", "-sd", filepath.Join(dir, "js"), "-a", "127.0.0.1", "-p", fmt.Sprint(ports[i]),
			"-n", fmt.Sprintf("n%d", i+1), "--cluster_name", "rbee", "--cluster", routes[i], "--routes", strings.Join(routes, ","))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		cmds = append(cmds, cmd)
	}
	// Ready once JetStream answers with a meta leader.
	waitFor(t, 30*time.Second, func() bool {
		nc, err := nats.Connect(strings.Join(urls, ","))
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := contextTimeout(2 * time.Second)
		defer cancel()
		_, err = js.AccountInfo(ctx)
		return err == nil
	})
	return urls, cmds
}
