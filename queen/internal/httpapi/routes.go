package httpapi

import (
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the one list of the queen's endpoints.
func routes(e *echo.Echo, h *handlers) {
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(h.Metrics.Registry, promhttp.HandlerOpts{})))

	v1 := e.Group("/v1")
	v1.POST("/jobs", h.createJob)
	v1.GET("/jobs", h.listJobs)
	v1.GET("/jobs/:id", h.getJob)
	v1.DELETE("/jobs/:id", h.cancelJob)
	v1.GET("/jobs/:id/stream", h.streamJob)
	v1.GET("/hives", h.listHives)
	v1.GET("/hives/:id", h.getHive)
}
