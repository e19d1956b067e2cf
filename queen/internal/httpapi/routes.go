package httpapi

import (
	"strings"

	"github.com/labstack/echo/v4"

	"rbee.dev/queen/internal/webui"
	"rbee.dev/shared/api"
)

// routes is the one list of the queen's endpoints and the scope each needs.
func routes(e *echo.Echo, h *handlers) {
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	if h.MetricsAuth {
		e.GET("/metrics", h.metrics, h.authenticate, need(api.ScopeRead))
	} else {
		e.GET("/metrics", h.metrics)
	}

	// Middleware is attached per route, not to a group: an echo group with
	// middleware answers 404 instead of 405 for a wrong method.
	read := []echo.MiddlewareFunc{h.authenticate, need(api.ScopeRead)}
	admin := []echo.MiddlewareFunc{h.authenticate, need(api.ScopeAdmin)}
	infer := []echo.MiddlewareFunc{h.authenticate, need(api.ScopeInfer)}

	// POST /v1/jobs checks the scope its operation needs once it has read
	// the body.
	e.POST("/v1/jobs", h.createJob, h.authenticate)
	e.GET("/v1/jobs", h.listJobs, read...)
	e.GET("/v1/jobs/:id", h.getJob, read...)
	e.GET("/v1/queue", h.queue, read...)
	// A key with infer alone may cancel its own inference jobs.
	e.DELETE("/v1/jobs/:id", h.cancelJob, h.authenticate, needCancel)
	// A key with infer alone may follow its own inference jobs in their
	// OpenAI form (format=openai), to reattach a detached stream.
	e.GET("/v1/jobs/:id/stream", h.streamJob, h.authenticate, needStream)
	e.GET("/v1/hives", h.listHives, read...)
	e.GET("/v1/hives/:id", h.getHive, read...)
	e.GET("/v1/hives/:id/gpu-history", h.gpuHistory, read...)
	e.GET("/v1/metrics/targets", h.metricsTargets, read...)
	// Every key may read its own usage; admin reads all of it.
	e.GET("/v1/usage", h.usage, h.authenticate)
	e.POST("/v1/keys", h.createKey, admin...)
	e.GET("/v1/keys", h.listKeys, admin...)
	e.DELETE("/v1/keys/:id", h.revokeKey, admin...)

	// OpenAI-compatible API; OpenAI's error shape, see openAIRoute.
	e.GET("/v1/models", h.OpenAI.Models, infer...)
	e.GET("/v1/models/:id", h.OpenAI.Model, infer...)
	e.POST("/v1/chat/completions", h.OpenAI.Chat, infer...)
	e.POST("/v1/completions", h.OpenAI.Completions, infer...)
	e.POST("/v1/embeddings", h.OpenAI.Embeddings, infer...)
	e.POST("/v1/rerank", h.OpenAI.Rerank, infer...)

	// The browser UI: static files that call the routes above.
	webui.Register(e)
}

// openAIRoute reports whether a path is the OpenAI-compatible API's, whose
// errors carry OpenAI's "type" as well: its routes, and any /v1/ path that
// is none of rbee's own, so that an SDK calling an endpoint the queen does
// not serve reads the 404 as its own.
func openAIRoute(path string) bool {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return false
	}
	first, _, _ := strings.Cut(rest, "/")
	switch first {
	case "jobs", "queue", "hives", "metrics", "usage", "keys":
		return false
	}
	return true
}
