package app_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"rbee.dev/queen/internal/app"
	"rbee.dev/queen/internal/natsauth"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

// queenProcessOut runs the queen binary with args on a random HTTP port and
// returns its base URL, the NATS URL it prints for hives (if it listens)
// and everything it wrote.
func queenProcessOut(t testing.TB, args ...string) (base, natsURL string, out *testkit.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(queenBin, append([]string{"--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--hive-ttl", "2s"}, args...)...)
	out = &testkit.SyncBuffer{}
	cmd.Stderr = out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("queen output:\n%s", out.String())
		}
	})
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			_, _ = out.Write([]byte(sc.Text() + "\n"))
			lines <- sc.Text()
		}
	}()
	timeout := time.After(30 * time.Second)
	for base == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("queen exited: %s", out.String())
			}
			if u, ok := strings.CutPrefix(l, "nats for hives at "); ok {
				natsURL = u
			}
			if u, ok := strings.CutPrefix(l, "queen listening on "); ok {
				base = u
			}
		case <-timeout:
			t.Fatalf("queen did not start: %s", out.String())
		}
	}
	// The NATS line comes after the HTTP one.
	if strings.Contains(strings.Join(args, " "), "--nats-listen") {
		select {
		case l := <-lines:
			natsURL, _ = strings.CutPrefix(l, "nats for hives at ")
		case <-timeout:
			t.Fatal("queen printed no NATS address")
		}
	}
	go func() {
		for range lines {
		}
	}()
	return base, natsURL, out
}

func writeSecret(t testing.TB, name, secret string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Secrets come from files: the queen's admin key and a hive's NATS
// password, so neither has to be on a command line.
func TestSecretsFromFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs queen and hive processes")
	}
	authFile := filepath.Join(t.TempDir(), "nats-auth.json")
	if err := app.Run(context.Background(), []string{"nats-config", "--hives", "gpu1", "--out", authFile}, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := natsauth.Load(authFile)
	if err != nil {
		t.Fatal(err)
	}
	base, natsURL, _ := queenProcessOut(t, "--admin-key-file", writeSecret(t, "admin-key", testAdminKey),
		"--nats-listen", "127.0.0.1:0", "--nats-auth", authFile)
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	if code := doHeaders(t, "GET", base+"/v1/jobs", nil, nil, nil); code != 401 {
		t.Fatalf("without the key: %d", code)
	}
	if code := doHeaders(t, "GET", base+"/v1/jobs", nil, admin, nil); code != 200 {
		t.Fatalf("with the key from the file: %d", code)
	}
	hiveProcess(t, base, natsURL, "gpu1", "--nats-user", "gpu1", "--nats-password-file", writeSecret(t, "gpu1.pass", f.Hives["gpu1"]))
	var created api.CreateJobResponse
	if code := doHeaders(t, "POST", base+"/v1/jobs", api.JobRequest{Operation: api.OpHiveCheck, Hive: "gpu1", Payload: &api.HiveCheck{Events: intp(3)}}, admin, &created); code != 201 {
		t.Fatalf("submit: %d", code)
	}
	waitFor(t, 10*time.Second, func() bool {
		var j api.Job
		return doHeaders(t, "GET", base+"/v1/jobs/"+created.JobID, nil, admin, &j) == 200 && j.State == api.StateDone
	})

	// A wrong password from a file keeps the hive out, and says why.
	bad := exec.Command(hiveBin, "--id", "gpu1", "--nats-user", "gpu1", "--nats-password-file", writeSecret(t, "bad.pass", "wrong"),
		"--nats-url", natsURL, "--data-dir", t.TempDir())
	var stderr bytes.Buffer
	bad.Stderr = &stderr
	_ = bad.Start()
	time.Sleep(time.Second)
	_ = bad.Process.Kill()
	_ = bad.Wait()
	if !strings.Contains(stderr.String(), "uthorization") {
		t.Fatalf("wrong password: hive said %q", stderr.String())
	}
}

// A NATS URL's password never reaches a log: not when the connection is
// made, not when it comes back after the server restarted.
func TestNATSPasswordNotLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS under queen and hive processes")
	}
	const password = "s3cret-pass"
	opts := &server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true,
		Username: "rbee", Password: password}
	ns, start := restartableNATS(t, opts)
	url := "nats://rbee:" + password + "@" + ns.Addr().String()

	base, _, queenOut := queenProcessOut(t, "--nats-url", url)
	hive := exec.Command(hiveBin, "--id", "h1", "--nats-url", url, "--data-dir", t.TempDir())
	var hiveOut testkit.SyncBuffer
	hive.Stderr = &hiveOut
	if err := hive.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hive.Process.Kill(); _ = hive.Wait() })
	waitHive(t, base, "h1")

	ns.Shutdown()
	ns.WaitForShutdown()
	ns = start()
	waitFor(t, 20*time.Second, func() bool {
		return strings.Contains(queenOut.String(), "nats reconnected") && strings.Contains(hiveOut.String(), "nats reconnected")
	})
	for name, out := range map[string]string{"queen": queenOut.String(), "hive": hiveOut.String()} {
		if strings.Contains(out, password) {
			t.Errorf("%s logged the NATS password:\n%s", name, out)
		}
	}
}
