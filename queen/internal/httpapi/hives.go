package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"rbee.dev/queen/internal/view"
	"rbee.dev/shared/api"
)

func (h *handlers) listHives(c echo.Context) error {
	return c.JSON(http.StatusOK, api.HiveList{Hives: h.View.Hives()})
}

func (h *handlers) getHive(c echo.Context) error {
	id := c.Param("id")
	hive, ok := h.View.Hive(id)
	if !ok {
		return notFound("hive %s is not online", clip(id))
	}
	return c.JSON(http.StatusOK, hive)
}

// gpuHistory answers with the samples of a live hive's GPUs that this
// queen kept from its heartbeats over the last view.GPUWindow.
func (h *handlers) gpuHistory(c echo.Context) error {
	id := c.Param("id")
	gpus, ok := h.View.GPUHistory(id)
	if !ok {
		return notFound("hive %s is not online", clip(id))
	}
	return c.JSON(http.StatusOK, api.GPUHistoryList{Hive: id, WindowS: view.GPUWindow.Seconds(), GPUs: gpus})
}

// sdGroup is one entry of Prometheus HTTP service discovery.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// metricsTargets lists every live hive that serves metrics, in Prometheus's
// HTTP service-discovery format, so hives are scraped as they join.
func (h *handlers) metricsTargets(c echo.Context) error {
	groups := []sdGroup{}
	for _, hv := range h.View.Hives() {
		if hv.MetricsAddr == "" {
			continue
		}
		groups = append(groups, sdGroup{Targets: []string{hv.MetricsAddr}, Labels: map[string]string{"hive": hv.ID}})
	}
	return c.JSON(http.StatusOK, groups)
}

func (h *handlers) metrics(c echo.Context) error {
	promhttp.HandlerFor(h.Metrics.Gatherer, promhttp.HandlerOpts{}).ServeHTTP(c.Response(), c.Request())
	return nil
}

func (h *handlers) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 once NATS is connected, the streams answer, the live
// tail runs and the cluster view is loaded.
func (h *handlers) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := h.Store.Ready(ctx); err != nil {
		return newError(http.StatusServiceUnavailable, api.CodeUnavailable, "not ready: %v", err)
	}
	select {
	case <-h.Hub.Ready():
	default:
		return newError(http.StatusServiceUnavailable, api.CodeUnavailable, "not ready: narration relay starting")
	}
	select {
	case <-h.View.Synced():
	default:
		return newError(http.StatusServiceUnavailable, api.CodeUnavailable, "not ready: loading cluster state")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
