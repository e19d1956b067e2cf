package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"testing"

	"rbee.dev/hive/agent"
	"rbee.dev/queen/internal/app"
	"rbee.dev/queen/internal/cli"
	"rbee.dev/shared/api"
)

// A key without admin sees, streams and cancels only the jobs it created;
// another's job answers 404 as if it did not exist. Admin sees every job.
func TestJobOwnership(t *testing.T) {
	ns := mustNATS(t)
	withAdmin := func(c *app.Config) { c.AdminKey = testAdminKey }
	a, _ := mustQueen(t, ns.ClientURL(), withAdmin)
	b, _ := mustQueen(t, ns.ClientURL(), withAdmin)
	mustHive(t, a, ns.ClientURL(), "h1")
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	mk := func(name string, scopes ...string) map[string]string {
		var k api.Key
		if code := doHeaders(t, "POST", a+"/v1/keys", api.KeyRequest{Name: name, Scopes: scopes}, admin, &k); code != 201 {
			t.Fatalf("create key: %d", code)
		}
		hdr := map[string]string{"Authorization": "Bearer " + k.Key}
		// Queen b learns of the keys a made from NATS, a moment later.
		waitFor(t, 5*time.Second, func() bool { return doHeaders(t, "GET", b+"/v1/jobs", nil, hdr, nil) != 401 })
		return hdr
	}
	alice, bob := mk("alice", "read", "operate"), mk("bob", "read", "operate")

	var created api.CreateJobResponse
	if code := doHeaders(t, "POST", a+"/v1/jobs", api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: intp(1)}}, alice, &created); code != 201 {
		t.Fatalf("alice submits: %d", code)
	}
	id := created.JobID
	var j api.Job
	if code := doHeaders(t, "GET", b+"/v1/jobs/"+id, nil, alice, &j); code != 200 || j.OwnerName != "alice" || j.Owner == "" {
		t.Fatalf("alice reads her job: %d %+v", code, j)
	}
	listed := func(base string, hdr map[string]string) bool {
		var list api.JobList
		if code := doHeaders(t, "GET", base+"/v1/jobs", nil, hdr, &list); code != 200 {
			t.Fatalf("list: %d", code)
		}
		for _, j := range list.Jobs {
			if j.JobID == id {
				return true
			}
		}
		return false
	}
	waitFor(t, 5*time.Second, func() bool { return listed(b, alice) && listed(b, admin) })
	if listed(a, bob) || listed(b, bob) {
		t.Fatal("bob lists alice's job")
	}
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/jobs/" + id},
		{"GET", "/v1/jobs/" + id + "/stream"},
		{"DELETE", "/v1/jobs/" + id},
	} {
		var e api.ErrorBody
		if code := doHeaders(t, tc.method, b+tc.path, nil, bob, &e); code != 404 || e.Error.Code != api.CodeNotFound {
			t.Errorf("bob %s %s: %d %+v, want 404 not_found", tc.method, tc.path, code, e)
		}
	}
	// A key with infer alone may cancel, its own jobs only; one with read
	// alone may not cancel at all.
	var e api.ErrorBody
	if code := doHeaders(t, "DELETE", b+"/v1/jobs/"+id, nil, mk("carol", "infer"), &e); code != 404 || e.Error.Code != api.CodeNotFound {
		t.Errorf("an infer key cancels alice's job: %d %+v, want 404", code, e)
	}
	if code := doHeaders(t, "DELETE", b+"/v1/jobs/"+id, nil, mk("dave", "read"), &e); code != 403 || e.Error.Code != api.CodeForbidden {
		t.Errorf("a read key cancels: %d %+v, want 403", code, e)
	}
	if code := doHeaders(t, "GET", a+"/v1/jobs/"+id, nil, admin, nil); code != 200 {
		t.Fatalf("admin reads: %d", code)
	}
	if code := doHeaders(t, "DELETE", a+"/v1/jobs/"+id, nil, admin, nil); code == 404 || code == 403 {
		t.Fatalf("admin cancels: %d", code)
	}
}

// Every inference adds the worker's exact token counts to the usage
// ledger once: every queen reports the same sums, also after one of them
// was killed and restarted, and another key sees none of it.
func TestUsageLedger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts workers")
	}
	ns := mustNATS(t)
	a, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) {
		c.AdminKey, c.Infer.Aliases = testAdminKey, map[string]string{"gpt-4o-mini": "demo"}
	})
	b, bcmd := queenProcess(t, ns.ClientURL(), "--admin-key", testAdminKey)
	admin := map[string]string{"Authorization": "Bearer " + testAdminKey}
	mustHive(t, a, ns.ClientURL(), "h1", func(c *agent.Config) { c.Slots = 3 })
	var created api.CreateJobResponse
	if code := doHeaders(t, "POST", a+"/v1/jobs", api.JobRequest{Operation: api.OpModelDownload, Hive: "h1", Payload: &api.ModelDownload{Source: demoSource(t)}}, admin, &created); code != 201 {
		t.Fatalf("download: %d", code)
	}
	waitFor(t, 30*time.Second, func() bool {
		var j api.Job
		doHeaders(t, "GET", a+"/v1/jobs/"+created.JobID, nil, admin, &j)
		return j.State == api.StateDone
	})
	mk := func(name string) (api.Key, map[string]string) {
		var k api.Key
		if code := doHeaders(t, "POST", a+"/v1/keys", api.KeyRequest{Name: name, Scopes: []string{"infer", "read"}}, admin, &k); code != 201 {
			t.Fatalf("create key: %d", code)
		}
		return k, map[string]string{"Authorization": "Bearer " + k.Key}
	}
	alice, aliceH := mk("alice")
	_, bobH := mk("bob")

	const n = 4
	var want api.UsageRow
	want.KeyID, want.KeyName, want.Model, want.Requests = alice.ID, "alice", "demo", n
	for i := 0; i < n; i++ {
		base := []string{a, b}[i%2]
		var resp struct {
			Usage api.Usage `json:"usage"`
		}
		body := map[string]any{"model": "demo", "max_tokens": 3 + i,
			"messages": []map[string]string{{"role": "user", "content": strings.Repeat("tell me about bees ", i+1)}}}
		if code := doHeaders(t, "POST", base+"/v1/chat/completions", body, aliceH, &resp); code != 200 || resp.Usage.CompletionTokens != 3+i || resp.Usage.PromptTokens == 0 {
			t.Fatalf("request %d: %d %+v", i, code, resp)
		}
		want.PromptTokens += int64(resp.Usage.PromptTokens)
		want.CompletionTokens += int64(resp.Usage.CompletionTokens)
	}

	usage := func(base string, hdr map[string]string, query string) []api.UsageRow {
		t.Helper()
		var out api.UsageList
		if code := doHeaders(t, "GET", base+"/v1/usage"+query, nil, hdr, &out); code != 200 || out.Usage == nil {
			t.Fatalf("usage on %s: %d %+v", base, code, out)
		}
		return out.Usage
	}
	exact := func(rows []api.UsageRow) bool { return len(rows) == 1 && rows[0] == want }
	waitFor(t, 10*time.Second, func() bool { return exact(usage(a, aliceH, "")) })
	today := time.Now().UTC().Format(time.DateOnly)
	for _, check := range []struct {
		name, base string
		hdr        map[string]string
		query      string
	}{
		{"alice on b", b, aliceH, ""},
		{"admin on a, alice's key", a, admin, "?key=" + alice.ID},
		{"admin on b, model and dates", b, admin, "?model=demo&from=" + today + "&to=" + today},
		{"alice on a, Unix seconds", a, aliceH, fmt.Sprintf("?from=%d&to=%d", time.Now().Add(-time.Hour).Unix(), time.Now().Add(time.Hour).Unix())},
		{"alice on a, the model's alias", a, aliceH, "?model=gpt-4o-mini"},
	} {
		if rows := usage(check.base, check.hdr, check.query); !exact(rows) {
			t.Errorf("%s: %+v, want %+v", check.name, rows, want)
		}
	}
	if rows := usage(a, bobH, ""); len(rows) != 0 {
		t.Errorf("bob sees %+v", rows)
	}
	if rows := usage(a, aliceH, "?model=other"); len(rows) != 0 {
		t.Errorf("another model: %+v", rows)
	}
	if rows := usage(a, aliceH, "?to=2000-01-01"); len(rows) != 0 {
		t.Errorf("before any job: %+v", rows)
	}
	if code := doHeaders(t, "GET", a+"/v1/usage?key="+alice.ID, nil, bobH, nil); code != 403 {
		t.Errorf("bob reads alice's usage: %d", code)
	}
	if code := doHeaders(t, "GET", a+"/v1/usage?from=yesterday", nil, aliceH, nil); code != 400 {
		t.Errorf("bad from: %d", code)
	}

	// rbee usage prints the same rows.
	var out, errb bytes.Buffer
	env := map[string]string{"RBEE_QUEEN": b, "RBEE_TOKEN": alice.Key}
	row := fmt.Sprint(alice.ID, " alice demo ", n, " ", want.PromptTokens, " ", want.CompletionTokens)
	if code := cli.Run(context.Background(), []string{"usage"}, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb); code != 0 ||
		!strings.Contains(strings.Join(strings.Fields(out.String()), " "), row) {
		t.Errorf("rbee usage: exit %d\n%s%s", code, out.String(), errb.String())
	}

	// Kill queen b, start it again: nothing is lost or counted twice.
	_ = bcmd.Process.Kill()
	_ = bcmd.Wait()
	b, _ = queenProcess(t, ns.ClientURL(), "--admin-key", testAdminKey)
	for _, base := range []string{a, b} {
		if rows := usage(base, aliceH, ""); !exact(rows) {
			t.Errorf("after restart, on %s: %+v, want %+v", base, rows, want)
		}
	}

	// The token metric names the key, never its secret.
	resp, err := http.Get(a + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(metrics), `rbee_inference_tokens_total{direction="out",key="alice",model="demo"}`) || strings.Contains(string(metrics), alice.Key) {
		t.Errorf("token metric by key missing:\n%s", grepLines(string(metrics), "rbee_inference_tokens_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
