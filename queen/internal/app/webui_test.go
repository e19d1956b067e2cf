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
	for _, asset := range []string{"app.js", "core.js", "app.css"} {
		if !strings.Contains(page, `"`+asset+`"`) {
			t.Fatalf("index.html does not load %s", asset)
		}
	}
	resp, css := get("/ui/app.css", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || css == "" {
		t.Fatalf("app.css: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if strings.Contains(page, "<script>") || regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Fatal("index.html has inline script, which the CSP blocks")
	}
	var js strings.Builder
	for _, m := range regexp.MustCompile(`<script src="([a-z]+\.js)"`).FindAllStringSubmatch(page, -1) {
		resp, body := get("/ui/"+m[1], "")
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
			t.Fatalf("%s: %d %q", m[1], resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		js.WriteString(body)
	}

	// The GET paths the scripts build, with ids filled in. The playground
	// posts to chat completions, a route GET does not answer.
	paths := regexp.MustCompile(`"(/v1/[a-z/]+)[?"]`).FindAllStringSubmatch(js.String(), -1)
	if len(paths) < 5 {
		t.Fatalf("found only %v in the scripts", paths)
	}
	seen := map[string]bool{}
	for _, m := range paths {
		p := m[1]
		if seen[p] || strings.HasSuffix(p, "/") || p == "/v1/chat/completions" { // completed with an id, or POST only
			continue
		}
		seen[p] = true
		if r, _ := get(p, testAdminKey); r.StatusCode != 200 {
			t.Errorf("GET %s with the key: %d", p, r.StatusCode)
		}
		if r, _ := get(p, ""); r.StatusCode != 401 {
			t.Errorf("GET %s without a key: %d, want 401", p, r.StatusCode)
		}
	}
	for _, p := range []string{"/v1/hives", "/v1/jobs", "/v1/models", "/v1/keys", "/v1/usage"} {
		if !seen[p] {
			t.Errorf("the console never reads %s", p)
		}
	}
	if resp, _ := get("/ui/nothing.js", ""); resp.StatusCode != 404 {
		t.Fatalf("missing asset: %d", resp.StatusCode)
	}
}
