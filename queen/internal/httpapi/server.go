// Package httpapi is the queen's HTTP API: the jobs and hives endpoints, the
// SSE narration stream and the health checks, on echo v4.
package httpapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"rbee.dev/queen/internal/auth"
	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/metrics"
	"rbee.dev/queen/internal/openai"
	"rbee.dev/queen/internal/relay"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
)

// maxBody is the largest request body accepted.
const maxBody = 1 << 20

// Deps are what the handlers need.
type Deps struct {
	Store   *store.Store
	Jobs    *jobs.Service
	View    *view.View
	Hub     *relay.Hub
	Metrics *metrics.Queen
	Keys    *auth.Keys
	OpenAI  *openai.API
	// PublicHosts are the names, besides localhost and IP addresses, that
	// clients may use in the Host header.
	PublicHosts []string
	// MetricsAuth makes /metrics need a key with the read scope.
	MetricsAuth bool
	Log         *slog.Logger
	// Heartbeat is the SSE comment interval.
	Heartbeat time.Duration
	// JobMaxNarrationBytes refuses jobs known at submit to narrate more;
	// 0 is no budget.
	JobMaxNarrationBytes int64
}

// New builds the echo server with every route.
func New(d Deps) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(d.Log)
	e.Use(instrument(d.Metrics))
	e.Use(middleware.Recover())
	e.Use(guard(d.PublicHosts))
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", maxBody)))
	if d.Heartbeat <= 0 {
		d.Heartbeat = 15 * time.Second
	}
	routes(e, &handlers{Deps: d, taken: newTakenOver()})
	return e
}

type handlers struct {
	Deps
	// taken are the streams served on connections taken over from the
	// HTTP server (takeover.go).
	taken *takenOver
}

// instrument counts every request by its route template (never the raw
// path, which holds job ids) and its final status.
func instrument(m *metrics.Queen) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			method := methodLabel(c.Request().Method)
			m.HTTPRequests.WithLabelValues(route, method, strconv.Itoa(c.Response().Status)).Inc()
			if s, ok := c.Get(takenKey).(*takenStream); ok {
				// A stream served on its taken-over connection is timed
				// until it ends (serveTaken), not until the handoff.
				s.start.Store(start.UnixNano())
				return nil
			}
			m.HTTPDuration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}

// methodLabel is the method as a metric label: a client may send any token
// as a method, and each distinct one would be a series kept for good.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}
