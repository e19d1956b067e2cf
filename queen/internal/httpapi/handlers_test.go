package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/httpapi"
	"rbee.dev/queen/internal/openai"
	"rbee.dev/queen/internal/queentest"
	"rbee.dev/shared/api"
	"rbee.dev/shared/testkit"
)

const adminKey = "test-admin-key"

// newServer is the queen's HTTP API over parts with one online hive, h1.
// keyed makes every request need a key (the admin key works).
func newServer(t *testing.T, keyed bool) *echo.Echo {
	t.Helper()
	e, _ := serve(t, queentest.New(t, api.Hive{ID: "h1", Slots: 2, SlotsFree: 2, MetricsAddr: "10.0.0.1:9100"}), keyed)
	return e
}

// serve is the queen's HTTP API over p, and its keys.
func serve(t *testing.T, p *queentest.Parts, keyed bool) (*echo.Echo, *auth.Keys) {
	t.Helper()
	admin := ""
	if keyed {
		admin = adminKey
	}
	keys := auth.New(p.Store.KeysBucket(), admin, keyed, p.Log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = keys.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-keys.Synced()
	oai := openai.New(p.View, p.Jobs, p.Store, p.Hub, p.Metrics, openai.Config{QueueDepth: 4, SpawnTimeout: time.Second}, p.Log)
	return httpapi.New(httpapi.Deps{Store: p.Store, Jobs: p.Jobs, View: p.View, Hub: p.Hub, Metrics: p.Metrics, Keys: keys, OpenAI: oai,
		PublicHosts: []string{"queen.test"}, Log: p.Log}), keys
}

// call is one request; its answer is checked for status and error code.
type call struct {
	name     string
	method   string
	path     string
	body     string
	header   map[string]string
	want     int
	wantCode string // the error's code, for an error answer
}

func (c call) do(t *testing.T, e *echo.Echo) *httptest.ResponseRecorder {
	t.Helper()
	var req *http.Request
	if c.body != "" {
		req = httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		req.Header.Set(echo.HeaderContentType, "application/json")
	} else {
		req = httptest.NewRequest(c.method, c.path, nil)
	}
	req.Host = "queen.test"
	for k, v := range c.header {
		if k == "Host" {
			req.Host = v
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func (c call) check(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code != c.want {
		t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, rec.Code, c.want, rec.Body)
	}
	if c.wantCode == "" {
		return
	}
	var e api.ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code != c.wantCode || e.Error.Message == "" {
		t.Errorf("%s %s: error %s, want code %s and a message", c.method, c.path, rec.Body, c.wantCode)
	}
}

func run(t *testing.T, e *echo.Echo, calls []call) {
	t.Helper()
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) { c.check(t, c.do(t, e)) })
	}
}

func TestJobRequestsRefused(t *testing.T) {
	run(t, newServer(t, false), []call{
		{name: "body not JSON", method: "POST", path: "/v1/jobs", body: `{"operation":`, want: 400, wantCode: api.CodeInvalidJSON},
		{name: "unknown operation", method: "POST", path: "/v1/jobs", body: `{"operation":"mine_bitcoin"}`, want: 400, wantCode: api.CodeValidation},
		{name: "unknown field", method: "POST", path: "/v1/jobs", body: `{"operation":"hive_check","colour":"red"}`, want: 400, wantCode: api.CodeInvalidJSON},
		{name: "not sent as JSON", method: "POST", path: "/v1/jobs", body: `{"operation":"hive_check"}`,
			header: map[string]string{echo.HeaderContentType: "text/plain"}, want: 415, wantCode: api.CodeUnsupportedType},
		{name: "idempotency key not printable", method: "POST", path: "/v1/jobs", body: `{"operation":"hive_check"}`,
			header: map[string]string{"Idempotency-Key": "a b"}, want: 400, wantCode: api.CodeBadRequest},
		{name: "pinned to a hive that is not online", method: "POST", path: "/v1/jobs", body: `{"operation":"hive_check","hive":"h9","queue":false}`,
			want: 503, wantCode: api.CodeNoCapableHive},
		{name: "listing by an unknown state", method: "GET", path: "/v1/jobs?state=sleeping", want: 400, wantCode: api.CodeBadRequest},
		{name: "listing by an unknown operation", method: "GET", path: "/v1/jobs?operation=nope", want: 400, wantCode: api.CodeBadRequest},
		{name: "listing by an invalid hive id", method: "GET", path: "/v1/jobs?hive=a.b", want: 400, wantCode: api.CodeBadRequest},
		{name: "listing with a limit out of range", method: "GET", path: "/v1/jobs?limit=0", want: 400, wantCode: api.CodeBadRequest},
		{name: "an invalid job id", method: "GET", path: "/v1/jobs/a.b", want: 404, wantCode: api.CodeNotFound},
		{name: "an unknown job", method: "GET", path: "/v1/jobs/0123456789abcdef", want: 404, wantCode: api.CodeNotFound},
		{name: "cancelling an unknown job", method: "DELETE", path: "/v1/jobs/0123456789abcdef", want: 404, wantCode: api.CodeNotFound},
		{name: "streaming an unknown job", method: "GET", path: "/v1/jobs/0123456789abcdef/stream", want: 404, wantCode: api.CodeNotFound},
		{name: "a bad Last-Event-ID", method: "GET", path: "/v1/jobs/0123456789abcdef/stream", header: map[string]string{"Last-Event-ID": "x"}, want: 400, wantCode: api.CodeBadRequest},
		{name: "a wrong method", method: "PUT", path: "/v1/jobs", want: 405, wantCode: api.CodeMethodNotAllow},
		{name: "a host the queen does not answer for", method: "GET", path: "/healthz", header: map[string]string{"Host": "evil.test"}, want: 421},
	})
}

// A job's life through the API, without a hive to run it: created,
// listed, read, cancelled, and refused a second cancel.
func TestJobLifecycle(t *testing.T) {
	e := newServer(t, false)
	create := call{method: "POST", path: "/v1/jobs", body: `{"operation":"hive_check","hive":"h1"}`,
		header: map[string]string{"Idempotency-Key": "k1"}, want: 201}
	rec := create.do(t, e)
	create.check(t, rec)
	var created api.CreateJobResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &created); err != nil || created.JobID == "" ||
		created.JobURL != "/v1/jobs/"+created.JobID || created.StreamURL != created.JobURL+"/stream" || rec.Header().Get("Location") != created.JobURL {
		t.Fatalf("created %s, Location %q", rec.Body, rec.Header().Get("Location"))
	}
	again := create.do(t, e)
	if again.Code != 201 || again.Header().Get("Idempotent-Replayed") != "true" || !strings.Contains(again.Body.String(), created.JobID) {
		t.Errorf("repeat with the same Idempotency-Key: %d %s, replayed %q", again.Code, again.Body, again.Header().Get("Idempotent-Replayed"))
	}

	get := call{method: "GET", path: created.JobURL, want: 200}
	rec = get.do(t, e)
	get.check(t, rec)
	var j api.Job
	if err := json.Unmarshal(rec.Body.Bytes(), &j); err != nil || j.Hive != "h1" || j.State != api.StateDispatched {
		t.Errorf("job %s: want dispatched to h1", rec.Body)
	}
	list := call{method: "GET", path: "/v1/jobs?hive=h1&operation=hive_check", want: 200}
	// The listing reads the view, which follows the bucket.
	testkit.WaitFor(t, 5*time.Second, "the job in the listing", func() bool {
		rec = list.do(t, e)
		return rec.Code == 200 && strings.Contains(rec.Body.String(), created.JobID)
	})

	run(t, e, []call{
		{name: "cancel", method: "DELETE", path: created.JobURL, want: 202},
	})
	// No applier runs here: reading the job applies its stored end.
	if rec := get.do(t, e); !strings.Contains(rec.Body.String(), `"state":"cancelled"`) {
		t.Errorf("after cancel: %s", rec.Body)
	}
	run(t, e, []call{
		{name: "cancel again", method: "DELETE", path: created.JobURL, want: 409, wantCode: api.CodeConflict},
	})
}

func TestHiveRoutes(t *testing.T) {
	e := newServer(t, false)
	run(t, e, []call{
		{name: "health", method: "GET", path: "/healthz", want: 200},
		{name: "ready", method: "GET", path: "/readyz", want: 200},
		{name: "a hive that is online", method: "GET", path: "/v1/hives/h1", want: 200},
		{name: "a hive that is not", method: "GET", path: "/v1/hives/h9", want: 404, wantCode: api.CodeNotFound},
	})
	rec := call{method: "GET", path: "/v1/hives"}.do(t, e)
	var list api.HiveList
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list.Hives) != 1 || list.Hives[0].ID != "h1" {
		t.Errorf("hives: %s", rec.Body)
	}
	rec = call{method: "GET", path: "/v1/metrics/targets"}.do(t, e)
	if want := `[{"targets":["10.0.0.1:9100"],"labels":{"hive":"h1"}}]`; strings.TrimSpace(rec.Body.String()) != want {
		t.Errorf("metrics targets %s, want %s", rec.Body, want)
	}
}

func TestKeysRequired(t *testing.T) {
	e := newServer(t, true)
	bearer := func(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }
	run(t, e, []call{
		{name: "no key", method: "GET", path: "/v1/hives", want: 401, wantCode: api.CodeUnauthorized},
		{name: "a wrong key", method: "GET", path: "/v1/hives", header: bearer("nope"), want: 401, wantCode: api.CodeUnauthorized},
		{name: "the admin key", method: "GET", path: "/v1/hives", header: bearer(adminKey), want: 200},
		{name: "a job needs a key too", method: "POST", path: "/v1/jobs", body: `{"operation":"hive_check"}`, want: 401, wantCode: api.CodeUnauthorized},
		{name: "health needs none", method: "GET", path: "/healthz", want: 200},
		{name: "creating a key", method: "POST", path: "/v1/keys", body: `{"name":"ci","scopes":["read"]}`, header: bearer(adminKey), want: 201},
	})
}
