package openai_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/openai"
	"rbee.dev/shared/api"
)

// A detached generation keeps its key's place until it ends: a key with
// max_concurrent 1 cannot run three at once by dropping each connection.
func TestDetachedGenerationKeepsItsKeysPlace(t *testing.T) {
	p := auth.Principal{KeyID: "k1", Name: "ci", Scopes: []string{api.ScopeInfer}, Limits: api.KeyLimits{MaxConcurrent: 1}}
	e, parts := newAPI(t, p)
	var live []string
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		req := httptest.NewRequestWithContext(ctx, "POST", "/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"max_tokens":1000000,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set(echo.HeaderContentType, "application/json")
		req.Header.Set(openai.DetachHeader, "true")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		cancel()
		id := rec.Header().Get(openai.JobHeader)
		if id == "" {
			if i == 0 || rec.Code != 429 {
				t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
			}
			continue
		}
		j, _, err := parts.Store.GetJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if !api.Terminal(j.State) && j.State != api.StateCancelling {
			live = append(live, id+":"+j.State)
		}
	}
	if len(live) != 1 {
		t.Errorf("%d generations run at once for a key with max_concurrent 1", len(live))
	}
}
