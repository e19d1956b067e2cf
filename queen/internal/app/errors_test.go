package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"rbee.dev/shared/api"
)

// Every bad request gets a 4xx JSON error naming the problem, and leaves no
// job behind.
func TestBadRequests(t *testing.T) {
	base, _ := cluster(t)
	huge := `{"operation":"run","hive":"h1","command":["` + strings.Repeat("a", 2<<20) + `"]}`
	cases := []struct {
		name, method, path, body, ct string
		status                       int
		code, mention                string
	}{
		{"unknown job", "GET", "/v1/jobs/nope", "", "", 404, api.CodeNotFound, "nope"},
		{"unknown job stream", "GET", "/v1/jobs/nope/stream", "", "", 404, api.CodeNotFound, "nope"},
		{"unknown job cancel", "DELETE", "/v1/jobs/nope", "", "", 404, api.CodeNotFound, "nope"},
		{"traversal id", "GET", "/v1/jobs/..%2f..%2fetc", "", "", 404, api.CodeNotFound, ""},
		{"unknown hive", "GET", "/v1/hives/ghost", "", "", 404, api.CodeNotFound, "ghost"},
		{"unknown route", "GET", "/v1/nothing", "", "", 404, api.CodeNotFound, "/v1/nothing"},
		{"wrong method", "PUT", "/v1/jobs", "{}", "", 405, api.CodeMethodNotAllow, "PUT"},
		{"empty body", "POST", "/v1/jobs", "", "", 400, api.CodeInvalidJSON, "empty"},
		{"malformed", "POST", "/v1/jobs", `{"operation":`, "", 400, api.CodeInvalidJSON, "JSON"},
		{"not an object", "POST", "/v1/jobs", `[1,2]`, "", 400, api.CodeInvalidJSON, "object"},
		{"two objects", "POST", "/v1/jobs", `{"operation":"status"}{}`, "", 400, api.CodeInvalidJSON, "exactly one"},
		{"unknown field", "POST", "/v1/jobs", `{"operation":"status","colour":"red"}`, "", 400, api.CodeInvalidJSON, "colour"},
		{"wrong type", "POST", "/v1/jobs", `{"operation":"hive_check","events":"ten"}`, "", 400, api.CodeInvalidJSON, "events"},
		{"missing operation", "POST", "/v1/jobs", `{}`, "", 400, api.CodeValidation, "operation is required"},
		{"unknown operation", "POST", "/v1/jobs", `{"operation":"launch_missiles"}`, "", 400, api.CodeValidation, "launch_missiles"},
		{"run without command", "POST", "/v1/jobs", `{"operation":"run","hive":"h1"}`, "", 400, api.CodeValidation, "command is required"},
		{"foreign field", "POST", "/v1/jobs", `{"operation":"hive_check","command":["ls"]}`, "", 400, api.CodeValidation, "command"},
		{"negative events", "POST", "/v1/jobs", `{"operation":"hive_check","events":-1}`, "", 400, api.CodeValidation, "events"},
		{"bad hive id", "POST", "/v1/jobs", `{"operation":"hive_check","hive":"../etc"}`, "", 400, api.CodeValidation, "hive"},
		{"offline hive, no queueing", "POST", "/v1/jobs", `{"operation":"hive_check","hive":"ghost","queue":false}`, "", 503, api.CodeNoCapableHive, "ghost"},
		{"xml", "POST", "/v1/jobs", `<job/>`, "application/xml", 415, api.CodeUnsupportedType, "application/json"},
		{"too large", "POST", "/v1/jobs", huge, "", 413, api.CodeTooLarge, "limit"},
		{"bad last event id", "GET", "/v1/jobs/x/stream?last_event_id=-1", "", "", 400, api.CodeBadRequest, "last_event_id"},
		{"bad state filter", "GET", "/v1/jobs?state=sleeping", "", "", 400, api.CodeBadRequest, "sleeping"},
		{"bad limit", "GET", "/v1/jobs?limit=0", "", "", 400, api.CodeBadRequest, "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			} else if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			var body api.ErrorBody
			if err := json.Unmarshal(data, &body); err != nil {
				t.Fatalf("not the JSON error shape: %d %q", resp.StatusCode, data)
			}
			if resp.StatusCode != tc.status || body.Error.Code != tc.code || !strings.Contains(body.Error.Message, tc.mention) {
				t.Fatalf("got %d %+v, want %d %s mentioning %q", resp.StatusCode, body.Error, tc.status, tc.code, tc.mention)
			}
		})
	}
	var list api.JobList
	do(t, "GET", base+"/v1/jobs", nil, &list)
	if len(list.Jobs) != 0 {
		t.Fatalf("bad requests left %d jobs", len(list.Jobs))
	}
	// An OpenAI endpoint the queen does not serve answers in OpenAI's
	// shape; rbee's own routes in rbee's.
	for path, typ := range map[string]string{"/v1/responses": "invalid_request_error", "/v1/jobs/x/y": ""} {
		var e map[string]map[string]any
		code := doHeaders(t, "POST", base+path, map[string]string{}, nil, &e)
		param, hasParam := e["error"]["param"]
		if code != 404 && code != 405 || typ != "" && (e["error"]["type"] != typ || !hasParam || param != nil) || typ == "" && (e["error"]["type"] != nil || hasParam) {
			t.Errorf("POST %s: %d %+v, want 404 with type %q and, in OpenAI's shape, param null", path, code, e, typ)
		}
	}
}
