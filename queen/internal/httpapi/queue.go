package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"rbee.dev/shared/api"
)

// queue answers GET /v1/queue: every model's inference queue over the
// cluster. A key without admin sees where each request stands, but the
// ids and owners of its own requests only.
func (h *handlers) queue(c echo.Context) error {
	qs, err := h.View.InferQueues(c.Request().Context())
	if err != nil {
		return err
	}
	if p := principal(c); !p.Has(api.ScopeAdmin) {
		for _, q := range qs {
			for i, w := range q.Waiting {
				if w.Owner != p.KeyID || w.Owner == "" {
					q.Waiting[i] = api.QueuedJob{Position: w.Position, Priority: w.Priority, CreatedAt: w.CreatedAt}
				}
			}
		}
	}
	return c.JSON(http.StatusOK, api.QueueList{Queues: qs})
}
