package app_test

import (
	"time"

	"testing"

	"rbee.dev/queen/internal/app"
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
		return map[string]string{"Authorization": "Bearer " + k.Key}
	}
	alice, bob := mk("alice", "read", "operate"), mk("bob", "read", "operate")

	var created api.CreateJobResponse
	if code := doHeaders(t, "POST", a+"/v1/jobs", api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Events: intp(1)}, alice, &created); code != 201 {
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
	if code := doHeaders(t, "GET", a+"/v1/jobs/"+id, nil, admin, nil); code != 200 {
		t.Fatalf("admin reads: %d", code)
	}
	if code := doHeaders(t, "DELETE", a+"/v1/jobs/"+id, nil, admin, nil); code == 404 || code == 403 {
		t.Fatalf("admin cancels: %d", code)
	}
}
