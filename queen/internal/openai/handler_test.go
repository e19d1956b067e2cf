package openai_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/openai"
	"rbee.dev/queen/internal/queentest"
	"rbee.dev/shared/api"
)

// newAPI serves the OpenAI routes over parts with one hive, h1, that holds
// model llama and has a ready worker for qwen, which the alias gpt-4o-mini
// names. Requests act as p.
func newAPI(t *testing.T, p auth.Principal) (*echo.Echo, *queentest.Parts) {
	t.Helper()
	parts := queentest.New(t, api.Hive{ID: "h1", Slots: 2, SlotsFree: 2, InferSlots: 2,
		Models:  []api.Model{{ModelID: "llama"}, {ModelID: "qwen"}},
		Workers: []api.Worker{{WorkerID: "w1", ModelID: "qwen", State: api.WorkerReady, URL: "http://127.0.0.1:1"}},
	})
	a := openai.New(parts.View, parts.Jobs, parts.Store, parts.Hub, parts.Metrics, openai.Config{
		Backend: "reference", QueueDepth: 4, SpawnTimeout: time.Second, Aliases: map[string]string{"gpt-4o-mini": "qwen"},
	}, parts.Log)
	e := echo.New()
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.SetRequest(c.Request().WithContext(auth.NewContext(c.Request().Context(), p)))
			return next(c)
		}
	})
	e.GET("/v1/models", a.Models)
	e.GET("/v1/models/:id", a.Model)
	e.POST("/v1/chat/completions", a.Chat)
	return e, parts
}

var inferOnly = auth.Principal{KeyID: "k1", Name: "ci", Scopes: []string{api.ScopeInfer}}

func do(ctx context.Context, e *echo.Echo, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	req.Header.Set(echo.HeaderContentType, "application/json")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func TestModels(t *testing.T) {
	e, _ := newAPI(t, inferOnly)
	rec := do(context.Background(), e, "GET", "/v1/models", "")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || rec.Code != 200 || list.Object != "list" {
		t.Fatalf("models: %d %s", rec.Code, rec.Body)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	// Served or held models, each once, and an alias beside its model.
	if want := []string{"gpt-4o-mini", "llama", "qwen"}; !slices.Equal(ids, want) {
		t.Errorf("models %v, want %v", ids, want)
	}
	for _, tt := range []struct {
		id   string
		want int
	}{{"qwen", 200}, {"gpt-4o-mini", 200}, {"llama", 200}, {"mistral", 404}} {
		if rec := do(context.Background(), e, "GET", "/v1/models/"+tt.id, ""); rec.Code != tt.want {
			t.Errorf("GET /v1/models/%s: %d, want %d", tt.id, rec.Code, tt.want)
		}
	}
}

// Requests refused before any job exists answer in OpenAI's error shape.
func TestChatRefused(t *testing.T) {
	tests := []struct {
		name     string
		p        auth.Principal
		body     string
		want     int
		wantType string
		wantCode string
	}{
		{"not JSON", inferOnly, `{"model":`, 400, "invalid_request_error", "invalid_json"},
		{"no model", inferOnly, `{"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_request_error", "invalid_request"},
		{"a model no hive has", inferOnly, `{"model":"mistral","messages":[{"role":"user","content":"hi"}]}`, 404, "invalid_request_error", "model_not_found"},
		{"a download without the operate scope", inferOnly, `{"model":"mistral","download":"hf:org/repo","messages":[{"role":"user","content":"hi"}]}`,
			403, "invalid_request_error", api.CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newAPI(t, tt.p)
			rec := do(context.Background(), e, "POST", "/v1/chat/completions", tt.body)
			var b api.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || rec.Code != tt.want || b.Error.Type != tt.wantType || b.Error.Code != tt.wantCode {
				t.Errorf("%d %s; want %d with type %s, code %s", rec.Code, rec.Body, tt.want, tt.wantType, tt.wantCode)
			}
		})
	}
}

// A request for a served model, by its alias, becomes an infer job on the
// hive with its worker, whose body names the model; when the client leaves,
// the job is cancelled. The model's series exist from its first request.
func TestChatRunsAnInferJob(t *testing.T) {
	e, parts := newAPI(t, inferOnly)
	// No hive runs the job here, so the answer never comes: the client
	// gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	rec := do(ctx, e, "POST", "/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	id := rec.Header().Get(openai.JobHeader)
	if id == "" {
		t.Fatalf("no %s header: %d %s", openai.JobHeader, rec.Code, rec.Body)
	}
	j, _, err := parts.Store.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if j.Operation != api.OpInfer || j.Hive != "h1" || j.Request.Payload.(*api.Infer).Model != "qwen" || j.Request.Payload.(*api.Infer).Path != api.InferChat || j.Owner != "k1" {
		t.Errorf("job %+v: want an infer job for qwen on h1, owned by k1", j)
	}
	if j.State != api.StateCancelling && j.State != api.StateCancelled {
		t.Errorf("job state %s after the client left, want cancelling or cancelled", j.State)
	}

	fams, err := parts.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "rbee_inference_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["model"] == "qwen" {
				statuses[labels["status"]] = m.GetCounter().GetValue()
			}
		}
	}
	if len(statuses) != len(metrics.InferStatuses) || statuses["cancelled"] != 1 || statuses["ok"] != 0 {
		t.Errorf("qwen's request series %v: want every status, cancelled 1", statuses)
	}
}
