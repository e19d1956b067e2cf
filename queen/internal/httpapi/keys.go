package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/shared/api"
)

// authenticate reads the bearer key. With auth enabled a request without a
// valid key is refused; with it off (loopback, no keys) every request acts
// as admin. The principal goes into the request's context, where need and
// handlers in other packages find it (auth.FromContext).
func (h *handlers) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !h.Keys.Enabled() {
			setPrincipal(c, auth.Principal{KeyID: "open", Name: "open", Scopes: []string{api.ScopeAdmin}})
			return next(c)
		}
		hdr := c.Request().Header.Get(echo.HeaderAuthorization)
		// The scheme's name is case-insensitive (RFC 9110, 11.1).
		scheme, token, _ := strings.Cut(hdr, " ")
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="rbee"`)
			return newError(http.StatusUnauthorized, api.CodeUnauthorized, "an API key is required: send Authorization: Bearer <key>")
		}
		p, ok := h.Keys.Authenticate(token)
		if !ok {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="rbee", error="invalid_token"`)
			return newError(http.StatusUnauthorized, api.CodeUnauthorized, "the API key is not valid or was revoked")
		}
		setPrincipal(c, p)
		return next(c)
	}
}

func setPrincipal(c echo.Context, p auth.Principal) {
	c.SetRequest(c.Request().WithContext(auth.NewContext(c.Request().Context(), p)))
}

// need makes a route require a scope.
func need(scope string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := authorize(c, scope); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// principal is who the request acts as, set by authenticate.
// needStream is need(ScopeRead), except that ScopeInfer will do for the
// OpenAI form of a stream: ownership is checked by the handler, as for
// every key without admin.
func needStream(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		scope := api.ScopeRead
		if c.QueryParam("format") == "openai" && !principal(c).Has(scope) {
			scope = api.ScopeInfer
		}
		if err := authorize(c, scope); err != nil {
			return err
		}
		return next(c)
	}
}

// needCancel lets a key cancel with operate, or with infer alone: such a
// key makes only inference jobs, and cancelJob lets a key without admin
// cancel only its own.
func needCancel(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		scope := api.ScopeOperate
		if !principal(c).Has(scope) && principal(c).Has(api.ScopeInfer) {
			scope = api.ScopeInfer
		}
		if err := authorize(c, scope); err != nil {
			return err
		}
		return next(c)
	}
}

func principal(c echo.Context) auth.Principal {
	return auth.FromContext(c.Request().Context())
}

func authorize(c echo.Context, scope string) error {
	if p := principal(c); !p.Has(scope) {
		return newError(http.StatusForbidden, api.CodeForbidden, "this API key lacks the %s scope", scope)
	}
	return nil
}

func (h *handlers) createKey(c echo.Context) error {
	var req api.KeyRequest
	if err := api.DecodeBody(c.Request().Body, &req); err != nil {
		return newError(http.StatusBadRequest, api.CodeInvalidJSON, "%s", err.Error())
	}
	if err := req.Validate(); err != nil {
		return newError(http.StatusBadRequest, api.CodeValidation, "%s", err.Error())
	}
	k, err := h.Keys.Create(c.Request().Context(), req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, k)
}

func (h *handlers) listKeys(c echo.Context) error {
	return c.JSON(http.StatusOK, api.KeyList{Keys: h.Keys.List()})
}

func (h *handlers) revokeKey(c echo.Context) error {
	id := c.Param("id")
	err := h.Keys.Revoke(c.Request().Context(), id)
	if errors.Is(err, auth.ErrNotFound) {
		return notFound("key %s not found", clip(id))
	}
	if err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
