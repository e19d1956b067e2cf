package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

func TestMain(m *testing.M) {
	// Every stream's reconnect loop and watchdog must end with Stream.
	goleak.VerifyTestMain(m)
}

// newServer starts an httptest server for one test.
func newServer(tb testing.TB, h http.HandlerFunc) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func TestCreateJob(t *testing.T) {
	var got struct {
		method, path, auth, key, ctype string
		req                            api.JobRequest
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path = r.Method, r.URL.Path
		got.auth, got.key, got.ctype = r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key"), r.Header.Get("Content-Type")
		req, err := api.DecodeJobRequest(r.Body)
		if err != nil {
			writeJSON(w, 400, api.ErrorBody{Error: api.ErrorDetail{Code: api.CodeInvalidJSON, Message: err.Error()}})
			return
		}
		got.req = req
		writeJSON(w, 201, api.CreateJobResponse{JobID: "j1", StreamURL: "/v1/jobs/j1/stream", JobURL: "/v1/jobs/j1"})
	})
	c := client.New(srv.URL+"/", "s3cret", srv.Client())
	n := 5
	resp, err := c.CreateJob(t.Context(), api.JobRequest{Operation: api.OpHiveCheck, Hive: "h1", Payload: &api.HiveCheck{Events: &n}}, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	if resp.JobID != "j1" || resp.StreamURL != "/v1/jobs/j1/stream" {
		t.Errorf("response %+v", resp)
	}
	if got.method != "POST" || got.path != "/v1/jobs" {
		t.Errorf("request %s %s, want POST /v1/jobs", got.method, got.path)
	}
	if got.auth != "Bearer s3cret" || got.key != "key-1" || got.ctype != "application/json" {
		t.Errorf("headers auth=%q key=%q type=%q", got.auth, got.key, got.ctype)
	}
	if got.req.Operation != api.OpHiveCheck || got.req.Hive != "h1" || got.req.Payload.(*api.HiveCheck).Events == nil || *got.req.Payload.(*api.HiveCheck).Events != 5 {
		t.Errorf("body %+v", got.req)
	}
}

func TestNoTokenNoHeader(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header["Authorization"]; ok {
			t.Error("Authorization sent without a token")
		}
		writeJSON(w, 200, api.HiveList{Hives: []api.Hive{{ID: "h1", Slots: 2}}})
	})
	list, err := client.New(srv.URL, "", nil).ListHives(t.Context())
	if err != nil || len(list.Hives) != 1 || list.Hives[0].ID != "h1" {
		t.Fatalf("ListHives = %+v, %v", list, err)
	}
}

func TestRecordPaths(t *testing.T) {
	var paths []string
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.Method+" "+r.URL.EscapedPath()+"?"+r.URL.RawQuery)
		switch {
		case r.Method == "DELETE":
			writeJSON(w, 202, api.CancelResponse{JobID: "j/1", State: api.StateCancelling})
		case strings.HasPrefix(r.URL.Path, "/v1/hives/"):
			writeJSON(w, 200, api.Hive{ID: "h 1"})
		case r.URL.Path == "/v1/jobs":
			writeJSON(w, 200, api.JobList{Jobs: []api.Job{{JobID: "j2"}, {JobID: "j1"}}})
		default:
			writeJSON(w, 200, api.Job{JobID: "j/1", State: api.StateRunning})
		}
	})
	c := client.New(srv.URL, "", nil)
	ctx := t.Context()
	if j, err := c.GetJob(ctx, "j/1"); err != nil || j.State != api.StateRunning {
		t.Fatalf("GetJob = %+v, %v", j, err)
	}
	if r, err := c.CancelJob(ctx, "j/1"); err != nil || r.State != api.StateCancelling {
		t.Fatalf("CancelJob = %+v, %v", r, err)
	}
	if h, err := c.GetHive(ctx, "h 1"); err != nil || h.ID != "h 1" {
		t.Fatalf("GetHive = %+v, %v", h, err)
	}
	if l, err := c.ListJobs(ctx, client.JobFilter{}); err != nil || len(l.Jobs) != 2 {
		t.Fatalf("ListJobs = %+v, %v", l, err)
	}
	if _, err := c.ListJobs(ctx, client.JobFilter{State: "running", Operation: "run", Hive: "h1", Limit: 7}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"GET /v1/jobs/j%2F1?",
		"DELETE /v1/jobs/j%2F1?",
		"GET /v1/hives/h%201?",
		"GET /v1/jobs?",
		"GET /v1/jobs?hive=h1&limit=7&operation=run&state=running",
	}
	if strings.Join(paths, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(paths, "\n"), strings.Join(want, "\n"))
	}
}

func TestAPIError(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		body      string
		code, msg string
	}{
		{"json shape", 404, `{"error":{"code":"not_found","message":"job j9 not found"}}`, "not_found", "job j9 not found"},
		{"plain text", 502, "bad gateway\n", "", "queen answered 502: bad gateway"},
		{"empty body", 503, "", "", "queen answered 503 Service Unavailable"},
		{"json of another shape", 500, `{"oops":true}`, "", `queen answered 500: {"oops":true}`},
		{"long page", 500, strings.Repeat("é", 600), "", "queen answered 500: " + strings.Repeat("é", 256) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			_, err := client.New(srv.URL, "", nil).GetJob(t.Context(), "j9")
			var ae *client.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v (%T), want *APIError", err, err)
			}
			if ae.Status != tt.status || ae.Code != tt.code || ae.Error() != tt.msg {
				t.Errorf("got status=%d code=%q msg=%q, want %d %q %q", ae.Status, ae.Code, ae.Error(), tt.status, tt.code, tt.msg)
			}
			if !client.IsStatus(err, tt.status) || client.IsStatus(err, 200) {
				t.Error("IsStatus misreports")
			}
		})
	}
}

func TestTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	_, err := client.New(srv.URL, "", nil).ListJobs(context.Background(), client.JobFilter{})
	var ae *client.APIError
	if err == nil || errors.As(err, &ae) {
		t.Fatalf("err = %v, want a transport error", err)
	}
}
