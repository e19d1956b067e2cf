// Package webui is the queen's console: plain HTML, CSS and JavaScript
// embedded in the binary, one page per URL fragment (cluster, models and
// workers, playground, jobs and queue, keys and usage). It uses the same
// HTTP API as every other client, with the API key the user types in once
// (kept in the browser's local storage), so it needs no routes or rights of
// its own; its GPU charts read GET /v1/hives/<id>/gpu-history. It loads
// nothing from elsewhere and stays under 200 KB (see the package's test).
package webui

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/labstack/echo/v4"
)

//go:embed static
var files embed.FS

// csp keeps the page to its own scripts and styles and the queen's API.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Register serves the UI under /ui/ and sends / there.
func Register(e *echo.Echo) {
	static, _ := fs.Sub(files, "static")
	h := http.StripPrefix("/ui/", http.FileServer(http.FS(static)))
	serve := func(c echo.Context) error {
		hd := c.Response().Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(c.Response(), c.Request())
		return nil
	}
	e.GET("/ui/*", serve)
	e.GET("/ui", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/ui/") })
	e.GET("/", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/ui/") })
}
