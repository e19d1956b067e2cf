package app_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"rbee.dev/queen/internal/app"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// rawRequest sends a request with exactly the given headers ("Host" sets
// the Host header) and returns the status.
func rawRequest(t testing.TB, method, url, body string, hdr map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The default single-machine queen (a local hive that may run commands, no
// keys) cannot be driven by a web page on another site, by a simple
// cross-site request or by DNS rebinding, while its own web UI, the CLI and
// curl keep working.
func TestBrowsersCannotDriveTheQueen(t *testing.T) {
	base, _ := mustQueen(t, "", func(c *app.Config) {
		c.LocalHive, c.LocalHiveAllowRun = true, true
		c.PublicHosts = []string{"rbee.lan"}
	})
	waitHive(t, base, "local")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	pwned := filepath.Join(t.TempDir(), "pwned")
	attack := `{"operation":"run","hive":"local","command":["sh","-c","echo pwned > ` + pwned + `"]}`
	job := `{"operation":"status"}`

	cases := []struct {
		name   string
		method string
		body   string
		hdr    map[string]string
		want   int
	}{
		// The review's reproduction, and its variants.
		{"text/plain from evil.example", "POST", attack, map[string]string{"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403},
		{"text/plain without Origin", "POST", attack, map[string]string{"Content-Type": "text/plain"}, 415},
		{"form post", "POST", attack, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"}, 403},
		{"no content type", "POST", attack, nil, 415},
		{"JSON from evil.example", "POST", attack, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403},
		{"same-site page on another port", "POST", attack, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, 403},
		{"rebound name", "POST", attack, map[string]string{"Content-Type": "application/json", "Host": "attacker.example:" + port}, 421},
		{"rebound name, same origin", "POST", attack, map[string]string{"Content-Type": "application/json", "Host": "attacker.example:" + port, "Origin": "http://attacker.example:" + port}, 421},

		// What must keep working.
		{"curl", "POST", job, map[string]string{"Content-Type": "application/json"}, 201},
		{"JSON with charset", "POST", job, map[string]string{"Content-Type": "application/json; charset=utf-8"}, 201},
		{"the web UI, same origin", "POST", job, map[string]string{"Content-Type": "application/json", "Origin": base, "Sec-Fetch-Site": "same-origin"}, 201},
		{"the web UI by localhost", "POST", job, map[string]string{"Content-Type": "application/json", "Host": "localhost:" + port, "Origin": "http://localhost:" + port}, 201},
		{"a public host", "GET", "", map[string]string{"Host": "rbee.lan:" + port, "Origin": "http://rbee.lan:" + port}, 200},
		{"a public host, any case", "GET", "", map[string]string{"Host": "RBEE.lan:" + port}, 200},
		{"an IPv6 literal", "GET", "", map[string]string{"Host": "[::1]:" + port}, 200},
		{"a link to the UI from another site", "GET", "", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 200},
		{"a bodiless DELETE", "DELETE", "", nil, 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := base + "/v1/jobs"
			switch {
			case tc.method == "DELETE":
				url += "/nope"
			case tc.name == "a link to the UI from another site":
				url = base + "/ui/"
			}
			if got := rawRequest(t, tc.method, url, tc.body, tc.hdr); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
	// Give a wrongly accepted job time to run before looking for its trace.
	time.Sleep(500 * time.Millisecond)
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("a cross-site request ran a command on the local hive")
	}
	var list api.JobList
	do(t, "GET", base+"/v1/jobs?operation=run", nil, &list)
	if len(list.Jobs) != 0 {
		t.Fatalf("refused requests created %d run jobs", len(list.Jobs))
	}
}

// Whether keys are required is settled from configuration when the queen
// starts: revoking the last key, or purging the keys bucket behind the
// queens' backs, leaves a keyed queen refusing requests.
func TestAuthNeverFailsOpen(t *testing.T) {
	ns := mustNATS(t)
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	a, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	var k api.Key
	if code := doHeaders(t, "POST", a+"/v1/keys", api.KeyRequest{Name: "ci", Scopes: []string{"read"}}, admin, &k); code != 201 {
		t.Fatalf("create key: %d", code)
	}
	// b listens beyond loopback with no admin key of its own: the stored
	// key is the only way in.
	b, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.HTTPAddr = "0.0.0.0:0" })
	b = strings.Replace(b, "0.0.0.0", "127.0.0.1", 1)
	// c is on loopback and asked for keys.
	c, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.RequireKeys = true })
	reader := map[string]string{"Authorization": "Bearer " + k.Key}
	for _, q := range []string{b, c} {
		if code := doHeaders(t, "GET", q+"/v1/jobs", nil, nil, nil); code != 401 {
			t.Fatalf("%s without a key: %d", q, code)
		}
		if code := doHeaders(t, "GET", q+"/v1/jobs", nil, reader, nil); code != 200 {
			t.Fatalf("%s with the key: %d", q, code)
		}
	}

	if code := doHeaders(t, "DELETE", a+"/v1/keys/"+k.ID, nil, admin, nil); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	waitFor(t, 5*time.Second, func() bool { return doHeaders(t, "GET", b+"/v1/jobs", nil, reader, nil) == 401 })
	// Purge the whole bucket too, as someone with NATS access could.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := js.DeleteKeyValue(context.Background(), bus.KeysBucket); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, q := range []string{a, b, c} {
		for _, path := range []string{"/v1/jobs", "/v1/hives", "/v1/keys"} {
			if code := doHeaders(t, "GET", q+path, nil, nil, nil); code != 401 {
				t.Errorf("%s%s without a key after the keys were purged: %d", q, path, code)
			}
		}
	}
	if code := doHeaders(t, "GET", a+"/v1/keys", nil, admin, nil); code == 401 {
		t.Errorf("the configured admin key stopped working")
	}

	// A queen that needs keys and can never have one will not start.
	cfg := app.DefaultConfig()
	cfg.HTTPAddr, cfg.DataDir, cfg.RequireKeys = "127.0.0.1:0", t.TempDir(), true
	if q, err := app.Start(context.Background(), cfg, testLogger(t)); err == nil {
		q.Close()
		t.Fatal("a queen that requires keys started with none")
	} else if !strings.Contains(err.Error(), "--admin-key") {
		t.Fatalf("error does not say how to proceed: %v", err)
	}
}

// The HTTP server cuts off a client that trickles its request, while live
// SSE streams, kept busy by heartbeats, outlast the same deadlines.
func TestHTTPTimeoutsSpareStreams(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.HTTPTimeout = time.Second })
	mustHive(t, base, ns.ClientURL(), "h1", allowRun)

	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			break
		}
	}
	if held := time.Since(start); held > 5*time.Second {
		t.Fatalf("a client that stalled mid-body held its connection for %s", held)
	}

	job := submit(t, base, api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"sh", "-c", "sleep 3; echo late"}}})
	frames, done, comments := sse(t, context.Background(), base, job, 0, 0)
	if end := checkComplete(t, frames, done); end.State != api.StateDone {
		t.Fatalf("a stream longer than the HTTP timeout ended %+v", end)
	}
	if comments == 0 {
		t.Fatal("no heartbeats on a quiet stream")
	}
}

// Keys without the admin scope see their own job records with the secrets
// a request may carry blanked out (a source URL's credentials and query)
// and never see another key's jobs, such as an admin's run with its
// environment. Admins see every record whole.
func TestRecordsRedactSecretsForNonAdmins(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })
	mustHive(t, base, ns.ClientURL(), "h1", allowRun)
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	var k api.Key
	if code := doHeaders(t, "POST", base+"/v1/keys", api.KeyRequest{Name: "dash", Scopes: []string{"read", "operate"}}, admin, &k); code != 201 {
		t.Fatalf("create key: %d", code)
	}
	reader := map[string]string{"Authorization": "Bearer " + k.Key}
	var run, dl api.CreateJobResponse
	doHeaders(t, "POST", base+"/v1/jobs", api.JobRequest{Operation: api.OpRun, Hive: "h1", Payload: &api.Run{Command: []string{"true"}, Env: map[string]string{"HF_TOKEN": "hf_s3cretvalue"}}}, admin, &run)
	doHeaders(t, "POST", base+"/v1/jobs", api.JobRequest{Operation: api.OpModelDownload, Hive: "h1", Payload: &api.ModelDownload{ModelID: "m1", Source: "http://alice:pa55word@127.0.0.1:1/m.gguf?X-Amz-Signature=sig0123"}}, reader, &dl)
	if run.JobID == "" || dl.JobID == "" {
		t.Fatalf("jobs not created: %+v %+v", run, dl)
	}
	secrets := []string{"hf_s3cretvalue", "pa55word", "sig0123", "alice"}
	read := func(hdr map[string]string, path string) string {
		req, _ := http.NewRequest("GET", base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		if resp.StatusCode != 200 && resp.StatusCode != 404 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return b.String()
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(read(admin, "/v1/jobs"), dl.JobID) })
	for _, path := range []string{"/v1/jobs", "/v1/jobs/" + run.JobID, "/v1/jobs/" + dl.JobID} {
		body := read(reader, path)
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("a read key sees %q in %s: %.300s", s, path, body)
			}
		}
	}
	if list := read(reader, "/v1/jobs"); !strings.Contains(list, "127.0.0.1:1/m.gguf") || strings.Contains(list, run.JobID) {
		t.Errorf("a read key should see its own download, its host still visible, and not the admin's run: %.300s", list)
	}
	for _, id := range []string{run.JobID, dl.JobID} {
		if body := read(admin, "/v1/jobs/"+id); !strings.Contains(body, "pa55word") && !strings.Contains(body, "hf_s3cretvalue") {
			t.Errorf("the admin should see the record whole: %.300s", body)
		}
	}
}
