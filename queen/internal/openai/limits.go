package openai

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/limits"
	"rbee.dev/shared/api"
)

// admitKey admits the request under its key's limits. A refusal is
// answered as OpenAI answers one: 429, type "requests" (or "tokens" for
// the token limit), code "rate_limit_exceeded", and Retry-After in whole
// seconds, until the next minute or, for requests at once, one second.
// release must be called when the request ends.
func (a *API) admitKey(c echo.Context) (release func(), answered bool, err error) {
	p := auth.FromContext(c.Request().Context())
	release, err = a.limits.Admit(c.Request().Context(), p.KeyID, p.Limits)
	if err == nil {
		return release, false, nil
	}
	var le *limits.Error
	if errors.As(err, &le) {
		typ := "requests"
		if le.Limit == limits.TPM {
			typ = "tokens"
		}
		c.Response().Header().Set("Retry-After", strconv.Itoa(retrySeconds(le.RetryAfter)))
		return nil, true, fail(c, http.StatusTooManyRequests, typ, "rate_limit_exceeded", le.Error())
	}
	if errors.Is(err, context.Canceled) {
		return nil, true, nil
	}
	c.Response().Header().Set("Retry-After", "1")
	return nil, true, fail(c, http.StatusServiceUnavailable, "server_error", "no_capacity", "check rate limits: "+err.Error())
}

// retrySeconds rounds d up to whole seconds, at least one.
func retrySeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// countTokens adds a finished request's tokens to its key's minute, for a
// key with a token limit. The client may have left, so the count has its
// own deadline.
func (a *API) countTokens(c echo.Context, s *sink) {
	a.addTokens(auth.FromContext(c.Request().Context()), s.res.Usage)
}

// addTokens adds usage u to p's minute, for a key with a token limit.
func (a *API) addTokens(p auth.Principal, u api.Usage) {
	n := max(u.TotalTokens, u.PromptTokens+u.CompletionTokens)
	if p.Limits.TPM <= 0 || n <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.limits.AddTokens(ctx, p.KeyID, p.Limits, n); err != nil {
		a.log.Warn("count tokens", "key_id", p.KeyID, "err", err)
	}
}
