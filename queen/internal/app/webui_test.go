package app_test

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"rbee.dev/queen/internal/app"
)

// The browser UI is served by the queen without a key (it holds no data),
// under a strict content security policy, and every API path its script
// calls is a route the queen answers with the key and refuses without it.
func TestWebUI(t *testing.T) {
	ns := mustNATS(t)
	base, _ := mustQueen(t, ns.ClientURL(), func(c *app.Config) { c.AdminKey = testAdminKey })

	get := func(path, key string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	resp, page := get("/", "")
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/ui/" || !strings.Contains(page, "<title>rbee</title>") {
		t.Fatalf("/: %d at %s\n%.200s", resp.StatusCode, resp.Request.URL.Path, page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	for _, asset := range []string{"app.js", "app.css"} {
		if !strings.Contains(page, `"`+asset+`"`) {
			t.Fatalf("index.html does not load %s", asset)
		}
	}
	resp, css := get("/ui/app.css", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || css == "" {
		t.Fatalf("app.css: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, js := get("/ui/app.js", "")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("app.js: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if strings.Contains(page, "<script>") || regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Fatal("index.html has inline script, which the CSP blocks")
	}

	// The GET paths the script builds, with ids filled in.
	paths := regexp.MustCompile(`"(/v1/[a-z/]+)[?"]`).FindAllStringSubmatch(js, -1)
	if len(paths) < 2 {
		t.Fatalf("found only %v in app.js", paths)
	}
	for _, m := range paths {
		p := m[1]
		if p == "/v1/jobs/" { // completed with an id and a method in the script
			continue
		}
		if r, _ := get(p, testAdminKey); r.StatusCode != 200 {
			t.Errorf("GET %s with the key: %d", p, r.StatusCode)
		}
		if r, _ := get(p, ""); r.StatusCode != 401 {
			t.Errorf("GET %s without a key: %d, want 401", p, r.StatusCode)
		}
	}
	if resp, _ := get("/ui/nothing.js", ""); resp.StatusCode != 404 {
		t.Fatalf("missing asset: %d", resp.StatusCode)
	}
}
