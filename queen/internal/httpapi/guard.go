package httpapi

import (
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"rbee.dev/shared/api"
)

// guard keeps browsers on other sites from driving the queen. A queen on
// loopback without keys trusts whoever reaches it, and a web page the user
// visits can reach it too: with a "simple" cross-site request (no CORS
// preflight: a form post or a text/plain fetch), or by DNS rebinding, where
// an attacker's name resolves to 127.0.0.1 and the page becomes same-origin
// with the queen. So, before authentication:
//
//   - the Host must be an IP literal, localhost or a --public-host name:
//     rebinding needs a name of the attacker's;
//   - a request that says it comes from a page (Origin, Sec-Fetch-Site) must
//     come from the queen's own origin, the web UI; a top-level navigation,
//     such as following a link to the UI, is let through, since it can
//     change nothing and its answer stays in the tab;
//   - a body must be JSON, which a browser sends cross-site only after a
//     preflight the queen never answers.
//
// Programs (the CLI, curl, SDKs, Prometheus) send no Origin and no
// Sec-Fetch-Site, so this costs them nothing.
func guard(publicHosts []string) echo.MiddlewareFunc {
	allowed := map[string]bool{"localhost": true}
	for _, h := range publicHosts {
		allowed[strings.ToLower(h)] = true
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			host := hostName(r.Host)
			if net.ParseIP(host) == nil && !allowed[host] {
				return newError(http.StatusMisdirectedRequest, api.CodeMisdirected,
					"this queen does not answer for host %q; start it with --public-host %s to allow that name", clip(host), clip(host))
			}
			if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r.Host) {
				return newError(http.StatusForbidden, api.CodeForbidden,
					"cross-origin request from %q refused: only the queen's own web UI may call it from a browser", clip(origin))
			}
			switch r.Header.Get("Sec-Fetch-Site") {
			case "cross-site", "same-site":
				if r.Header.Get("Sec-Fetch-Mode") != "navigate" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
					return newError(http.StatusForbidden, api.CodeForbidden, "cross-site request refused: only the queen's own web UI may call it from a browser")
				}
			}
			if hasBody(r) {
				switch r.Method {
				case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
					if ct := r.Header.Get(echo.HeaderContentType); !isJSON(ct) {
						return newError(http.StatusUnsupportedMediaType, api.CodeUnsupportedType,
							"request body must be sent with Content-Type: application/json, not %q", clip(ct))
					}
				}
			}
			return next(c)
		}
	}
}

// hostName is the lower-cased name or address of a Host header, without
// its port or an IPv6 literal's brackets.
func hostName(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
}

// sameOrigin reports whether a browser's Origin names the host and port the
// request was sent to, which the Host check above has vetted. "null" (a
// sandboxed frame, a file) is never the queen.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false
	}
	return strings.EqualFold(withPort(u.Host, u.Scheme), withPort(host, u.Scheme))
}

// withPort adds the scheme's default port to a host that lacks one.
func withPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if scheme == "https" {
		return net.JoinHostPort(strings.Trim(host, "[]"), "443")
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), "80")
}

// hasBody reports whether a request carries a body: a length, or chunks.
func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
}

// isJSON accepts application/json and the +json types, with parameters.
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == echo.MIMEApplicationJSON || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}
