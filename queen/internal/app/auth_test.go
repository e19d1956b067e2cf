package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"rbee.dev/queen/internal/app"
	"rbee.dev/queen/internal/natsauth"
	"rbee.dev/shared/api"
)

// Keys are shared by every queen, scopes are enforced per route and per
// operation, and secrets are shown once.
func TestAPIKeys(t *testing.T) {
	ns := mustNATS(t)
	withAdmin := func(c *app.Config) { c.AdminKey = testAdminKey }
	a, _ := mustQueen(t, ns.ClientURL(), withAdmin)
	b, _ := mustQueen(t, ns.ClientURL(), withAdmin)
	mustHive(t, a, ns.ClientURL(), "h1", allowRun)
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}

	if code := doHeaders(t, "GET", a+"/v1/jobs", nil, nil, nil); code != 401 {
		t.Fatalf("no key: %d", code)
	}
	if code := doHeaders(t, "GET", a+"/v1/jobs", nil, map[string]string{"Authorization": "Bearer rbee_000000000000_" + strings.Repeat("x", 43)}, nil); code != 401 {
		t.Fatalf("forged key: %d", code)
	}
	for _, open := range []string{"/healthz", "/readyz", "/metrics"} {
		if code := doHeaders(t, "GET", a+open, nil, nil, nil); code != 200 {
			t.Fatalf("%s: %d", open, code)
		}
	}
	mk := func(name string, scopes ...string) api.Key {
		var k api.Key
		if code := doHeaders(t, "POST", a+"/v1/keys", api.KeyRequest{Name: name, Scopes: scopes}, admin, &k); code != 201 || k.Key == "" {
			t.Fatalf("create key: %d %+v", code, k)
		}
		return k
	}
	// operate holds read (SECURITY.md): the operator's key names operate only.
	reader, operator := mk("dash", "read"), mk("ops", "operate")
	bearer := func(k api.Key) map[string]string { return map[string]string{"Authorization": "Bearer " + k.Key} }
	// Queen b learns of keys made on a through its watch of the bucket.
	waitFor(t, 10*time.Second, func() bool {
		return doHeaders(t, "GET", b+"/v1/hives", nil, bearer(reader), nil) == 200 &&
			doHeaders(t, "GET", b+"/v1/hives", nil, bearer(operator), nil) == 200
	})

	check := api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(1)}}
	run := api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"true"}}}
	cases := []struct {
		name, base, method, path string
		body                     any
		hdr                      map[string]string
		want                     int
	}{
		{"reader lists jobs on the other queen", b, "GET", "/v1/jobs", nil, bearer(reader), 200},
		{"reader lists hives", a, "GET", "/v1/hives", nil, bearer(reader), 200},
		{"the scheme in lower case", a, "GET", "/v1/hives", nil, map[string]string{"Authorization": "bearer " + reader.Key}, 200},
		{"reader cannot submit hive_check", a, "POST", "/v1/jobs", check, bearer(reader), 403},
		{"reader may ask status", a, "POST", "/v1/jobs", api.JobRequest{Operation: api.OpStatus}, bearer(reader), 201},
		{"operator submits hive_check", b, "POST", "/v1/jobs", check, bearer(operator), 201},
		{"operator lists jobs", b, "GET", "/v1/jobs", nil, bearer(operator), 200},
		{"operator may ask model_list", a, "POST", "/v1/jobs", api.JobRequest{Operation: api.OpModelList, Hive: "h1"}, bearer(operator), 201},
		{"operator cannot run commands", a, "POST", "/v1/jobs", run, bearer(operator), 403},
		{"operator cannot list keys", a, "GET", "/v1/keys", nil, bearer(operator), 403},
		{"admin runs commands", a, "POST", "/v1/jobs", run, admin, 201},
		// A key named twice is read one way by whatever checks the body in
		// front of the queen and another by the queen: refused, not last-wins.
		{"scopes named twice", a, "POST", "/v1/keys", json.RawMessage(`{"name":"i","scopes":["infer"],"scopes":["admin"]}`), admin, 400},
		{"operation named twice", a, "POST", "/v1/jobs", json.RawMessage(`{"operation":"status","Operation":"run","command":["true"],"hive":"h1"}`), admin, 400},
	}
	for _, tc := range cases {
		if code := doHeaders(t, tc.method, tc.base+tc.path, tc.body, tc.hdr, nil); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}

	var list api.KeyList
	doHeaders(t, "GET", b+"/v1/keys", nil, admin, &list)
	if len(list.Keys) != 2 {
		t.Fatalf("keys: %+v", list)
	}
	for _, k := range list.Keys {
		if k.Key != "" {
			t.Fatalf("list shows a secret: %+v", k)
		}
	}
	if code := doHeaders(t, "DELETE", a+"/v1/keys/"+reader.ID, nil, admin, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	waitFor(t, 5*time.Second, func() bool {
		return doHeaders(t, "GET", b+"/v1/jobs", nil, bearer(reader), nil) == 401
	})
}

// Without keys the queen will not listen beyond loopback unless told to.
func TestRefusesOpenNetworkWithoutKeys(t *testing.T) {
	cfg := app.DefaultConfig()
	cfg.HTTPAddr, cfg.DataDir = "0.0.0.0:0", t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if q, err := app.Start(context.Background(), cfg, log); err == nil {
		q.Close()
		t.Fatal("queen listened on every interface without keys")
	} else if !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("error does not say how to proceed: %v", err)
	}
	cfg.Insecure = true
	cfg.DataDir = t.TempDir()
	q, err := app.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
}

// A hive process with its own NATS identity runs jobs; one with a wrong
// password never joins.
func TestHiveWithNATSCredentials(t *testing.T) {
	dir := t.TempDir()
	authFile := dir + "/nats-auth.json"
	var out bytes.Buffer
	if err := app.Run(context.Background(), []string{"nats-config", "--hives", "gpu1", "--out", authFile}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := natsauth.Load(authFile)
	if err != nil {
		t.Fatal(err)
	}
	base, q := mustQueen(t, "", func(c *app.Config) { c.NATSAuth, c.NATSListen = authFile, "127.0.0.1:0" })
	hiveProcess(t, base, q.NATSURL(), "gpu1", "--nats-user", "gpu1", "--nats-password", f.Hives["gpu1"], "--allow-run")
	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "gpu1", Payload: &api.Run{Command: []string{"echo", "hello"}}})
	frames, done, _ := sse(t, context.Background(), base, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateDone {
		t.Fatalf("end %+v", end)
	}
	// Cancel reaches the hive through its control subject.
	long := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "gpu1", Payload: &api.Run{Command: []string{"sleep", "30"}}})
	sse(t, context.Background(), base, long, 0, 3)
	do(t, "DELETE", base+"/v1/jobs/"+long, nil, nil)
	frames, done, _ = sse(t, context.Background(), base, long, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateCancelled || end.Actor != "hive" {
		t.Fatalf("cancel end %+v", end)
	}

	bad := exec.Command(hiveBin, "--id", "gpu1", "--nats-user", "gpu1", "--nats-password", "wrong", "--nats-url", q.NATSURL(), "--data-dir", t.TempDir())
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

// The embedded NATS server listens only with per-hive identities, and
// beyond loopback only with TLS as well, unless told --insecure: an open
// listener, even on loopback, lets anyone who reaches it write the keys
// bucket and so become admin.
func TestRefusesOpenNATSWithoutIdentities(t *testing.T) {
	tls := []string{"--nats-cert", "cert.pem", "--nats-key", "key.pem"}
	auth := []string{"--nats-auth", "nats-auth.json"}
	for _, tt := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"no listener", nil, true},
		{"no listener, auth", auth, true},
		{"everywhere, open", []string{"--nats-listen", "0.0.0.0:4222"}, false},
		{"empty host, open", []string{"--nats-listen", ":4222"}, false},
		{"everywhere, insecure", []string{"--nats-listen", "0.0.0.0:4222", "--insecure"}, true},
		{"everywhere, auth without tls", append([]string{"--nats-listen", "0.0.0.0:4222"}, auth...), false},
		{"everywhere, tls without auth", append([]string{"--nats-listen", "0.0.0.0:4222"}, tls...), false},
		{"everywhere, auth and tls", append(append([]string{"--nats-listen", "0.0.0.0:4222"}, auth...), tls...), true},
		{"ipv6 everywhere, auth", append([]string{"--nats-listen", "[::]:4222"}, auth...), false},
		{"loopback, open", []string{"--nats-listen", "127.0.0.1:4222"}, false},
		{"localhost, open", []string{"--nats-listen", "localhost:4222"}, false},
		{"ipv6 loopback, open", []string{"--nats-listen", "[::1]:4222"}, false},
		{"loopback, insecure", []string{"--nats-listen", "127.0.0.1:4222", "--insecure"}, true},
		{"loopback, auth", append([]string{"--nats-listen", "127.0.0.1:4222"}, auth...), true},
		{"localhost, auth and tls", append(append([]string{"--nats-listen", "localhost:4222"}, auth...), tls...), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := app.ParseConfig(tt.args, func(string) string { return "" }, io.Discard)
			if (err == nil) != tt.ok {
				t.Fatalf("%v: %v", tt.args, err)
			}
			if err != nil && !(strings.Contains(err.Error(), "--nats-auth") && strings.Contains(err.Error(), "--insecure")) {
				t.Fatalf("error does not say how to proceed: %v", err)
			}
		})
	}
	// The environment twin counts as the flag.
	env := map[string]string{"QUEEN_NATS_LISTEN": "127.0.0.1:4222"}
	if _, err := app.ParseConfig(nil, func(k string) string { return env[k] }, io.Discard); err == nil {
		t.Fatal("QUEEN_NATS_LISTEN on loopback without identities was accepted")
	}
}
