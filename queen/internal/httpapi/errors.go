package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/shared/api"
)

// apiError is an error with the status and code it is answered with.
type apiError struct {
	status int
	code   string
	msg    string
	// retryAfter, when set, is sent as the Retry-After header.
	retryAfter string
}

func (e *apiError) Error() string { return e.msg }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, api.CodeBadRequest, format, args...)
}

func notFound(format string, args ...any) *apiError {
	return newError(http.StatusNotFound, api.CodeNotFound, format, args...)
}

// jobNotFound answers for a job no queen knows.
func jobNotFound(id string) *apiError {
	return notFound("job %s not found: it never existed or is past the cluster's retention", id)
}

// serviceError maps the job service's sentinel errors to answers.
func serviceError(err error, id string) error {
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return jobNotFound(id)
	case errors.Is(err, jobs.ErrTerminal):
		return newError(http.StatusConflict, api.CodeConflict, "job %s already ended", id)
	case errors.Is(err, jobs.ErrIdempotencyMismatch):
		return newError(http.StatusConflict, api.CodeConflict, "Idempotency-Key was already used for a different request; use a new key for a new job")
	case errors.Is(err, jobs.ErrIdempotencyPending):
		return &apiError{status: http.StatusConflict, code: api.CodeConflict, retryAfter: "1",
			msg: "a request with this Idempotency-Key is still creating its job; retry in a moment"}
	case errors.Is(err, jobs.ErrQueueFull):
		return &apiError{status: http.StatusTooManyRequests, code: api.CodeQueueFull, retryAfter: "1", msg: err.Error()}
	case errors.Is(err, jobs.ErrNoCapableHive):
		return newError(http.StatusServiceUnavailable, api.CodeNoCapableHive, "%s", err.Error())
	case errors.Is(err, jobs.ErrTooLarge):
		return newError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "the job is too large for the cluster's NATS server: %s", err.Error())
	case errors.Is(err, jobs.ErrUnavailable):
		return &apiError{status: http.StatusServiceUnavailable, code: api.CodeUnavailable, retryAfter: "2",
			msg: "the cluster's NATS did not answer in time; try again"}
	}
	return err
}

// echoCodes names the errors echo itself raises (routing, body limit).
var echoCodes = map[int]string{
	http.StatusBadRequest:            api.CodeBadRequest,
	http.StatusUnauthorized:          api.CodeUnauthorized,
	http.StatusForbidden:             api.CodeForbidden,
	http.StatusNotFound:              api.CodeNotFound,
	http.StatusMethodNotAllowed:      api.CodeMethodNotAllow,
	http.StatusRequestEntityTooLarge: api.CodeTooLarge,
	http.StatusUnsupportedMediaType:  api.CodeUnsupportedType,
	http.StatusServiceUnavailable:    api.CodeUnavailable,
}

// errorHandler is the one place errors become the JSON error shape. Server
// errors are logged here and nowhere else; their details stay in the log.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var ae *apiError
		var he *echo.HTTPError
		switch {
		case errors.As(err, &ae):
		case errors.As(err, &he):
			code, ok := echoCodes[he.Code]
			if !ok {
				code = api.CodeInternal
			}
			msg := http.StatusText(he.Code)
			switch he.Code {
			case http.StatusNotFound:
				msg = fmt.Sprintf("no route for %s %s", clip(c.Request().Method), clip(c.Request().URL.Path))
			case http.StatusMethodNotAllowed:
				msg = fmt.Sprintf("method %s is not allowed on %s", clip(c.Request().Method), clip(c.Request().URL.Path))
			case http.StatusRequestEntityTooLarge:
				msg = fmt.Sprintf("request body is larger than the limit of %d bytes", maxBody)
			}
			ae = &apiError{status: he.Code, code: code, msg: msg}
		default:
			ae = &apiError{status: http.StatusInternalServerError, code: api.CodeInternal, msg: "internal error; see the queen's log"}
		}
		if ae.status >= 500 {
			log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "status", ae.status, "err", err)
		}
		if ae.retryAfter != "" {
			c.Response().Header().Set("Retry-After", ae.retryAfter)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(ae.status)
			return
		}
		body := api.ErrorBody{Error: api.ErrorDetail{Code: ae.code, Message: ae.msg}}
		if openAIRoute(c.Request().URL.Path) {
			typ := "invalid_request_error"
			if ae.status >= 500 {
				typ = "server_error"
			}
			body = api.OpenAIError(typ, ae.code, ae.msg)
		}
		_ = c.JSON(ae.status, body)
	}
}
