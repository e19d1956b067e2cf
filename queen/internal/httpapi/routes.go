package httpapi

import (
	"github.com/labstack/echo/v4"

	"rbee.dev/shared/api"
)

// routes is the one list of the queen's endpoints.
func routes(e *echo.Echo, h *handlers) {
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	if h.MetricsAuth {
		e.GET("/metrics", h.metrics, h.authenticate, need(api.ScopeRead))
	} else {
		e.GET("/metrics", h.metrics)
	}

	v1 := e.Group("/v1", h.authenticate)
	// POST /v1/jobs checks the scope its operation needs once it has read
	// the body.
	v1.POST("/jobs", h.createJob)
	v1.GET("/jobs", h.listJobs, need(api.ScopeRead))
	v1.GET("/jobs/:id", h.getJob, need(api.ScopeRead))
	v1.DELETE("/jobs/:id", h.cancelJob, need(api.ScopeOperate))
	v1.GET("/jobs/:id/stream", h.streamJob, need(api.ScopeRead))
	v1.GET("/hives", h.listHives, need(api.ScopeRead))
	v1.GET("/hives/:id", h.getHive, need(api.ScopeRead))
	v1.GET("/metrics/targets", h.metricsTargets, need(api.ScopeRead))
	v1.POST("/keys", h.createKey, need(api.ScopeAdmin))
	v1.GET("/keys", h.listKeys, need(api.ScopeAdmin))
	v1.DELETE("/keys/:id", h.revokeKey, need(api.ScopeAdmin))
}
