package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/shared/api"
	"rbee.dev/shared/bus"
)

// usage answers GET /v1/usage[?from=&to=&model=&key=]: tokens per key and
// model from the cluster's usage ledger. Any key may read its own usage;
// admin reads every key's, or one key's with key=<id>.
func (h *handlers) usage(c echo.Context) error {
	var q jobs.UsageQuery
	var err error
	if q.From, err = usageTime(c.QueryParam("from"), false); err != nil {
		return badRequest("from: %v", err)
	}
	if q.To, err = usageTime(c.QueryParam("to"), true); err != nil {
		return badRequest("to: %v", err)
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return badRequest("from must be before to")
	}
	q.Model = c.QueryParam("model")
	if len(q.Model) > 256 {
		return badRequest("model is longer than 256 characters")
	}
	if q.Model != "" && h.OpenAI != nil {
		// Usage is counted under the model an alias names.
		q.Model = h.OpenAI.Resolve(q.Model)
	}
	p := principal(c)
	switch key := c.QueryParam("key"); {
	case !p.Has(api.ScopeAdmin):
		if key != "" && key != p.KeyID {
			return newError(http.StatusForbidden, api.CodeForbidden, "only an admin key may read another key's usage")
		}
		q.KeyID = p.KeyID
	case key != "" && !bus.ValidToken(key):
		return badRequest("key %q is not a valid key id", clip(key))
	default:
		q.KeyID = key
	}
	rows, err := h.Jobs.Usage(c.Request().Context(), q)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, api.UsageList{Usage: rows})
}

// usageTime reads an RFC 3339 time, a YYYY-MM-DD date (UTC) or Unix
// seconds, as OpenAI's usage API takes them. A date given as the end of a
// range includes that whole day.
func usageTime(v string, end bool) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 && s < 1<<40 {
		return time.Unix(s, 0).UTC(), nil
	}
	d, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, badRequest("%q is neither RFC 3339 (2006-01-02T15:04:05Z), a date (2006-01-02) nor Unix seconds", clip(v))
	}
	if end {
		d = d.AddDate(0, 0, 1)
	}
	return d, nil
}
