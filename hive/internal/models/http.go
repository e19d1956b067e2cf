package models

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// get sends the request, resuming at offset when meta allows it, and
// reports the sha256 the hub gives for an hf: file (Hugging Face answers
// the resolve URL of an LFS file with X-Linked-Etag before redirecting to
// its storage, so the header is caught on the redirect).
func (c *Catalog) get(ctx context.Context, src source, offset int64, meta partMeta) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.url, nil)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrSource, err)
	}
	if src.hf {
		// net/http drops this header when a redirect leaves the hub's
		// domain, so the storage a file lives on never sees the token.
		c.authorize(req)
	}
	// Byte counts must be of the file itself, for progress and resume, so
	// no transparent compression.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		req.Header.Set("If-Range", meta.validator())
	}
	var hubSHA string
	note := func(h http.Header) {
		if !src.hf || hubSHA != "" {
			return
		}
		for _, k := range []string{"X-Linked-Etag", "ETag"} {
			if s := etagSHA(h.Get(k)); s != "" {
				hubSHA = s
				return
			}
		}
	}
	client := *c.opts.Client
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if r.Response != nil {
			note(r.Response.Header)
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, "", context.Cause(ctx)
		}
		return nil, "", &transient{fmt.Errorf("GET %s: %w", src.display, unwrapURLError(err))}
	}
	note(resp.Header)
	return resp, hubSHA, nil
}

// statusError explains an HTTP status that ends a download.
func (c *Catalog) statusError(resp *http.Response, src source) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusNotFound:
		return fmt.Errorf("%w: %s not found (HTTP 404 from %s)", ErrSource, sourceName(src), resp.Request.URL.Host)
	case (code == http.StatusUnauthorized || code == http.StatusForbidden) && src.hf:
		return fmt.Errorf("%w: access to %s denied (HTTP %d); set HF_TOKEN on the hive for a private or gated repo", ErrSource, sourceName(src), code)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("%w: access to %s denied (HTTP %d)", ErrSource, sourceName(src), code)
	case code == http.StatusTooManyRequests || code >= 500:
		return &transient{fmt.Errorf("GET %s: HTTP %d", src.display, code)}
	}
	return fmt.Errorf("GET %s: unexpected HTTP %d", src.display, code)
}

func sourceName(src source) string {
	if src.hf {
		return src.canonical
	}
	return src.display
}

// parseContentRange reads "bytes <start>-<end>/<size>".
func parseContentRange(s string) (start, size int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	size = -1
	if sz != "*" {
		if size, err = strconv.ParseInt(sz, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, size, true
}

// etagSHA returns the sha256 an ETag names, or "" when it is not one.
func etagSHA(etag string) string {
	s := strings.ToLower(strings.Trim(strings.TrimPrefix(etag, "W/"), `"`))
	if isSHA256(s) {
		return s
	}
	return ""
}

// defaultClient has no overall timeout, since a model may take hours, but
// gives up on a server that stops answering. It connects to no link-local
// address, whatever name or redirect leads there (refuseLinkLocal).
func defaultClient() *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: refuseLinkLocal}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          16,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr}
}

// refuseLinkLocal stops a connection to a link-local address before it is
// made: cloud machines answer their credentials there (169.254.169.254), and
// a download source is an operate key's to choose, not an admin's. It checks
// the address being dialled, so no DNS name or redirect gets around it; a
// proxy from the environment is dialled instead, and decides for itself.
func refuseLinkLocal(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err == nil && (ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast()) {
		return fmt.Errorf("%s: a link-local address, where cloud metadata and its credentials are served; models are not downloaded from there", host)
	}
	return nil
}
