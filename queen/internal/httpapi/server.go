// Package httpapi is the queen's HTTP API: the jobs and hives endpoints, the
// SSE narration stream and the health checks, on echo v4.
package httpapi

import (
	"log/slog"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"rbee.dev/queen/internal/jobs"
	"rbee.dev/queen/internal/relay"
	"rbee.dev/queen/internal/store"
	"rbee.dev/queen/internal/view"
)

// maxBody is the largest request body accepted.
const maxBody = 1 << 20

// Deps are what the handlers need.
type Deps struct {
	Store *store.Store
	Jobs  *jobs.Service
	View  *view.View
	Hub   *relay.Hub
	Log   *slog.Logger
	// Heartbeat is the SSE comment interval.
	Heartbeat time.Duration
}

// New builds the echo server with every route.
func New(d Deps) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(d.Log)
	e.Use(middleware.Recover())
	e.Use(middleware.BodyLimit("1M"))
	if d.Heartbeat <= 0 {
		d.Heartbeat = 15 * time.Second
	}
	routes(e, &handlers{d})
	return e
}

type handlers struct{ Deps }
